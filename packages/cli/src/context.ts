import { loadConfig, type Config } from '@dlog/config';
import { createKafka } from '@dlog/kafka';
import { createLogger, type Logger } from '@dlog/runtime';
import type { Kafka } from 'kafkajs';
import pino from 'pino';

export interface CliContext {
  config: Config;
  log: Logger;
  /**
   * For client libraries (kafkajs): silent unless LOG_LEVEL asks. Their retries and connection
   * warnings, with stacks, buried the one line the command prints when it fails.
   */
  libraryLog: Logger;
}

/** The CLI keeps stdout for answers; its structured log goes to stderr, quiet unless LOG_LEVEL asks. */
export function cliContext(): CliContext {
  const config = loadConfig();
  // Empty counts as unset, as in the config (a `LOG_LEVEL=` line in an env file).
  const level = process.env.LOG_LEVEL || 'warn';
  const log = createLogger({ name: 'dlog', level, destination: pino.destination({ dest: 2, sync: true }) });
  return { config, log, libraryLog: libraryLogOf(log) };
}

/** `log` for a client library: silent unless LOG_LEVEL asks. */
export function libraryLogOf(log: Logger): Logger {
  return process.env.LOG_LEVEL ? log : log.child({}, { level: 'silent' });
}

/**
 * Kafka for a one-shot command: a person is waiting, so a broker that is not there fails the
 * command in seconds (a short connection timeout, two retries) instead of after the workers'
 * half-minute budget, and the failure is reported once, by main, with what to check.
 */
export function cliKafka(ctx: Pick<CliContext, 'config' | 'libraryLog'>, clientIdSuffix = '-cli'): Kafka {
  return createKafka({
    brokers: ctx.config.kafkaBrokers,
    clientId: `${ctx.config.kafkaClientId}${clientIdSuffix}`,
    log: ctx.libraryLog,
    connectionTimeoutMs: 3_000,
    retries: 2,
  });
}

const kafkaConnectionErrors = new Set(['KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSBrokerNotFound', 'KafkaJSRequestTimeoutError']);

/**
 * The message for a command that failed because no Kafka broker answered (kafkajs wraps the
 * connection error in retry errors), or undefined when the failure is something else.
 */
export function kafkaUnavailableMessage(err: unknown, brokers: readonly string[]): string | undefined {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (kafkaConnectionErrors.has((e as Error).name)) {
      return (
        `Cannot reach Kafka at ${brokers.join(',')} (KAFKA_BROKERS): ${(e as Error).message}. ` +
        'Check KAFKA_BROKERS, and that the local stack runs: npm run dlog -- stack status (start it with npm run dlog -- stack up).'
      );
    }
  }
  return undefined;
}
