import { isUtf8 } from 'node:buffer';
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
 * The largest record (key, value and headers) the workers write: librdkafka's default
 * message.max.bytes, under the broker's default limit of 1,048,588 for a batch. A larger one is
 * refused by the client or the broker, which fails the whole transaction, and the batch read again
 * fails the same way for ever: nothing behind it on its partition is processed again.
 */
export const MAX_RECORD_BYTES = 1_000_000;

/**
 * What a record comes to on the wire, rounded up: its key and value; each header's name and
 * value, the name again for every value of a repeated header (an array here); 10 bytes of varints
 * a header; and 64 for the record's own (librdkafka reserves 36 for it against message.max.bytes).
 * Counting a repeated header's name once let a producer's 5,000 copies of one header carry a dead
 * letter past the limit, and an exact 1,000,000 let records librdkafka refuses through.
 */
export function recordBytes(m: Pick<Message, 'key' | 'value' | 'headers'>): number {
  let n = 64;
  if (m.key !== null && m.key !== undefined) n += typeof m.key === 'string' ? Buffer.byteLength(m.key) : m.key.length;
  if (m.value !== null && m.value !== undefined) n += typeof m.value === 'string' ? Buffer.byteLength(m.value) : m.value.length;
  for (const [k, v] of Object.entries(m.headers ?? {})) {
    const name = Buffer.byteLength(k);
    for (const x of Array.isArray(v) ? v : [v]) {
      n += name + 10;
      if (x !== undefined && x !== null) n += typeof x === 'string' ? Buffer.byteLength(x) : x.length;
    }
  }
  return n;
}

/**
 * Original headers whose values a dead letter cannot carry as they are, moved into this one
 * header as JSON: `{ name: [base64 | null, ...] }`, every value of such a name in order. librdkafka
 * (node-rdkafka) writes each header value as a UTF-8 string: bytes that are not UTF-8 came out as
 * U+FFFD, cut at a zero byte; a null value came out as '' on librdkafka and stopped kafkajs, which
 * cannot send one (the gate's loop, and the sink's dead-letter sends, failed on it for good).
 * `dlog dlq replay` puts them back (a null as an empty value: kafkajs sends none).
 */
export const ENCODED_HEADERS = 'dlog.encoded_headers';

type HeaderValue = Buffer | string | null | undefined;

/** Whether every Kafka client writes the value as it is. */
function carriedAsIs(v: HeaderValue): boolean {
  if (v === null || v === undefined) return false;
  if (typeof v === 'string') return !v.includes('\u0000') && (v as unknown as { isWellFormed(): boolean }).isWellFormed();
  return !v.includes(0) && isUtf8(v);
}

/** The original headers as a dead letter carries them (see ENCODED_HEADERS). */
function letterHeaders(original: Record<string, unknown> | undefined): IHeaders {
  const headers: IHeaders = {};
  let encoded: Record<string, (string | null)[]> | undefined;
  for (const [k, v] of Object.entries(original ?? {})) {
    // A producer's own header of that name would be read back as ours (and fail as JSON).
    if (v === undefined || k === ENCODED_HEADERS) continue;
    const values = (Array.isArray(v) ? v : [v]) as HeaderValue[];
    if (values.every(carriedAsIs)) {
      headers[k] = v as IHeaders[string];
      continue;
    }
    encoded ??= {};
    encoded[k] = values.map((x) => (x === null || x === undefined ? null : (typeof x === 'string' ? Buffer.from(x) : x).toString('base64')));
  }
  if (encoded) headers[ENCODED_HEADERS] = JSON.stringify(encoded);
  return headers;
}

