import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, appendFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createStore, defaultMigrationsDir, loadMigrations, migrate, MigrationError, type Store } from '@dlog/store';
import { config, log, tempDir, unique } from './helpers.js';

/** Migrations on a real ClickHouse: embedded always, the server too when CLICKHOUSE_URL is set. */
const modes: { name: string; url: string | undefined }[] = [{ name: 'embedded chDB', url: undefined }];
if (config.clickhouseUrl) modes.push({ name: 'server', url: config.clickhouseUrl });

for (const mode of modes) {
  describe(`dlog migrate: ${mode.name}`, () => {
    let store: Store;
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-migrations-'));
    const dataDir = tempDir('migrate');

    before(async () => {
      for (const f of readdirSync(defaultMigrationsDir)) copyFileSync(path.join(defaultMigrationsDir, f), path.join(dir, f));
      store = await createStore({
        url: mode.url,
        username: config.clickhouseUser,
        password: config.clickhousePassword,
        database: mode.url ? unique('db').replaceAll('-', '_') : 'dlog',
        dataDir,
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
      for (const t of ['decisions', 'decision_counts', 'artifacts', 'lineage_edges', 'deployments', 'alerts', 'schema_migrations', 'v_decisions', 'v_decision_totals', 'v_lineage', 'v_decision_lineage', 'v_artifacts', 'v_artifact_registrations']) {
        assert.ok(names.includes(t), `${t} missing`);
      }
      const count = await store.client.query({ query: 'SELECT count() AS n FROM schema_migrations', format: 'JSONEachRow' });
      assert.deepEqual(await count.json(), [{ n: first.all.length }]);
    });

    it('reads v_decisions in the order of the sorting key: memory does not grow with the rows read (011)', async () => {
      // 1M decisions, a few repeated: through LIMIT 1 BY alone, counting them needed ~400 MiB.
      await store.client.command({
        query: `INSERT INTO decisions (event_id, request_id, ts, endpoint, decision_type, model_name, model_version, input_hash, decision, tier, sample_rate, policy_version, policy_rule, source_partition, source_offset, gate_ts, resolved, enriched_at, producer_service, producer_sdk)
          SELECT toString(generateUUIDv4()), toString(number), toDateTime64('2026-11-27 00:00:00', 3, 'UTC') + toIntervalMillisecond(number * 40), 'api', 'loan', 'mem-m' || toString(number % 3), toString(number % 5), 'h', 'approve', 'standard', 1, 'p', 'r', 0, number, now64(3), true, now64(3), 's', 'sdk'
          FROM numbers(1000000)`,
      });
      await store.client.command({ query: `INSERT INTO decisions SELECT * EXCEPT (input_key) FROM decisions WHERE startsWith(model_name, 'mem-') LIMIT 500` });
      try {
        const rs = await store.client.query({
          query: `SELECT count() AS n FROM v_decisions WHERE startsWith(model_name, 'mem-')`,
          format: 'JSONEachRow',
          clickhouse_settings: { max_memory_usage: String(100 * 2 ** 20) },
        });
        assert.deepEqual(await rs.json(), [{ n: 1000000 }], 'every decision once, within 100 MiB');
      } finally {
        // The tests after this one count the table's parts.
        await store.client.command({ query: 'TRUNCATE TABLE decisions' });
      }
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

    it('keeps registrations stored before 010 (no log position) ahead of later ones, and 010 runs again safely', async () => {
      // A database of its own, beside the suite's (one process opens one embedded directory).
      const own = await createStore({
        url: mode.url,
        username: config.clickhouseUser,
        password: config.clickhousePassword,
        database: unique('db010').replaceAll('-', '_'),
        dataDir,
        createDatabase: true,
        log,
      });
      try {
        const before010 = mkdtempSync(path.join(tmpdir(), 'dlog-migrations-'));
        for (const f of readdirSync(defaultMigrationsDir)) if (Number(f.slice(0, 3)) < 10) copyFileSync(path.join(defaultMigrationsDir, f), path.join(before010, f));
        await migrate(own, { dir: before010 });
        const cols = 'event_id, kind, ref, name, version, digest, parents, registered_at, registered_by';
        // Stored by a sink before 010, in one batch: the same ingested_at, so registered_at decides.
        await own.client.command({
          query: `INSERT INTO artifacts (${cols}) VALUES
                  ('old-2', 'model', 'registry://models/m:1', 'm', '1', 'sha256:b', ['registry://datasets/d:2'], 2000, 't'),
                  ('old-1', 'model', 'registry://models/m:1', 'm', '1', 'sha256:c', ['registry://datasets/d:1'], 1000, 't')`,
        });
        await migrate(own);
        // Written by a sink after 010, so later in the log than both, though with an earlier clock.
        await own.client.command({
          query: `INSERT INTO artifacts (${cols}, source_partition, source_offset, source_known) VALUES
                  ('new', 'model', 'registry://models/m:1', 'm', '1', 'sha256:a', ['registry://datasets/d:0'], 500, 't', 0, 0, true)`,
        });
        // Idempotent, as every migration must be: a run interrupted half-way is run again whole.
        const m010 = loadMigrations().find((m) => m.version === 10)!;
        for (const statement of m010.statements) await own.client.command({ query: statement });
        const rs = await own.client.query({
          query: "SELECT event_id, outcome, source_offset FROM v_artifact_registrations WHERE ref = 'registry://models/m:1' ORDER BY event_id",
          format: 'JSONEachRow',
        });
        // Int64 comes as a number embedded and as a string from a server.
        const rows = (await rs.json<{ event_id: string; outcome: string; source_offset: string | number | null }>()).map((r) => [r.event_id, r.outcome, r.source_offset === null ? null : Number(r.source_offset)]);
        assert.deepEqual(rows, [
          ['new', 'refused', 0],
          ['old-1', 'registered', null],
          ['old-2', 'refused', null],
        ]);
        const lineage = await own.client.query({ query: "SELECT parent_ref FROM v_lineage WHERE child_ref = 'registry://models/m:1'", format: 'JSONEachRow' });
        assert.deepEqual(await lineage.json(), [{ parent_ref: 'registry://datasets/d:1' }]);
      } finally {
        await own.close();
      }
    });

    it('labels a same-digest registration repeated only when it says the same; otherwise refused, as every Kafka reader does', async () => {
      const ref = (n: string) => `registry://models/${unique(n)}:1`;
      const [p, m, k, u, e, same] = [ref('parents'), ref('meta'), ref('kind'), ref('uri'), `registry://environments/${unique('env')}`, ref('same')];
      const cols = 'event_id, kind, ref, name, version, digest, uri, metadata, parents, registered_at, registered_by, source_partition, source_offset, source_known';
      const row = (id: string, r: string, offset: number, over: { kind?: string; name?: string; uri?: string; metadata?: string; parents?: string } = {}) =>
        `('${id}', '${over.kind ?? 'model'}', '${r}', '${over.name ?? 'n'}', '1', 'sha256:a', '${over.uri ?? ''}', ${over.metadata ?? "{'auc': '0.9', 'f1': '0.8'}"}, ${over.parents ?? "['registry://datasets/d:1', 'git://x@1']"}, 1000, 't', 0, ${offset}, true)`;
      await store.client.command({
        query: `INSERT INTO artifacts (${cols}) VALUES
                ${row('p1', p, 1)}, ${row('p2', p, 2, { parents: "['registry://datasets/d:2', 'git://x@1']" })},
                ${row('m1', m, 1)}, ${row('m2', m, 2, { metadata: "{'auc': '0.91', 'f1': '0.8'}" })},
                ${row('k1', k, 1)}, ${row('k2', k, 2, { kind: 'dataset' })},
                ${row('u1', u, 1)}, ${row('u2', u, 2, { uri: 's3://m' })},
                ${row('s1', same, 1)}, ${row('s2', same, 2, { parents: "['git://x@1', 'registry://datasets/d:1', 'git://x@1']", metadata: "{'f1': '0.8', 'auc': '0.9'}" })},
                ${row('e1', e, 1, { kind: 'environment', name: 'runtime-environment' })},
                ${row('e2', e, 2, { kind: 'environment', name: 'gpu-pool-a', metadata: "{'owner': 'platform'}" })},
                ${row('e3', e, 3, { kind: 'environment', uri: 's3://envs/e' })}`,
      });
      const rs = await store.client.query({
        query: 'SELECT event_id, outcome FROM v_artifact_registrations WHERE ref IN ({refs:Array(String)}) ORDER BY event_id',
        query_params: { refs: [p, m, k, u, e, same] },
        format: 'JSONEachRow',
      });
      assert.deepEqual(
        Object.fromEntries((await rs.json<{ event_id: string; outcome: string }>()).map((r) => [r.event_id, r.outcome])),
        {
          p1: 'registered', p2: 'refused',
          m1: 'registered', m2: 'refused',
          k1: 'registered', k2: 'refused',
          u1: 'registered', u2: 'refused',
          // Parents and metadata are sets: another order, or a parent named twice, says the same.
          s1: 'registered', s2: 'repeated',
          // An environment is its digest: another name or metadata is the same registration.
          e1: 'registered', e2: 'repeated', e3: 'refused',
        },
      );
    });

    it('refuses an applied migration that was edited, naming the file', async () => {
      appendFileSync(path.join(dir, '002_decision_counts.sql'), '\n-- an innocent-looking edit\n');
      await assert.rejects(migrate(store, { dir }), (err: unknown) => err instanceof MigrationError && err.file === '002_decision_counts.sql');
    });

    it('waits for another migrator\'s lock, and takes over one left by a migrator that stopped', async () => {
      // Everything shipped is applied by now; one more migration is pending in a copy of the folder.
      const next = mkdtempSync(path.join(tmpdir(), 'dlog-migrations-next-'));
      for (const f of readdirSync(defaultMigrationsDir)) copyFileSync(path.join(defaultMigrationsDir, f), path.join(next, f));
      writeFileSync(path.join(next, '999_lock_test.sql'), 'CREATE TABLE IF NOT EXISTS lock_test (x UInt8) ENGINE = Memory;\n');
      const tables = async (name: string) => {
        const rs = await store.client.query({ query: 'SELECT count() AS n FROM system.tables WHERE database = currentDatabase() AND name = {name:String}', query_params: { name }, format: 'JSONEachRow' });
        return Number((await rs.json<{ n: number | string }>())[0]!.n);
      };
      const holder = JSON.stringify({ owner: 'other-host:42', at: Date.now() });
      await store.client.command({ query: `CREATE TABLE schema_migrations_lock (at DateTime64(3, 'UTC')) ENGINE = Memory COMMENT '${holder}'` });
      await assert.rejects(
        migrate(store, { dir: next, lockWaitMs: 600, staleLockMs: 60_000 }),
        (err: unknown) => err instanceof MigrationError && /Another migrator holds schema_migrations_lock \(other-host:42/.test(err.message),
      );
      assert.equal(await tables('lock_test'), 0, 'nothing applied while another held the lock');
      // Older than staleLockMs: its migrator stopped; this one takes over, applies, and lets go.
      const result = await migrate(store, { dir: next, lockWaitMs: 600, staleLockMs: 0 });
      assert.deepEqual(result.applied.map((m) => m.file), ['999_lock_test.sql']);
      assert.equal(await tables('lock_test'), 1);
      assert.equal(await tables('schema_migrations_lock'), 0, 'the lock is dropped after the run');
    });
  });
}
