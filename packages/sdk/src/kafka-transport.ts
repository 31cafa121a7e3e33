import { randomUUID } from 'node:crypto';
import { CompressionTypes, type Kafka, type Producer } from 'kafkajs';
import type { Schema } from 'avsc';
import { createRegistry, readAvroString, registerAvro } from '@dlog/contracts';
import { createKafka } from '@dlog/kafka';
import type { Logger } from '@dlog/runtime';
import type { OutMessage, Transport } from './transport.js';

export interface KafkaTransportOptions {
  brokers: string[];
  registryUrl: string;
  clientId: string;
  log: Logger;
  compression: 'none' | 'gzip';
  /** How long one send may take, kafkajs retries included, before the logger sees a failure. */
  requestTimeoutMs: number;
}

const compressionCodes = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP } as const;

/**
 * kafkajs producer, idempotent with acks=-1: the broker drops a batch it already has when the same
 * producer session resends it, so retrying an unacknowledged batch after a timeout or a broker
 * restart leaves no duplicate. kafkajs keeps one request in flight per broker for an idempotent
 * producer; the logger sends one batch at a time to match.
 */
export function kafkaTransport(opts: KafkaTransportOptions): Transport {
  const registry = createRegistry(opts.registryUrl);
  let kafka: Kafka | undefined;
  let producer: Producer | undefined;
  let connected = false;

  const newProducer = (): Producer => {
    kafka ??= sdkKafka(opts);
    return kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // A few quick retries inside kafkajs; the logger retries the same batch after that, with
      // backoff, for as long as it takes (the batch is never changed, so sequence numbers match).
      retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 2_000 },
    });
  };

  // One connect at a time: two concurrent producer.connect() calls (the event sender and the
  // environment publisher both start by connecting) each run InitProducerId, and the second one
  // resets the sequence numbers and broker locks under a send in flight. kafkajs then fails a send
  // the broker had accepted, and the retry under the new producer id writes that batch twice.
  let connecting: Promise<void> | undefined;
  const connectOnce = (): Promise<void> => {
    connecting ??= (async () => {
      try {
        producer ??= newProducer();
        await producer.connect();
        connected = true;
      } finally {
        connecting = undefined;
      }
    })();
    return connecting;
  };

  return {
    connect: connectOnce,
    register(subject: string, schema: Schema) {
      return registerAvro(registry, opts.registryUrl, subject, schema);
    },
    async send(topic: string, messages: OutMessage[]) {
      if (!producer || !connected) await connectOnce();
      await producer!.send({
        topic,
        messages,
        acks: -1,
        timeout: opts.requestTimeoutMs,
        compression: compressionCodes[opts.compression],
      });
    },
    written(topic, sinceMs, eventIds) {
      kafka ??= sdkKafka(opts);
      return readBack(kafka, opts.requestTimeoutMs, topic, sinceMs, eventIds);
    },
    async reset() {
      const old = producer;
      producer = undefined;
      connected = false;
      await old?.disconnect().catch(() => undefined);
    },
    async disconnect() {
      connected = false;
      await producer?.disconnect();
    },
  };
}

/** The SDK's kafkajs client: quick to give up on a connection, a few retries within a send. */
export function sdkKafka(opts: KafkaTransportOptions): Kafka {
  return createKafka({ brokers: opts.brokers, clientId: opts.clientId, log: opts.log, connectionTimeoutMs: 3_000, requestTimeoutMs: opts.requestTimeoutMs, retries: 3 });
}

/** The first field of a framed Avro record when it is a string (event_id in the contract). */
export function leadingString(value: Buffer | null): string | undefined {
  if (!value || value.length < 6 || value[0] !== 0) return undefined;
  try {
    return readAvroString(value, 5)[0];
  } catch {
    return undefined;
  }
}

/**
 * Which of `eventIds` are in `topic` among records written at or after `sinceMs` (see
 * Transport.written): reads each partition from that time up to its end now, in a throwaway
 * consumer group that commits nothing.
 */
export async function readBack(kafka: Kafka, requestTimeoutMs: number, topic: string, sinceMs: number, eventIds: ReadonlySet<string>): Promise<Set<string>> {
  const found = new Set<string>();
  const admin = kafka.admin();
  await admin.connect();
  let ranges: { partition: number; from: bigint; to: bigint }[];
  try {
    const [from, to] = await Promise.all([admin.fetchTopicOffsetsByTimestamp(topic, sinceMs), admin.fetchTopicOffsets(topic)]);
    const high = new Map(to.map((o) => [o.partition, BigInt(o.high)]));
    ranges = from.map((o) => ({ partition: o.partition, from: BigInt(o.offset), to: high.get(o.partition) ?? 0n })).filter((r) => r.from >= 0n && r.from < r.to);
  } finally {
    await admin.disconnect();
  }
  if (ranges.length === 0) return found;
  // A throwaway group that commits nothing: reads each partition from the time the batch
  // was first sent up to its end now.
  const consumer = kafka.consumer({ groupId: `dlog-sdk-check-${randomUUID()}`, maxWaitTimeInMs: 200 });
  const open = new Map(ranges.map((r) => [r.partition, r]));
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const r = open.get(batch.partition);
        if (!r) return;
        for (const m of batch.messages) {
          if (BigInt(m.offset) >= r.to) break;
          const id = leadingString(m.value);
          if (id !== undefined && eventIds.has(id)) found.add(id);
        }
        if (BigInt(batch.lastOffset()) + 1n >= r.to) open.delete(batch.partition);
        if (open.size === 0) done();
      },
    });
    for (const r of ranges) consumer.seek({ topic, partition: r.partition, offset: r.from.toString() });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`reading back ${topic} took longer than ${requestTimeoutMs * 10} ms`)), requestTimeoutMs * 10);
    });
    try {
      await Promise.race([finished, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await consumer.disconnect().catch(() => undefined);
  }
  return found;
}
