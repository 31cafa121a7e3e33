import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createStore, defaultMigrationsDir, migrate, MigrationError, type Store } from '@dlog/store';
import { config, log, tempDir, unique } from './helpers.js';

/** Migrations on a real ClickHouse: embedded always, the server too when CLICKHOUSE_URL is set. */
const modes: { name: string; url: string | undefined }[] = [{ name: 'embedded chDB', url: undefined }];
if (config.clickhouseUrl) modes.push({ name: 'server', url: config.clickhouseUrl });

for (const mode of modes) {
  describe(`dlog migrate: ${mode.name}`, () => {
    let store: Store;
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-migrations-'));

    before(async () => {
      for (const f of readdirSync(defaultMigrationsDir)) copyFileSync(path.join(defaultMigrationsDir, f), path.join(dir, f));
      store = await createStore({
        url: mode.url,
        username: config.clickhouseUser,
        password: config.clickhousePassword,
        database: mode.url ? unique('db').replaceAll('-', '_') : 'dlog',
        dataDir: tempDir('migrate'),
        createDatabase: true,
        log,
      });
    });
    after(async () => {
      await store.close();
    });

    it('applies every migration once, then finds the schema current', async () => {
      const first = await migrate(store, { dir });
      assert.equal(first.applied.length, first.all.length);
      const second = await migrate(store, { dir });
      assert.equal(second.applied.length, 0);
      const rs = await store.client.query({ query: 'SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name', format: 'JSONEachRow' });
      const names = (await rs.json<{ name: string }>()).map((r) => r.name);
      for (const t of ['decisions', 'decision_counts', 'artifacts', 'lineage_edges', 'deployments', 'alerts', 'schema_migrations', 'v_decisions', 'v_decision_totals', 'v_lineage', 'v_decision_lineage']) {
        assert.ok(names.includes(t), `${t} missing`);
      }
      const count = await store.client.query({ query: 'SELECT count() AS n FROM schema_migrations', format: 'JSONEachRow' });
      assert.deepEqual(await count.json(), [{ n: first.all.length }]);
    });

    it('writes a sink-sized batch of decisions as one compact part (009)', async () => {
      // ~15 MB of rows: over ClickHouse's default 10 MiB, where the part would be written wide.
      await store.client.command({
        query:
          "INSERT INTO decisions (event_id, model_name, model_version, ts, input_json) " +
          "SELECT concat('compact-', toString(number)), 'm', '1', now64(3), repeat('x', 1200) FROM numbers(12000)",
      });
      const rs = await store.client.query({
        query: "SELECT part_type, sum(rows) AS rows FROM system.parts WHERE database = currentDatabase() AND table = 'decisions' AND active GROUP BY part_type",
        format: 'JSONEachRow',
      });
      const parts = (await rs.json<{ part_type: string; rows: number | string }>()).map((p) => ({ type: p.part_type, rows: Number(p.rows) }));
      assert.deepEqual(parts, [{ type: 'Compact', rows: 12000 }]);
    });

    it('refuses an applied migration that was edited, naming the file', async () => {
      appendFileSync(path.join(dir, '002_decision_counts.sql'), '\n-- an innocent-looking edit\n');
      await assert.rejects(migrate(store, { dir }), (err: unknown) => err instanceof MigrationError && err.file === '002_decision_counts.sql');
    });
  });
}
