import { randomFillSync } from 'node:crypto';

/**
 * UUIDv7 (RFC 9562): 48-bit Unix ms timestamp, a 12-bit counter seeded at random each ms (method 1
 * of section 6.2, so ids from one process sort in the order they were made), then 62 random bits.
 * crypto.randomUUID is v4 and unordered; this one is built from a pooled random buffer and lookup
 * tables so it costs well under a microsecond on the caller's path.
 */

const hex = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const nibble = '0123456789abcdef';

const pool = Buffer.allocUnsafe(8 * 1024);
let poolPos = pool.length;

let lastMs = -1;
let prefix = '';
let counter = 0;

function setMs(ms: number): void {
  lastMs = ms;
  const t = ms.toString(16).padStart(12, '0');
  prefix = `${t.slice(0, 8)}-${t.slice(8, 12)}-7`;
}

export function uuidv7(now: number = Date.now()): string {
  if (poolPos + 10 > pool.length) {
    randomFillSync(pool);
    poolPos = 0;
  }
  if (now > lastMs) {
    setMs(now);
    // Seed below 0x800 so at least 2048 ids fit in one millisecond before borrowing the next one.
    counter = ((pool[poolPos++]! << 8) | pool[poolPos++]!) & 0x7ff;
  } else if (++counter > 0xfff) {
    // Counter exhausted (or the clock went back): move to the next ms, never reuse an id.
    setMs(lastMs + 1);
    counter = 0;
  }
  const p = poolPos;
  poolPos += 8;
  return (
    prefix +
    nibble[counter >> 8]! +
    hex[counter & 0xff]! +
    '-' +
    hex[(pool[p]! & 0x3f) | 0x80]! +
    hex[pool[p + 1]!]! +
    '-' +
    hex[pool[p + 2]!]! +
    hex[pool[p + 3]!]! +
    hex[pool[p + 4]!]! +
    hex[pool[p + 5]!]! +
    hex[pool[p + 6]!]! +
    hex[pool[p + 7]!]!
  );
}

/** The ms timestamp inside a UUIDv7. */
export function uuidv7Time(id: string): number {
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}
