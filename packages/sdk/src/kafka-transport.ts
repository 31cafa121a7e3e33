import { randomUUID } from 'node:crypto';
import { CompressionTypes, Partitioners, type Kafka, type Message, type PartitionerArgs, type PartitionMetadata, type Producer } from 'kafkajs';
import type { Schema } from 'avsc';
import { createRegistry, readAvroString, registerAvro } from '@dlog/contracts';
import { createKafka } from '@dlog/kafka';
import type { Logger } from '@dlog/runtime';
import { messageOf } from './safe-error.js';
import type { OutMessage, Transport } from './transport.js';

export interface KafkaTransportOptions {
  brokers: string[];
  registryUrl: string;
  clientId: string;
  log: Logger;
  compression: 'none' | 'gzip';
  /** How long one send may take, kafkajs retries included, before the logger sees a failure. */
  requestTimeoutMs: number;
  /** The kafkajs client to use instead of one made from `brokers` (tests). */
  kafka?: Kafka;
}

const compressionCodes = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP } as const;

/**
 * A send that spanned brokers failed after some of them may have written their part: kafkajs
 * keeps the sequence numbers it advanced for those partitions, so resending them in this session
 * would write them again. The logger starts a new session and reads the topic back (sessionLost).
 */
export class PartlyWrittenError extends Error {
  readonly sessionLost = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PartlyWrittenError';
  }
}

/** Which send() a message handed to kafkajs belongs to: its partitioner reports the leaders it used. */
const sendOf = Symbol('dlog.send');
interface SendCall {
  leaders: Set<number>;
}
type Tagged = Message & { [sendOf]?: SendCall };

/** Per metadata snapshot (kafkajs keeps one array per topic until it refreshes): leader of each partition. */
interface Leaders {
  of: Map<number, number>;
  distinct: number;
}

/**
 * kafkajs producer, idempotent with acks=-1: the broker drops a batch it already has when the same
 * producer session resends it, so retrying an unacknowledged batch after a timeout or a broker
 * restart leaves no duplicate. kafkajs keeps one request in flight per broker for an idempotent
 * producer; the logger sends one batch at a time to match.
 *
 * One kafkajs send() that spans brokers can fail after some of them wrote their part: kafkajs
 * advanced those partitions' sequence numbers and remembers that only within the one call, so the
 * logger's retry wrote them again. A batch is therefore sent as one call per partition leader (the
 * leaders kafkajs last used for the topic): a call that fails touched one broker and wrote nothing
 * that its retry does not resend with the same sequence numbers, and the calls that succeeded are
 * kept out of the retry. With one broker, or every partition on one leader, that is one call, as
 * before. Should a failed call have spanned brokers after all (leadership moved under it, which
 * the partitioner shows), its outcome is unknown: PartlyWrittenError.
 */
