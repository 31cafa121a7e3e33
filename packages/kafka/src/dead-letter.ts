import type { IHeaders, Message } from 'kafkajs';

export interface DeadLetterFailure {
  /** Stable reason code: alerting keys on it. */
  reason: string;
  /** Human message. */
  message: string;
  /** Which step refused it (decode, validate, protect, enrich, insert ...). */
  step: string;
}

/**
 * The one dead-letter format of the pipeline: the original key, value and headers untouched, plus
 * `dlog.*` headers with the reason and where the record was read. `worker` names the stage that
 * wrote it (`dlog.<worker>.ts`).
 */
export function deadLetterMessage(
  original: { key: Buffer | string | null; value: Buffer | null; offset: string; headers?: Record<string, unknown> | undefined },
  source: { topic: string; partition: number },
  failure: DeadLetterFailure,
  worker: string,
  now = Date.now(),
): Message {
  const headers: IHeaders = {};
  for (const [k, v] of Object.entries(original.headers ?? {})) if (v !== undefined) headers[k] = v as IHeaders[string];
  headers['dlog.reason'] = failure.reason;
  headers['dlog.message'] = failure.message.slice(0, 1000);
  headers['dlog.step'] = failure.step;
  headers['dlog.source.topic'] = source.topic;
  headers['dlog.source.partition'] = String(source.partition);
  headers['dlog.source.offset'] = original.offset;
  headers[`dlog.${worker}.ts`] = String(now);
  return { key: original.key, value: original.value, headers };
}

/** A worker's topic names under DLOG_TOPIC_PREFIX, with explicit overrides (tests) winning. */
export function prefixedTopics<T extends { [K in keyof T]: string }>(defaults: T, prefix: string, overrides: Partial<T> = {}): T {
  const out = {} as T;
  for (const k of Object.keys(defaults) as (keyof T)[]) out[k] = (overrides[k] ?? `${prefix}${defaults[k]}`) as T[keyof T];
  return out;
}
