import assert from 'node:assert/strict';
import { test } from 'node:test';
import avro, { type Schema } from 'avsc';
import { avroBlockLimits, InvalidUtf8Error } from './avro-limits.js';
import { avroType } from './schemas.js';

assert.ok(avroBlockLimits);

/** Zig-zag varint, as Avro writes a long. */
function long(n: number): number[] {
  let z = n >= 0 ? n * 2 : -n * 2 - 1;
  const out: number[] = [];
  while (z >= 0x80) {
    out.push((z % 128) | 0x80);
    z = Math.floor(z / 128);
  }
  out.push(z);
  return out;
}

/** A decoded record as a plain object (avsc returns instances of a generated class). */
const plain = (v: unknown): unknown => ({ ...(v as object) });
const record = (field: Schema) => avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'a', type: field }] } as Schema);

test('an array block claiming more items than bytes left is a truncated buffer, not a heap-filling loop', () => {
  // Unbounded, avsc filled an array of a billion slots and the process aborted out of memory.
  const t = record({ type: 'array', items: 'double' });
  const bytes = Buffer.from([...long(1_000_000_000), 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.throws(() => t.fromBuffer(bytes), /truncated/);
});

test('a map block claiming more entries than bytes left is refused', () => {
  const t = record({ type: 'map', values: 'long' });
  const bytes = Buffer.from([...long(-4_000_000_000_000), ...long(3), 1, 2, 3]);
  assert.throws(() => t.fromBuffer(bytes), /truncated/);
});

test('skipping a field the reader lacks: a negative block size ends the read instead of looping', () => {
  // Writer: a producer's evolved schema with an extra array; reader: without it.
  const writer = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'x', type: { type: 'array', items: 'string' } }, { name: 'a', type: 'string' }] } as Schema);
  const reader = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'a', type: 'string' }] } as Schema);
  const resolver = reader.createResolver(writer);
  // Block of -1 items whose byte size is -2: the old skip moved backwards and re-read it for ever.
  const bytes = Buffer.from([...long(-1), ...long(-2), ...long(1), 0x61]);
  assert.throws(() => reader.fromBuffer(bytes, resolver), /truncated/);
  const skipHuge = Buffer.from([...long(2_000_000), ...long(1), 0x61]);
  assert.throws(() => reader.fromBuffer(skipHuge, resolver), /truncated/);
});

test('valid arrays and maps, in one block or several, with and without sizes, still read and skip', () => {
  const t = record({ type: 'array', items: 'long' });
  assert.deepEqual(plain(t.fromBuffer(t.toBuffer({ a: [1, 2, 3] }))), { a: [1, 2, 3] });
  // Two blocks, the second in the sized (negative count) form.
  const blocks = Buffer.from([...long(2), ...long(5), ...long(6), ...long(-1), ...long(1), ...long(7), 0]);
  assert.deepEqual(plain(t.fromBuffer(blocks)), { a: [5, 6, 7] });
  const m = record({ type: 'map', values: 'string' });
  assert.deepEqual(plain(m.fromBuffer(m.toBuffer({ a: { k: 'v', j: '' } }))), { a: { k: 'v', j: '' } });
  const writer = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'x', type: { type: 'map', values: { type: 'array', items: 'int' } } }, { name: 'a', type: 'string' }] } as Schema);
  const reader = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'a', type: 'string' }] } as Schema);
  const bytes = writer.toBuffer({ x: { p: [1, 2], q: [] }, a: 'kept' });
  assert.deepEqual(plain(reader.fromBuffer(bytes, reader.createResolver(writer))), { a: 'kept' });
  const sized = Buffer.from([...long(-1), ...long(3), ...long(1), 0x70, ...long(0), 0, ...long(4), ...[0x6b, 0x65, 0x70, 0x74]]);
  assert.deepEqual(plain(reader.fromBuffer(sized, reader.createResolver(writer))), { a: 'kept' });
});

test('the contracts round-trip through the bounded readers', () => {
  const t = avroType('decision-counts');
  const v = { minute: 60_000, model_name: 'm', model_version: '1', endpoint: 'e', decision_type: 'd', tier: 'standard', decision: 'x', policy_version: 'p', kept: 2, dropped: 1, batch_id: 'b' };
  assert.deepEqual(plain(t.fromBuffer(t.toBuffer(v))), v);
});

test('a string whose bytes are not UTF-8 is refused, not read as U+FFFD (two ids once read as one)', () => {
  const t = record('string');
  const bytes = (s: number[]) => Buffer.from([...long(s.length), ...s]);
  assert.throws(() => t.fromBuffer(bytes([0x65, 0x76, 0x74, 0x2d, 0xff])), InvalidUtf8Error);
  assert.throws(() => t.fromBuffer(bytes([0x65, 0xc3, 0x28])), InvalidUtf8Error);
  // A genuine U+FFFD, and any other valid text, reads as before.
  assert.equal((t.fromBuffer(t.toBuffer({ a: 'evt-\uFFFD' })) as { a: string }).a, 'evt-\uFFFD');
  assert.equal((t.fromBuffer(t.toBuffer({ a: 'naïve ✓ 😀' })) as { a: string }).a, 'naïve ✓ 😀');
  // Map keys as well; through a resolver (an evolved writer) as well.
  const m = record({ type: 'map', values: 'int' });
  assert.throws(() => m.fromBuffer(Buffer.from([...long(1), ...long(2), 0x61, 0xfe, ...long(1), 0])), InvalidUtf8Error);
  const writer = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'a', type: 'string' }, { name: 'b', type: 'int' }] } as Schema);
  const resolver = t.createResolver(writer);
  assert.throws(() => t.fromBuffer(Buffer.from([...long(2), 0x61, 0xff, ...long(3)]), resolver), InvalidUtf8Error);
});
