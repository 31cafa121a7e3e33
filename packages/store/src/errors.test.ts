import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRetriableClickHouseError } from './errors.js';

describe('isRetriableClickHouseError', () => {
  it('classifies by code: network and overload retried, data errors not', () => {
    assert.equal(isRetriableClickHouseError({ code: '209', message: 'socket timeout' }), true);
    assert.equal(isRetriableClickHouseError({ code: '252', message: 'too many parts' }), true);
    assert.equal(isRetriableClickHouseError({ code: 'ECONNREFUSED' }), true);
    assert.equal(isRetriableClickHouseError({ code: '27', message: 'Cannot parse input' }), false);
    assert.equal(isRetriableClickHouseError({ code: '60', message: 'Unknown table' }), false);
    assert.equal(isRetriableClickHouseError(new Error('network error but no code')), false);
    assert.equal(isRetriableClickHouseError(null), false);
  });
});
