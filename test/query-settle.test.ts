import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '@dlog/config';
import { migrate, storeFromConfig } from '@dlog/store';
import { readOnlyQuery, settleQueries } from '../packages/cli/src/query-command.js';
import { freePort, tempDir } from './helpers.js';

describe('dlog commands end only after their queries', () => {
  it('a query that fails beside a running one: settleQueries waits for the running one', async () => {
    // A command exiting while a sibling query was still in the embedded engine crashed the process
    // (exit 139) instead of exiting 1.
    const config = loadConfig({ ...process.env, CLICKHOUSE_DATA_DIR: path.join(tempDir('settle'), 'clickhouse'), DLOG_QUERY_PORT: String(await freePort()), DLOG_QUERY_TIMEOUT_MS: '8000' });
    const store = await storeFromConfig(config, { createDatabase: true });
    await migrate(store, {});
    await store.close();
    let slowEnded = false;
    const slow = readOnlyQuery(config, 'SELECT count() FROM system.numbers_mt', {}).finally(() => (slowEnded = true));
    slow.catch(() => undefined);
    await assert.rejects(Promise.all([slow, readOnlyQuery(config, 'SELECT no_such_column FROM v_decisions', {})]), /no_such_column/);
    assert.equal(slowEnded, false, 'the slow query is still running when the command fails');
    await settleQueries();
    assert.equal(slowEnded, true);
  });
});
