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

    it('refuses an applied migration that was edited, naming the file', async () => {
      appendFileSync(path.join(dir, '002_decision_counts.sql'), '\n-- an innocent-looking edit\n');
      await assert.rejects(migrate(store, { dir }), (err: unknown) => err instanceof MigrationError && err.file === '002_decision_counts.sql');
    });
  });
}
