import { CompressionTypes, type Kafka, type Producer } from 'kafkajs';
import type { Schema } from 'avsc';
import { createRegistry, registerAvro } from '@dlog/contracts';
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
    kafka ??= createKafka({
      brokers: opts.brokers,
      clientId: opts.clientId,
      log: opts.log,
      connectionTimeoutMs: 3_000,
      requestTimeoutMs: opts.requestTimeoutMs,
      retries: 3,
    });
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
