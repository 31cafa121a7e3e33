import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import avro from 'avsc';
import { readAvroLong, readAvroString, writeAvroLong } from './avro-peek.js';

describe('reading leading Avro fields', () => {
  const type = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 's', type: 'string' }, { name: 'l', type: 'long' }] });

  it('reads what avsc wrote: strings of any length and longs of either sign up to 2^52', () => {
    for (const [s, l] of [['', 0], ['ev-1', 1795768261155], ['é✓'.repeat(200), -(2 ** 52)], ['x', 2 ** 52 - 1]] as const) {
      const b = type.toBuffer({ s, l });
      const [got, next] = readAvroString(b, 0);
      assert.equal(got, s);
      assert.deepEqual(readAvroLong(b, next), [l, b.length]);
    }
  });

  it('refuses bytes that end early', () => {
    const b = type.toBuffer({ s: 'event-id', l: 5 });
    assert.throws(() => readAvroString(b.subarray(0, 4), 0), RangeError);
    assert.throws(() => readAvroLong(Buffer.from([0x80, 0x80]), 0), RangeError);
  });

  it('writes Avro longs as avsc does', () => {
    const longType = avro.Type.forSchema('long');
    for (const n of [0, 1, -1, 63, 64, -65, 1_764_000_000_123, -1_764_000_000_123, 2 ** 50]) {
      const buf = Buffer.alloc(12);
      const end = writeAvroLong(buf, 0, n);
      assert.deepEqual(buf.subarray(0, end), longType.toBuffer(n), `bytes of ${n}`);
    }
  });
});
