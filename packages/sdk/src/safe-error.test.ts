import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorName, messageOf } from './safe-error.js';

describe('messageOf / errorName', () => {
  // A strict mock: every property read throws (itself).
  const hostile: unknown = new Proxy({}, { get() { throw hostile; } });
  const lyingError: unknown = new Proxy(new Error('x'), { get() { throw new Error('no'); }, getPrototypeOf() { throw new Error('no'); } });
  const getter = { get message(): string { throw new Error('getter'); } };

  it('never throw, whatever was thrown', () => {
    for (const v of [hostile, lyingError, getter, null, undefined, Symbol('s'), Object.create(null), () => 1]) {
      assert.doesNotThrow(() => messageOf(v));
      assert.doesNotThrow(() => errorName(v));
      assert.equal(typeof messageOf(v), 'string');
    }
    assert.match(messageOf(hostile), /cannot be read/);
    assert.match(messageOf(getter), /cannot be read/);
  });

  it('give the message and class of an ordinary error, and a thrown string as it is', () => {
    assert.equal(messageOf(new TypeError('bad')), 'bad');
    assert.equal(errorName(new TypeError('bad')), 'TypeError');
    assert.equal(messageOf('plain'), 'plain');
    assert.equal(messageOf({ message: 'like an error' }), 'like an error');
    assert.equal(messageOf(42), '42');
    assert.equal(errorName(42), 'number');
  });
});
