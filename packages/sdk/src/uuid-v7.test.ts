import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { uuidv7, uuidv7Time } from './uuid-v7.js';

describe('uuidv7', () => {
  it('has the RFC 9562 layout: version 7, variant 10, the ms timestamp first', () => {
    const now = Date.parse('2026-11-27T10:00:00.123Z');
    const id = uuidv7(now + 10_000);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(uuidv7Time(id), now + 10_000);
  });

  it('is unique and sorts in creation order, even many per millisecond and if the clock steps back', () => {
    const ids: string[] = [];
    const t = Date.now() + 60_000;
    for (let i = 0; i < 20_000; i++) ids.push(uuidv7(t));
    for (let i = 0; i < 100; i++) ids.push(uuidv7(t - 5_000));
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual([...ids].sort(), ids);
  });
});
