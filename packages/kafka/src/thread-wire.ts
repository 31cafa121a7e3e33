import type { IHeaders, KafkaMessage, Message } from 'kafkajs';

/**
 * Kafka messages across a worker-thread boundary in one copy.
 *
 * A kafkajs message's key and value are views into the whole fetch response, and small Buffers
 * from avsc or Buffer.from share an 8 KiB pool: posting them as they are would clone every
 * underlying ArrayBuffer, megabytes per message. So every byte field is copied once into one
 * ArrayBuffer that is transferred (not cloned), and the other side gets views into it.
 */

/** A byte field: null, a string kept as a string, or where its bytes sit in the blob. */
type Ref = null | string | { at: number; len: number };
type HeaderRef = Ref | Ref[];

/**
 * Per message four numbers in `spans`: key start and length, value start and length. A start of
 * -1 is null; -2 is a string key, next in `keys`. Offsets and timestamps travel as one joined
 * string each. Structured-cloning an object per message cost ~4 µs a message; this costs well
 * under one. Headers are rare on these topics and travel per message that has them.
 */
export interface PackedMessages {
  blob: ArrayBuffer;
  spans: Float64Array;
  keys: string[];
  offsets: string;
  timestamps: string;
  headers: [index: number, entries: [string, HeaderRef][]][];
}

type Bytes = Buffer | string | null | undefined;

function size(x: Bytes): number {
  return x instanceof Uint8Array ? x.length : 0;
}

function headerEntries(headers: IHeaders | undefined): [string, Bytes | Bytes[]][] {
  if (!headers) return [];
  const out: [string, Bytes | Bytes[]][] = [];
  for (const name in headers) {
    const v = headers[name];
    if (v !== undefined) out.push([name, v as Bytes | Bytes[]]);
  }
  return out;
}

export function packMessages(messages: readonly (Message | KafkaMessage)[]): PackedMessages {
  // A string value is not something these topics carry; it goes as its UTF-8 bytes.
  const values = messages.map((m) => (typeof m.value === 'string' ? Buffer.from(m.value) : (m.value as Bytes)));
  let total = 0;
  for (let n = 0; n < messages.length; n++) {
    const m = messages[n]!;
    total += size(m.key as Bytes) + size(values[n]);
    if (m.headers) for (const [, v] of headerEntries(m.headers)) total += Array.isArray(v) ? v.reduce((s, x) => s + size(x), 0) : size(v);
  }
  const blob = new ArrayBuffer(total);
  const bytes = new Uint8Array(blob);
  const spans = new Float64Array(messages.length * 4);
  const keys: string[] = [];
  const offsets: string[] = [];
  const timestamps: string[] = [];
  const headers: PackedMessages['headers'] = [];
  let at = 0;
  const ref = (x: Bytes): Ref => {
    if (x === null || x === undefined) return null;
    if (typeof x === 'string') return x;
    bytes.set(x, at);
    const r: Ref = { at, len: x.length };
    at += x.length;
    return r;
  };
  const span = (x: Bytes, i: number): void => {
    if (x === null || x === undefined) {
      spans[i] = -1;
    } else if (typeof x === 'string') {
      spans[i] = -2;
      keys.push(x);
    } else {
      bytes.set(x, at);
      spans[i] = at;
      spans[i + 1] = x.length;
      at += x.length;
    }
  };
  for (let n = 0; n < messages.length; n++) {
    const m = messages[n]!;
    span(m.key as Bytes, n * 4);
    span(values[n], n * 4 + 2);
    // '' stands for "none": an output message without a timestamp must stay without one, so
    // the producer stamps it with the time it is sent (and retention counts from then).
    offsets.push('offset' in m ? m.offset : '');
    timestamps.push(m.timestamp ?? '');
    if (m.headers) {
      const hs = headerEntries(m.headers);
      if (hs.length > 0) headers.push([n, hs.map(([name, v]) => [name, Array.isArray(v) ? v.map(ref) : ref(v)])]);
    }
  }
  return {
    blob,
    spans,
    keys,
    offsets: offsets.join(','),
    timestamps: timestamps.join(','),
    headers,
  };
}

/** What to list as transferables when posting `packed`. */
export function transferables(packed: PackedMessages): ArrayBuffer[] {
  return [packed.blob, packed.spans.buffer as ArrayBuffer];
}

/**
 * Views into `packed.blob`: the receiver owns it after the transfer, so nothing is copied. Fields
 * that were strings come back as strings (kafkajs takes either for keys and headers).
 */
export function unpackMessages(packed: PackedMessages): KafkaMessage[] {
  const { blob, spans } = packed;
  const count = spans.length / 4;
  const offsets = packed.offsets.split(',');
  const timestamps = packed.timestamps.split(',');
  const val = (r: Ref): Buffer | string | null => (r === null || typeof r === 'string' ? r : Buffer.from(blob, r.at, r.len));
  let nextKey = 0;
  const field = (i: number): Buffer | string | null => {
    const start = spans[i]!;
    if (start === -1) return null;
    if (start === -2) return packed.keys[nextKey++]!;
    return Buffer.from(blob, start, spans[i + 1]!);
  };
  const out: KafkaMessage[] = new Array(count);
  for (let n = 0; n < count; n++) {
    // kafkajs types say Buffer, and every consumer of these keys (dead letters, outputs) takes
    // a string as well.
    const key = field(n * 4) as Buffer | null;
    const value = field(n * 4 + 2) as Buffer | null;
    // Without a timestamp the field stays undefined (never '0', which kafkajs would send as 1970).
    out[n] = { key, value, headers: {}, offset: offsets[n] || '0', timestamp: (timestamps[n] || undefined) as string, attributes: 0 };
  }
  for (const [n, entries] of packed.headers) {
    const h: IHeaders = {};
    // A null value stays null, as the consumer gave it (kafkajs's types leave it out): dropped or
    // made '' here, a dead letter said something else than the original.
    for (const [name, v] of entries) h[name] = (Array.isArray(v) ? v.map(val) : val(v)) as IHeaders[string];
    out[n]!.headers = h;
  }
  return out;
}
