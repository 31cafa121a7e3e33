import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createStore, type Store } from '@dlog/store';
import { config, log, tempDir, unique } from './helpers.js';

/**
 * The same checks for both ClickHouse modes: embedded chDB always, a server too when
 * CLICKHOUSE_URL is set. Everything above the factory must not care which it got.
 */
const modes: { name: string; url: string | undefined }[] = [{ name: 'embedded chDB', url: undefined }];
if (config.clickhouseUrl) modes.push({ name: 'server', url: config.clickhouseUrl });

for (const mode of modes) {
  describe(`store factory: ${mode.name}`, () => {
    let store: Store;
    const dataDir = tempDir('store');

    before(async () => {
      store = await createStore({
        url: mode.url,
        username: config.clickhouseUser,
        password: config.clickhousePassword,
        database: unique('db').replaceAll('-', '_'),
        dataDir,
        createDatabase: true,
        log,
      });
    });
    after(async () => {
      await store.close();
    });

    it('reports its mode and location', () => {
      assert.equal(store.mode, mode.url ? 'server' : 'embedded');
      assert.equal(store.location, mode.url ? new URL(mode.url).toString() : dataDir);
    });

    it('creates a table, inserts rows and reads them back with bound parameters', async () => {
      const table = unique('t').replaceAll('-', '_');
      await store.client.command({
        query: `CREATE TABLE ${table} (id UInt64, model LowCardinality(String), ts DateTime64(3, 'UTC'), confidence Float64)
                ENGINE = MergeTree ORDER BY (model, ts, id)`,
      });
      const rows = Array.from({ length: 1000 }, (_, i) => ({
        id: i,
        model: i % 2 ? 'loan-approver:2.4.1' : 'loan-approver:2.4.0',
        ts: 1_780_000_000_000 + i,
        confidence: i / 1000,
      }));
      await store.client.insert({ table, values: rows, format: 'JSONEachRow' });
      const rs = await store.client.query({
        query: `SELECT count() AS n, min(id) AS lo, max(id) AS hi, toUnixTimestamp64Milli(max(ts)) AS last
                FROM ${table} WHERE model = {model:String}`,
        query_params: { model: 'loan-approver:2.4.1' },
        format: 'JSONEachRow',
      });
      assert.deepEqual(await rs.json(), [{ n: 500, lo: 1, hi: 999, last: 1_780_000_000_999 }]);
    });

    it('binds parameters instead of pasting them into SQL', async () => {
      const rs = await store.client.query({
        query: 'SELECT {s:String} AS s',
        query_params: { s: "x'; DROP TABLE t; --" },
        format: 'JSONEachRow',
      });
      assert.deepEqual(await rs.json(), [{ s: "x'; DROP TABLE t; --" }]);
    });

    it('surfaces ClickHouse error codes for the retry policy', async () => {
      await assert.rejects(store.client.query({ query: 'SELECT * FROM no_such_table', format: 'JSONEachRow' }), (err: unknown) => {
        assert.equal((err as { code?: string }).code, '60');
        return true;
      });
    });
  });
}
