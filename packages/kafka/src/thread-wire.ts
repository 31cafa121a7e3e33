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

interface PackedMessage {
  k: Ref;
  v: Ref;
  h?: [string, HeaderRef][];
  o?: string;
  t?: string;
}

export interface PackedMessages {
  blob: ArrayBuffer;
  items: PackedMessage[];
}

type Bytes = Buffer | string | null | undefined;

function size(x: Bytes): number {
  return x instanceof Uint8Array ? x.length : 0;
}

function headerEntries(headers: IHeaders | undefined): [string, Bytes | Bytes[]][] {
  if (!headers) return [];
  const out: [string, Bytes | Bytes[]][] = [];
  for (const [name, v] of Object.entries(headers)) if (v !== undefined) out.push([name, v as Bytes | Bytes[]]);
  return out;
}

export function packMessages(messages: readonly (Message | KafkaMessage)[]): PackedMessages {
  let total = 0;
  for (const m of messages) {
    total += size(m.key as Bytes) + size(m.value as Bytes);
    for (const [, v] of headerEntries(m.headers)) total += Array.isArray(v) ? v.reduce((s, x) => s + size(x), 0) : size(v);
  }
  const blob = new ArrayBuffer(total);
  const bytes = new Uint8Array(blob);
  let at = 0;
  const ref = (x: Bytes): Ref => {
    if (x === null || x === undefined) return null;
    if (typeof x === 'string') return x;
    bytes.set(x, at);
    const r: Ref = { at, len: x.length };
    at += x.length;
    return r;
  };
  const items = messages.map((m) => {
    const item: PackedMessage = { k: ref(m.key as Bytes), v: ref(m.value as Bytes) };
    const hs = headerEntries(m.headers);
    if (hs.length > 0) item.h = hs.map(([name, v]) => [name, Array.isArray(v) ? v.map(ref) : ref(v)]);
    if ('offset' in m) item.o = m.offset;
    if ('timestamp' in m && m.timestamp !== undefined) item.t = m.timestamp;
    return item;
  });
  return { blob, items };
}

/**
 * Views into `packed.blob`: the receiver owns it after the transfer, so nothing is copied. Fields
 * that were strings come back as strings (kafkajs takes either for keys and headers).
 */
export function unpackMessages(packed: PackedMessages): KafkaMessage[] {
  const { blob } = packed;
  const val = (r: Ref): Buffer | string | null => (r === null || typeof r === 'string' ? r : Buffer.from(blob, r.at, r.len));
  return packed.items.map((p) => {
    const headers: IHeaders = {};
    for (const [name, v] of p.h ?? []) {
      headers[name] = Array.isArray(v) ? v.map((x) => val(x) ?? '') : (val(v) ?? undefined);
    }
    // kafkajs types say Buffer, and every consumer of these keys (dead letters, outputs) takes
    // a string as well.
    return { key: val(p.k) as Buffer | null, value: val(p.v) as Buffer | null, headers, offset: p.o ?? '0', timestamp: p.t ?? '0', attributes: 0 };
  });
}
