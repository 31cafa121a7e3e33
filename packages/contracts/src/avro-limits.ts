import { isUtf8 } from 'node:buffer';
import avro from 'avsc';

/**
 * Bounds on what avsc will do for an array or map block count it reads from untrusted bytes.
 *
 * avsc trusts block counts. A 13-byte event whose array field claims a billion doubles makes it
 * fill an array until the heap runs out, which aborts the whole process; a map does the same
 * work in a loop that never ends; and skipping a field the reader does not know (a producer on
 * an evolved schema) moves backwards on a negative block size, for ever. The batch is then read
 * again after the restart, and the worker never gets past it.
 *
 * Every item of an array or map takes at least one byte in practice (a map entry always does:
 * its key), so a block claiming more items than bytes are left is malformed. The readers below
 * are avsc's own with that check added: the tap is marked truncated, so the caller's decode fails
 * as it does for any short buffer, and the event goes to the dead-letter topic. The one shape
 * this refuses that Avro allows is an array of zero-byte items (`null`, empty records) longer
 * than the rest of its buffer, which no contract of ours has.
 */

/** avsc's buffer cursor, as far as these readers use it. */
interface Tap {
  buf: Buffer;
  pos: number;
  readLong(): number;
  skipLong(): void;
  readString(): string;
  skipString(): void;
}

interface ItemType {
  _read(tap: Tap): unknown;
  _skip(tap: Tap): void;
}

/** Marks the tap as read past its end: avsc then reports a truncated buffer. */
function truncate(tap: Tap): void {
  tap.pos = tap.buf.length + 1;
}

/** The item count of the next block (0 at the end), or -1 after truncating the tap. */
function blockCount(tap: Tap, skipSize: boolean): number {
  let n = tap.readLong();
  if (n < 0) {
    n = -n;
    if (skipSize) tap.skipLong();
  }
  if (n > tap.buf.length - tap.pos) {
    truncate(tap);
    return -1;
  }
  return n;
}

function readArray(this: { itemsType: ItemType }, tap: Tap): unknown[] {
  const items = this.itemsType;
  let out: unknown[] | undefined;
  let i = 0;
  let n: number;
  while ((n = blockCount(tap, true)) > 0) {
    out ??= new Array<unknown>(n);
    while (n-- > 0) out[i++] = items._read(tap);
  }
  return out ?? [];
}

/**
 * A string whose bytes are not UTF-8. avsc decodes strings leniently, each invalid sequence
 * becoming U+FFFD, so `evt-\xff` and `evt-\xfe` were read as one and the same id; a JSON event
 * with such bytes was refused all along. Decoding now fails with this instead.
 */
export class InvalidUtf8Error extends Error {
  constructor(bytes: number) {
    super(`a string of ${bytes} bytes is not valid UTF-8`);
    this.name = 'InvalidUtf8Error';
  }
}

/**
 * avsc's string read, refusing bytes that are not UTF-8. The bytes are looked at again only when
 * the decoded string holds U+FFFD, which is what an invalid sequence turns into (a genuine U+FFFD is
 * valid UTF-8): strings without one cost a scan of their characters and nothing more.
 */
function readString(tap: Tap): string {
  const start = tap.pos;
  const s = tap.readString();
  if (s !== undefined && s.includes('\uFFFD')) {
    tap.pos = start;
    const len = tap.readLong();
    const from = tap.pos;
    tap.pos = from + len;
    if (!isUtf8(tap.buf.subarray(from, from + len))) throw new InvalidUtf8Error(len);
  }
  return s;
}

function readStringType(tap: Tap): string {
  return readString(tap);
}

function readMap(this: { valuesType: ItemType }, tap: Tap): Record<string, unknown> {
  const values = this.valuesType;
  // A plain object, as avsc makes it: consumers check its prototype for `__proto__` keys.
  const out: Record<string, unknown> = {};
  let n: number;
  while ((n = blockCount(tap, true)) > 0) {
    while (n-- > 0) {
      const key = readString(tap);
      out[key] = values._read(tap);
    }
  }
  return out;
}

/** Skips the blocks of an array (`key` false) or map (`key` true) without reading items. */
function skipBlocks(tap: Tap, item: ItemType, key: boolean): void {
  for (;;) {
    let n = tap.readLong();
    if (n === 0) return;
    if (n < 0) {
      // A negative count is followed by the block's size in bytes: skip it in one step.
      const size = tap.readLong();
      if (size < 0 || size > tap.buf.length - tap.pos) return truncate(tap);
      tap.pos += size;
      continue;
    }
    if (n > tap.buf.length - tap.pos) return truncate(tap);
    while (n-- > 0) {
      if (key) tap.skipString();
      item._skip(tap);
    }
  }
}

function skipArray(this: { itemsType: ItemType }, tap: Tap): void {
  skipBlocks(tap, this.itemsType, false);
}

function skipMap(this: { valuesType: ItemType }, tap: Tap): void {
  skipBlocks(tap, this.valuesType, true);
}

// avsc copies a type's `_read` into each resolver it makes, so this runs at import, before any
// contract type or resolver exists. Only these five methods change; writing is untouched.
// The `types` export is avsc's public registry of type classes; its typings do not list _read.
const types = avro.types as unknown as Record<'ArrayType' | 'MapType' | 'StringType', { prototype: Record<string, unknown> }>;
types.ArrayType.prototype._read = readArray;
types.ArrayType.prototype._skip = skipArray;
types.MapType.prototype._read = readMap;
types.MapType.prototype._skip = skipMap;
types.StringType.prototype._read = readStringType;

/** Imported for its effect; exported so the import cannot be dropped as unused. */
export const avroBlockLimits = true;
