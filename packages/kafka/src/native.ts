import { createRequire } from 'node:module';
import type * as RdKafka from 'node-rdkafka';
import type { Logger } from 'pino';

/**
 * librdkafka through node-rdkafka, when it is installed. It is an optional dependency: it builds
 * from source at install time (node-gyp needs Node's headers), and where that fails the workers
 * run on kafkajs, correct but about three times slower per message (see README).
 */
export type NativeKafka = typeof RdKafka;

export type KafkaClientKind = 'auto' | 'native' | 'kafkajs';

let loaded: { mod?: NativeKafka; error?: unknown } | undefined;

export function loadNativeKafka(): NativeKafka | undefined {
  if (!loaded) {
    try {
      loaded = { mod: createRequire(import.meta.url)('node-rdkafka') as NativeKafka };
    } catch (error) {
      loaded = { error };
    }
  }
  return loaded.mod;
}

/** Why the native client could not load, for the message that says we fall back. */
export function nativeKafkaLoadError(): string | undefined {
  loadNativeKafka();
  const e = loaded?.error;
  return e === undefined ? undefined : e instanceof Error ? e.message : String(e);
}

/**
 * Resolves the configured client kind: `native` insists (and fails with the reason when the
 * module is missing), `auto` takes native when it loads, `kafkajs` never does.
 */
export function pickNativeKafka(kind: KafkaClientKind): NativeKafka | undefined {
  if (kind === 'kafkajs') return undefined;
  const mod = loadNativeKafka();
  if (!mod && kind === 'native') {
    throw new Error(
      `DLOG_KAFKA_CLIENT=native but node-rdkafka does not load (${nativeKafkaLoadError()}). ` +
        'Install it with Node headers available (e.g. `npm_config_nodedir=/usr npm install`), or set DLOG_KAFKA_CLIENT=auto.',
    );
  }
  return mod;
}

/** The `native` option of a transactional processor for the configured client kind. */
export function nativeClientFor(
  kind: KafkaClientKind,
  brokers: string[],
  clientId: string,
  log?: Logger,
): { kafka: NativeKafka; brokers: string[]; clientId: string } | undefined {
  const kafka = pickNativeKafka(kind);
  if (!kafka && kind === 'auto' && !warned) {
    warned = true;
    log?.warn(
      { reason: nativeKafkaLoadError() },
      'node-rdkafka is not installed: running on kafkajs, which costs several times more CPU per message. See README, "Native Kafka client".',
    );
  }
  return kafka ? { kafka, brokers, clientId } : undefined;
}

let warned = false;
