import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { csvLine } from './csv.js';

describe('csvLine', () => {
  it('quotes what needs it, keeps numbers, and defuses cells a spreadsheet would run as formulas', () => {
    assert.equal(csvLine(['a', 'b,c', 'say "hi"', 'two\nlines', 'cr\ronly']), 'a,"b,c","say ""hi""","two\nlines","cr\ronly"');
    assert.equal(csvLine([-1.5, '-2', '+3e5', 0, null, { k: 1 }]), '-1.5,-2,+3e5,0,,"{""k"":1}"');
    assert.equal(csvLine(['=HYPERLINK("http://x")', '+1+1', '-1+cmd', '@SUM(A1)', '\tx']), `"'=HYPERLINK(""http://x"")",'+1+1,'-1+cmd,'@SUM(A1),'\tx`);
  });
});
