import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { csvLine, jsonText } from './csv.js';

describe('csvLine', () => {
  it('quotes what needs it, keeps numbers, and defuses cells a spreadsheet would run as formulas', () => {
    assert.equal(csvLine(['a', 'b,c', 'say "hi"', 'two\nlines', 'cr\ronly']), 'a,"b,c","say ""hi""","two\nlines","cr\ronly"');
    assert.equal(csvLine([-1.5, '-2', '+3e5', 0, null, { k: 1 }]), '-1.5,-2,+3e5,0,,"{""k"":1}"');
    assert.equal(csvLine(['=HYPERLINK("http://x")', '+1+1', '-1+cmd', '@SUM(A1)', '\tx']), `"'=HYPERLINK(""http://x"")",'+1+1,'-1+cmd,'@SUM(A1),'\tx`);
  });

  it('writes exact 64-bit integers (bigint) with every digit, alone and inside arrays and maps', () => {
    assert.equal(csvLine([-9007199254740993n, [18446744073709551615n, 1], { k: 2603192927274642682n }]), '-9007199254740993,"[18446744073709551615,1]","{""k"":2603192927274642682}"');
  });
});

describe('jsonText', () => {
  it('is JSON.stringify for values without a bigint', () => {
    for (const v of [{ a: 1, b: [1, 'x', null, { c: true }], d: 'q"uote' }, [1, undefined, 2], { skip: undefined, n: 0.1 }, 'text', null, 3]) {
      assert.equal(jsonText(v), JSON.stringify(v));
    }
  });
});
