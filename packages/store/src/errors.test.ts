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
    assert.equal(isRetriableClickHouseError(null), false);
    // chDB: the code only in ClickHouse's text.
    assert.equal(isRetriableClickHouseError(new Error('Code: 117. DB::Exception: Unknown enum value. (INCORRECT_DATA)')), false);
    assert.equal(isRetriableClickHouseError(new Error('Code: 252. DB::Exception: Too many parts. (TOO_MANY_PARTS)')), true);
    // The server's disk, memory or quota, not the rows: retried, never dead-lettered.
    assert.equal(isRetriableClickHouseError(new Error('Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)')), true);
    assert.equal(isRetriableClickHouseError({ code: '173', message: 'Cannot allocate memory' }), true);
    assert.equal(isRetriableClickHouseError({ code: '201', message: 'Quota exceeded' }), true);
    // The server's own connections: S3 throttling, a connect timeout, a cut stream.
    assert.equal(isRetriableClickHouseError(new Error('Code: 499. DB::Exception: Message: Please reduce your request rate. (S3_ERROR)')), true);
    assert.equal(isRetriableClickHouseError({ code: '1000', message: 'Timeout: connect timed out: 10.0.0.7:9000' }), true);
    assert.equal(isRetriableClickHouseError({ code: '32', message: 'Attempt to read after eof' }), true);
    assert.equal(isRetriableClickHouseError({ code: '279', message: 'All connection tries failed' }), true);
  });

  it('retries what did not come from ClickHouse: every ClickHouse error has a code', () => {
    // A load balancer answering for a server that is down: the client raises its page, no code.
    assert.equal(isRetriableClickHouseError(new Error('<html><body><h1>503 Service Unavailable</h1></body></html>')), true);
    assert.equal(isRetriableClickHouseError(new Error('502 Bad Gateway: Error Code: 502')), true);
    assert.equal(isRetriableClickHouseError(new Error('Timeout error.')), true);
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
