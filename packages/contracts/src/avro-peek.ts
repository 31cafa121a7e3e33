/**
 * Reading single leading fields of an Avro body without decoding the record: the sink takes a
 * decision's replay key and time this way, the SDK the event id of a record it reads back.
 * Both throw RangeError on bytes that end early or are not what the field should be. And
 * writing one long in place: the enricher's spliced records and the sink's container files.
 */

/** An Avro long (zigzag, base-128 varint) at `at`; returns the value and the next position. */
export function readAvroLong(b: Buffer, at: number): [value: number, next: number] {
  let n = 0;
  let mul = 1;
  for (;;) {
    if (at >= b.length) throw new RangeError('truncated Avro long');
    const byte = b[at++]!;
    n += (byte & 0x7f) * mul;
    if (byte < 0x80) break;
    mul *= 128;
    if (mul > 2 ** 63) throw new RangeError('Avro long too long');
  }
  return [n % 2 === 0 ? n / 2 : -(n + 1) / 2, at];
}

/** An Avro string (long length, UTF-8 bytes) at `at`; returns it and the next position. */
export function readAvroString(b: Buffer, at: number): [value: string, next: number] {
  const [len, start] = readAvroLong(b, at);
  if (len < 0 || start + len > b.length) throw new RangeError('Avro string runs past the record');
  return [b.toString('utf8', start, start + len), start + len];
}

/** Writes `n` as an Avro long at `at` (room for 10 bytes); returns the next position. Exact for |n| < 2^52. */
export function writeAvroLong(b: Buffer, at: number, n: number): number {
  let z = n >= 0 ? n * 2 : -n * 2 - 1;
  while (z >= 0x80) {
    b[at++] = (z % 0x80) | 0x80;
    z = Math.floor(z / 0x80);
  }
  b[at++] = z;
  return at;
}
