import { Kafka, logLevel as KafkaLogLevel, type KafkaConfig, type LogEntry } from 'kafkajs';
import type { Logger } from 'pino';

export interface KafkaClientOptions {
  brokers: string[];
  clientId: string;
  log: Logger;
  /** How long to keep retrying a broker connection before an operation fails. */
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
  retries?: number;
}

const levelNames: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [KafkaLogLevel.ERROR]: 'error',
  [KafkaLogLevel.WARN]: 'warn',
  [KafkaLogLevel.INFO]: 'info',
  [KafkaLogLevel.DEBUG]: 'debug',
};

/** Routes kafkajs's own logging into our structured logger, one level lower: it is chatty. */
function logCreator(log: Logger) {
  const child = log.child({ component: 'kafkajs' });
  return () => (entry: LogEntry) => {
    const { message, ...rest } = entry.log;
    const level = levelNames[entry.level] ?? 'info';
    // Rebalances and reconnects are routine; they are warnings only when they persist.
    // Finite retries on an idempotent producer are deliberate: a transaction that cannot be sent
    // is aborted and its batch redone, so kafkajs's warning about them is noise here.
    if (message.startsWith('Limiting retries for the idempotent producer')) return;
    // The broker answers CONCURRENT_TRANSACTIONS while it finishes the previous transaction's
    // markers; kafkajs retries it at once. Routine under load, so not an error.
    if (/concurrent operation on the same transaction|CONCURRENT_TRANSACTIONS/.test(message) || /concurrent operation on the same transaction/.test(String(rest.error ?? ''))) {
      child.debug({ ...rest, namespace: entry.namespace }, message);
      return;
    }
    const effective = level === 'info' ? 'debug' : level === 'error' && /rebalanc|reconnect|Connection error/i.test(message) ? 'warn' : level;
    child[effective]({ ...rest, namespace: entry.namespace }, message);
  };
}

// Our producers all use the default (murmur2, Java-compatible) partitioner, so the notice about
// the kafkajs 2.0 change does not apply.
process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';

export function createKafka(opts: KafkaClientOptions): Kafka {
  const config: KafkaConfig = {
    clientId: opts.clientId,
    brokers: opts.brokers,
    connectionTimeout: opts.connectionTimeoutMs ?? 5_000,
    requestTimeout: opts.requestTimeoutMs ?? 30_000,
    retry: { retries: opts.retries ?? 8, initialRetryTime: 200, maxRetryTime: 10_000 },
    logLevel: KafkaLogLevel.INFO,
    logCreator: logCreator(opts.log),
  };
  return new Kafka(config);
}
