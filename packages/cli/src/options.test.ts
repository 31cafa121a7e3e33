import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { numberOption } from './options.js';

describe('numberOption', () => {
  it('takes numbers in range and refuses the rest with what to type', () => {
    assert.equal(numberOption('--status-every', '0', { min: 0, example: '30' }), 0);
    assert.equal(numberOption('--bad-share', '0.25', { min: 0, max: 1, example: '0.01' }), 0.25);
    for (const [value, o] of [
      ['abc', { min: 0, example: '30' }],
      ['', { min: 0, example: '30' }],
      ['5', { min: 0, max: 1, example: '0.01' }],
      ['1.5', { min: 1, integer: true, example: '10000' }],
      ['-1', { min: 0, example: '2000' }],
    ] as const) {
      assert.throws(() => numberOption('--x', value, o), (err: Error) => err.message.includes(`(got ${JSON.stringify(value)}); for example --x ${o.example}`));
    }
  });
});