/** Headers of a dead letter back as the original had them (a null as an empty value). */
export function originalHeaders(letter: IHeaders | undefined): IHeaders {
  const headers: IHeaders = {};
  for (const [k, v] of Object.entries(letter ?? {})) {
    if (k.startsWith('dlog.') || v === undefined) continue;
    // A letter written before ENCODED_HEADERS may hold a null, which kafkajs cannot send.
    headers[k] = Array.isArray(v) ? v.map((x) => x ?? Buffer.alloc(0)) : (v ?? Buffer.alloc(0));
  }
  const raw = letter?.[ENCODED_HEADERS];
  const text = raw === undefined ? undefined : (Array.isArray(raw) ? raw[0] : raw)?.toString();
  let encoded: Record<string, (string | null)[]> = {};
  try {
    if (text) encoded = JSON.parse(text) as Record<string, (string | null)[]>;
  } catch {
    // Not ours (a letter written before a producer's header of this name was left out): nothing to restore.
  }
  for (const [k, values] of Object.entries(encoded)) {
    // Like the plain ones: dlog.* headers are the pipeline's, not the original's.
    if (k.startsWith('dlog.') || !Array.isArray(values)) continue;
    const bytes = values.map((b) => (typeof b === 'string' ? Buffer.from(b, 'base64') : Buffer.alloc(0)));
    headers[k] = bytes.length === 1 ? bytes[0] : bytes;
  }
  return headers;
}

/**
 * The one dead-letter format of the pipeline: the original key, value and headers untouched (those
 * no client carries as they are in ENCODED_HEADERS), plus
 * `dlog.*` headers with the reason and where the record was read. `worker` names the stage that
 * wrote it (`dlog.<worker>.ts`).
 *
 * An original too large for a record (a producer can compress a 3 MB event into
 * `inference.raw`; the gate refuses it as too large, and a dead letter of it would be refused in
 * turn) goes without its value, and then without its own headers if need be: `dlog.value_dropped`
 * says so, and the source topic, partition and offset say where the original still is.
 */
export function deadLetterMessage(
  original: { key: Buffer | string | null; value: Buffer | null; offset: string; timestamp?: string | undefined; headers?: Record<string, unknown> | undefined },
  source: { topic: string; partition: number },
  failure: DeadLetterFailure,
  worker: string,
  now = Date.now(),
): Message {
  const headers = letterHeaders(original.headers);
  headers['dlog.reason'] = failure.reason;
  headers['dlog.message'] = failure.message.slice(0, 1000);
  headers['dlog.step'] = failure.step;
  headers['dlog.source.topic'] = source.topic;
  headers['dlog.source.partition'] = String(source.partition);
  headers['dlog.source.offset'] = original.offset;
  // The original record's time: the gate checks an event's ts against it, so a replay
  // (`dlog dlq replay`) writes it back with this time instead of the time it was replayed.
  if (original.timestamp !== undefined && /^\d+$/.test(original.timestamp)) headers['dlog.source.timestamp'] = original.timestamp;
  headers[`dlog.${worker}.ts`] = String(now);
  const letter: Message = { key: original.key, value: original.value, headers };
  const size = recordBytes(letter);
  if (size <= MAX_RECORD_BYTES) return letter;
  const valueBytes = original.value?.length ?? 0;
  letter.value = null;
  if (recordBytes(letter) > MAX_RECORD_BYTES - 200) {
    for (const k of Object.keys(headers)) if (!k.startsWith('dlog.') || k === ENCODED_HEADERS) delete headers[k];
    headers['dlog.headers_dropped'] = 'the original headers were too large to keep';
  }
  // A key that alone is too large was refused by the broker on the way in; this only guards a
  // caller that built one.
  if (recordBytes(letter) > MAX_RECORD_BYTES - 200) letter.key = null;
  headers['dlog.value_dropped'] = `too large for a dead letter: ${valueBytes} bytes (${size} with key and headers); read it at the source offset`;
  return letter;
}

/** A worker's topic names under DLOG_TOPIC_PREFIX, with explicit overrides (tests) winning. */
export function prefixedTopics<T extends { [K in keyof T]: string }>(defaults: T, prefix: string, overrides: Partial<T> = {}): T {
  const out = {} as T;
  for (const k of Object.keys(defaults) as (keyof T)[]) out[k] = (overrides[k] ?? `${prefix}${defaults[k]}`) as T[keyof T];
  return out;
}