export function kafkaTransport(opts: KafkaTransportOptions): Transport {
  const registry = createRegistry(opts.registryUrl);
  let kafka: Kafka | undefined = opts.kafka;
  let producer: Producer | undefined;
  let connected = false;
  /** After disconnect(): a send or connect would open a new producer behind close()'s back. */
  let closed = false;
  const closedError = (): Error => new Error('the Kafka transport is closed');
  /** Read-backs under way, ended by disconnect() (one could run for 10 request timeouts). */
  const readBacks = new Set<AbortController>();

  const partitioner = Partitioners.DefaultPartitioner();
  const lastMetadata = new Map<string, PartitionMetadata[]>();
  const leadersOf = new WeakMap<PartitionMetadata[], Leaders>();
  const leaders = (meta: PartitionMetadata[]): Leaders => {
    let l = leadersOf.get(meta);
    if (!l) {
      const of = new Map(meta.map((m) => [m.partitionId, m.leader]));
      l = { of, distinct: new Set(of.values()).size };
      leadersOf.set(meta, l);
    }
    return l;
  };
  // kafkajs's own partitioner, watched: it is given the metadata kafkajs then groups the
  // messages by, so it tells which leaders one call used.
  const watchingPartitioner = () => (args: PartitionerArgs): number => {
    const partition = partitioner(args);
    lastMetadata.set(args.topic, args.partitionMetadata);
    (args.message as Tagged)[sendOf]?.leaders.add(leaders(args.partitionMetadata).of.get(partition) ?? -1);
    return partition;
  };
  /** Messages of a batch whose call succeeded while another call of it failed: not sent again. */
  const landed = new WeakSet<Buffer>();
  let someLanded = false;

  const newProducer = (): Producer => {
    kafka ??= sdkKafka(opts);
    return kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // A few quick retries inside kafkajs; the logger retries the same batch after that, with
      // backoff, for as long as it takes (the batch is never changed, so sequence numbers match).
      retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 2_000 },
      createPartitioner: watchingPartitioner,
    });
  };

  // One connect at a time: two concurrent producer.connect() calls (the event sender and the
  // environment publisher both start by connecting) each run InitProducerId, and the second one
  // resets the sequence numbers and broker locks under a send in flight. kafkajs then fails a send
  // the broker had accepted, and the retry under the new producer id writes that batch twice.
  let connecting: Promise<void> | undefined;
  const connectOnce = (): Promise<void> => {
    if (closed) return Promise.reject(closedError());
    connecting ??= (async () => {
      try {
        const p = (producer ??= newProducer());
        await p.connect();
        if (closed) {
          // Disconnected meanwhile: this producer's sockets would keep the host alive.
          await p.disconnect().catch(() => undefined);
          throw closedError();
        }
        connected = true;
      } finally {
        connecting = undefined;
      }
    })();
    return connecting;
  };

  /** One call per leader kafkajs last used for the topic; one call when that is one broker or unknown. */
  const byLeader = (topic: string, messages: OutMessage[]): OutMessage[][] => {
    const meta = lastMetadata.get(topic);
    if (!meta || meta.length === 0) return [messages];
    const l = leaders(meta);
    if (l.distinct <= 1) return [messages];
    const groups = new Map<number, OutMessage[]>();
    for (const m of messages) {
      const leader = l.of.get(partitioner({ topic, partitionMetadata: meta, message: m })) ?? -1;
      let g = groups.get(leader);
      if (!g) groups.set(leader, (g = []));
      g.push(m);
    }
    return [...groups.values()];
  };

  const sendCall = async (p: Producer, topic: string, messages: OutMessage[]): Promise<void> => {
    const call: SendCall = { leaders: new Set() };
    try {
      await p.send({
        topic,
        messages: messages.map((m): Tagged => ({ key: m.key, value: m.value, [sendOf]: call })),
        acks: -1,
        timeout: opts.requestTimeoutMs,
        compression: compressionCodes[opts.compression],
      });
    } catch (err) {
      if (call.leaders.size > 1) {
        throw new PartlyWrittenError(`a send to ${topic} over ${call.leaders.size} brokers failed, and some may have written their part: ${messageOf(err)}`, { cause: err });
      }
      throw err;
    }
  };

  return {
    connect: connectOnce,
    register(subject: string, schema: Schema) {
      return registerAvro(registry, opts.registryUrl, subject, schema);
    },
    async send(topic: string, messages: OutMessage[]) {
      if (closed) throw closedError();
      if (!producer || !connected) await connectOnce();
      const p = producer;
      if (closed || !p) throw closedError();
      const todo = someLanded ? messages.filter((m) => !landed.has(m.value)) : messages;
      if (todo.length === 0) return;
      const groups = byLeader(topic, todo);
      if (groups.length === 1) {
        await sendCall(p, topic, todo);
        return;
      }
      const results = await Promise.allSettled(groups.map((g) => sendCall(p, topic, g)));
      const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      if (failures.length === 0) return;
      groups.forEach((g, i) => {
        if (results[i]!.status !== 'fulfilled') return;
        for (const m of g) landed.add(m.value);
        someLanded = true;
      });
      throw failures.find((e) => e instanceof PartlyWrittenError) ?? failures[0];
    },
    written(topic, sinceMs, eventIds) {
      if (closed) return Promise.reject(closedError());
      kafka ??= sdkKafka(opts);
      const abort = new AbortController();
      readBacks.add(abort);
      return readBack(kafka, opts.requestTimeoutMs, topic, sinceMs, eventIds, abort.signal).finally(() => readBacks.delete(abort));
    },
    delivered(value: Buffer) {
      return landed.has(value);
    },
    async reset() {
      const old = producer;
      producer = undefined;
      connected = false;
      await old?.disconnect().catch(() => undefined);
    },
    async disconnect() {
      closed = true;
      connected = false;
      for (const a of readBacks) a.abort();
      const p = producer;
      producer = undefined;
      await p?.disconnect();
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
export async function readBack(kafka: Kafka, requestTimeoutMs: number, topic: string, sinceMs: number, eventIds: ReadonlySet<string>, signal?: AbortSignal): Promise<Set<string>> {
  const aborted = (): Error => new Error(`reading back ${topic} was abandoned: the transport was closed`);
  if (signal?.aborted) throw aborted();
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
  if (signal?.aborted) throw aborted();
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
    let onAbort: (() => void) | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`reading back ${topic} took longer than ${requestTimeoutMs * 10} ms`)), requestTimeoutMs * 10);
      onAbort = () => reject(aborted());
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([finished, timedOut]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  } finally {
    await consumer.disconnect().catch(() => undefined);
  }
  return found;
}
