import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseExactJson } from './query-server.js';

describe('parseExactJson', () => {
  it('keeps every digit of integers past 2^53, wherever they sit, and leaves the rest as JSON.parse does', () => {
    const text = '{"h":2603192927274642682,"i":-9007199254740993,"a":[18446744073709551615,1],"m":{"k":170141183460469231731687303715884105727},"safe":9007199254740991,"f":1.5,"e":1e21,"big_float":12345678901234567890.5}';
    assert.deepEqual(parseExactJson(text), {
      h: 2603192927274642682n,
      i: -9007199254740993n,
      a: [18446744073709551615n, 1],
      m: { k: 170141183460469231731687303715884105727n },
      safe: 9007199254740991,
      f: 1.5,
      e: 1e21,
      big_float: 12345678901234567890.5,
    });
  });

  it('does not touch digits inside strings, escaped quotes included', () => {
    const text = '{"s":"id 12345678901234567890","q":"say \\"12345678901234567890\\" twice","n":12345678901234567890}';
    assert.deepEqual(parseExactJson(text), { s: 'id 12345678901234567890', q: 'say "12345678901234567890" twice', n: 12345678901234567890n });
  });

  it('parses as JSON.parse when no integer is past the exact range', () => {
    for (const text of ['{"n":42,"s":"1234567890123456789"}', '[]', '{"rows":[{"x":null}],"truncated":false,"elapsedMs":3}']) {
      assert.deepEqual(parseExactJson(text), JSON.parse(text));
    }
    assert.throws(() => parseExactJson('{"n":12345678901234567890'), SyntaxError);
  });
});
