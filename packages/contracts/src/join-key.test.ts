import assert from 'node:assert/strict';
import { test } from 'node:test';
import { joinKey } from './join-key.js';

test('ordinary parts join as they are', () => {
  assert.equal(joinKey(['a', 60_000, 'b'], '\u0000'), 'a\u000060000\u0000b');
  assert.equal(joinKey(['x', 'y']), 'x\u001fy');
});

test('parts holding the separator or the escape cannot collide with other lists', () => {
  const lists: string[][] = [
    ['m\u0000x', 'e'],
    ['m', 'x\u0000e'],
    ['m\u001bs', 'e'],
    ['m\u001b', 's\u0000e'],
    ['m\u001b\u0000', 'e'],
    ['m', '\u001bs\u0000e'],
  ];
  const keys = lists.map((l) => joinKey(l, '\u0000'));
  assert.equal(new Set(keys).size, lists.length, JSON.stringify(keys));
});
