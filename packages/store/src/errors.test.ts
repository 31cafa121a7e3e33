import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRetriableClickHouseError, storeUnavailable, StoreUnavailableError } from './errors.js';

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

describe('storeUnavailable', () => {
  const at = 'http://analyst:***@ch:8123/';
  it('names CLICKHOUSE_URL for a server that cannot be reached, looking inside wrapped errors', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const e = storeUnavailable(new AggregateError([refused], ''), at);
    assert.ok(e instanceof StoreUnavailableError);
    assert.match(e.message, /^Cannot reach the ClickHouse server at http:\/\/analyst:\*\*\*@ch:8123\/ \(CLICKHOUSE_URL\)/);
    assert.equal(e.cause instanceof AggregateError, true);
  });

  it('names the credentials for a refused login, and leaves query errors alone', () => {
    const login = storeUnavailable(Object.assign(new Error('analyst: Authentication failed.'), { code: '516' }), at, 'analyst');
    assert.match(login?.message ?? '', /refused the login of user "analyst".*CLICKHOUSE_USER and CLICKHOUSE_PASSWORD/);
    assert.equal(storeUnavailable(Object.assign(new Error('Unknown table'), { code: '60' }), at), undefined);
    assert.equal(storeUnavailable(Object.assign(new Error('Timeout exceeded'), { code: '159' }), at), undefined);
  });
});
