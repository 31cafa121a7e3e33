import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createStore, deniedFunctions, maxResultBytes, maxResultRows, readAppliedMigrations, ReadOnlySqlError, runReadOnlyQuery, type Store } from '@dlog/store';
import { redactUrl } from '@dlog/config';
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
      assert.equal(store.location, mode.url ? redactUrl(mode.url) : dataDir);
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

    it('drops a second insert with a token it has seen, whatever rows it carries (why the sink names each statement\'s rows in its token)', async () => {
      const table = unique('tok').replaceAll('-', '_');
      await store.client.command({
        query: `CREATE TABLE ${table} (k String) ENGINE = MergeTree ORDER BY k SETTINGS non_replicated_deduplication_window = 100`,
      });
      const insert = (token: string, keys: string[]) =>
        store.client.insert({ table, values: keys.map((k) => ({ k })), format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: token } });
      await insert('batch/0:0-7/a', ['a', 'b', 'c', 'd']);
      await insert('batch/0:0-7/a', ['e', 'f']);
      await insert('batch/0:0-7/a@1f2e', ['e', 'f']);
      const rs = await store.client.query({ query: `SELECT groupArray(k) AS keys FROM (SELECT k FROM ${table} ORDER BY k)`, format: 'JSONEachRow' });
      assert.deepEqual(await rs.json(), [{ keys: ['a', 'b', 'c', 'd', 'e', 'f'] }]);
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

    it('reads a store without the migrations table as not migrated, without creating it', async () => {
      assert.deepEqual(await readAppliedMigrations(store), []);
      const rs = await store.client.query({ query: "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() AND name = 'schema_migrations'", format: 'JSONEachRow' });
      assert.deepEqual(await rs.json(), [{ n: 0 }]);
    });

    it('runs analyst SQL under the engine read-only setting, for that query only', async () => {
      const { rows } = await runReadOnlyQuery(store, { sql: "SELECT getSetting('readonly') AS r, {m:String} AS m", params: { m: 'loan-approver' } });
      // 1 refuses table functions that reach outside; a server analyst profile allows only 2.
      assert.deepEqual(rows, [{ r: mode.url ? 2 : 1, m: 'loan-approver' }]);
      // The embedded engine shares one session with the sink: the setting must not outlive the query.
      const table = unique('after_ro').replaceAll('-', '_');
      await store.client.command({ query: `CREATE TABLE ${table} (a UInt8) ENGINE = Memory` });
      await store.client.insert({ table, values: [{ a: 1 }], format: 'JSONEachRow' });
    });

    it('reads 64-bit integers with every digit for analysts, and as numbers for the audit commands', async () => {
      const sql = "SELECT cityHash64('a') AS h, toInt64(-9007199254740993) AS i, [toUInt64(18446744073709551615)] AS a, count() AS n, 0.25 AS f FROM numbers(2)";
      const exact = await runReadOnlyQuery(store, { sql }, undefined, { exactIntegers: true });
      assert.deepEqual(exact.rows, [{ h: 2603192927274642682n, i: -9007199254740993n, a: [18446744073709551615n], n: 2, f: 0.25 }]);
      // What scope, diff and trace add up: numbers, as the store writes them.
      const plain = await runReadOnlyQuery(store, { sql });
      assert.equal(typeof plain.rows[0]!.h, 'number');
      assert.equal(plain.rows[0]!.n, 2);
    });

    it('cuts a huge result in the engine, not after loading it', async () => {
      // Reading past a few blocks beyond the limit would throw: the engine must stop at the limit.
      const res = await runReadOnlyQuery(store, { sql: "SELECT number, throwIf(number >= 3000000, 'read past the limit') AS t FROM numbers(10000000)" });
      assert.equal(res.rows.length, maxResultRows);
      assert.equal(res.truncated, true);
      assert.deepEqual(res.rows[0], { number: 0, t: 0 });
      const union = await runReadOnlyQuery(store, { sql: 'SELECT number FROM numbers(60000) UNION ALL SELECT number FROM numbers(60000)' });
      assert.equal(union.rows.length, maxResultRows);
      assert.equal(union.truncated, true);
      const small = await runReadOnlyQuery(store, { sql: 'SELECT number FROM numbers(3) ORDER BY number;' });
      assert.deepEqual(small, { rows: [{ number: 0 }, { number: 1 }, { number: 2 }], columns: ['number'], truncated: false, elapsedMs: small.elapsedMs });
    });

    it('cuts an answer too large to send within the row limit, and says it was cut', async () => {
      // 100,000 rows of 6 KB: the JSON of it passed V8's string limit, and the failure took the
      // pipeline that owns the store down with it.
      const res = await runReadOnlyQuery(store, { sql: "SELECT repeat('x', 6000) AS s FROM numbers(100000)" });
      assert.equal(res.truncated, true);
      assert.ok(res.rows.length > 1000 && res.rows.length < 100_000, `${res.rows.length} rows`);
      assert.ok(JSON.stringify(res).length <= maxResultBytes + 10_000);
    });

    it('stops a runaway query in the engine after the time limit', async () => {
      // Without the limit this never ends (the engine counts an endless table).
      await assert.rejects(runReadOnlyQuery(store, { sql: 'SELECT count() FROM system.numbers_mt' }, 1_500), (err: unknown) => {
        assert.match(String((err as Error).message), /TIMEOUT_EXCEEDED|Timeout exceeded|time limit/i);
        return true;
      });
    });

    it('knows every table function of the engine as local or as reaching outside', async () => {
      // Computed from data the query gives or tables of this server: the rest must be denied.
      const local = new Set(['numbers', 'numbers_mt', 'zeros', 'zeros_mt', 'primes', 'generateRandom', 'generateSeries', 'generate_series', 'values', 'SQLStandardValues',
        'view', 'viewIfPermitted', 'merge', 'null', 'format', 'loop', 'fuzzJSON', 'fuzzQuery',
        'mergeTreeIndex', 'mergeTreeProjection', 'mergeTreeAnalyzeIndexes', 'mergeTreeAnalyzeIndexesUUID', 'mergeTreeTextIndex']);
      const rs = await store.client.query({ query: 'SELECT name FROM system.table_functions', format: 'JSONEachRow' });
      const unknown = (await rs.json<{ name: string }>()).map((r) => r.name).filter((f) => !local.has(f) && !deniedFunctions.has(f.toLowerCase()));
      assert.deepEqual(unknown, [], 'new table functions: add each to deniedFunctions (read-only-sql.ts) unless it only computes locally');
    });

    it('refuses the quoting tricks that reached files and the network', async () => {
      const out = path.join(dataDir, '..', `${unique('outfile')}.txt`);
      for (const sql of [
        "SELECT * FROM `file`('/etc/hostname', 'LineAsString')",
        "SELECT * FROM `url`('http://127.0.0.1:1/x', 'LineAsString')",
        `SELECT $$'$$ AS x INTO OUTFILE '${out}' --'`,
      ]) {
        await assert.rejects(runReadOnlyQuery(store, { sql }), ReadOnlySqlError, sql);
      }
      assert.equal(existsSync(out), false);
    });
  });
}
