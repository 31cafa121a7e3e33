import { createHash, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Store } from './create-store.js';
import { clickHouseErrorCode } from './errors.js';

/**
 * Versioned ClickHouse migrations: numbered `.sql` files in `infra/clickhouse/migrations/`, applied
 * in order, each recorded in `schema_migrations` with a checksum of its text. Applying is
 * idempotent (every statement is `IF NOT EXISTS` / `OR REPLACE`, and applied versions are skipped),
 * so a run interrupted half-way is finished by the next one. An applied file must never change:
 * the schema in production is what the recorded text made it, so an edit is refused with the file
 * named, and the change belongs in a new file.
 */

export const defaultMigrationsDir = fileURLToPath(new URL('../../../infra/clickhouse/migrations/', import.meta.url));

export const migrationsTable = 'schema_migrations';

export interface Migration {
  version: number;
  /** File name, e.g. `001_decisions.sql`. */
  file: string;
  checksum: string;
  statements: string[];
}

export interface AppliedMigration {
  version: number;
  file: string;
  checksum: string;
  appliedAt: string;
}

export interface MigrateResult {
  /** Applied by this run, in order. */
  applied: Migration[];
  /** Every migration on disk, all applied once the run returns. */
  all: Migration[];
}

export class MigrationError extends Error {
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(message);
    this.name = 'MigrationError';
  }
}

const fileName = /^(\d{3,})_([a-z0-9][a-z0-9_]*)\.sql$/;

/**
 * Splits SQL text into statements on `;`, ignoring semicolons inside quotes and comments. Comment
 * lines are kept with the statement that follows (ClickHouse ignores them); empty statements
 * (only whitespace and comments) are dropped.
 */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  let meaningful = false;
  const n = sql.length;
  const push = (end: number) => {
    const text = sql.slice(start, end).trim();
    if (meaningful && text.length > 0) out.push(text);
    meaningful = false;
  };
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === '-' && next === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl === -1 ? n : nl + 1;
    } else if (c === '/' && next === '*') {
      const close = sql.indexOf('*/', i + 2);
      if (close === -1) throw new MigrationError('Unterminated /* comment');
      i = close + 2;
    } else if (c === "'" || c === '"' || c === '`') {
      meaningful = true;
      let j = i + 1;
      for (;;) {
        if (j >= n) throw new MigrationError(`Unterminated ${c} quote`);
        const d = sql[j]!;
        if (d === '\\') j += 2;
        else if (d === c && sql[j + 1] === c) j += 2;
        else if (d === c) break;
        else j++;
      }
      i = j + 1;
    } else if (c === ';') {
      push(i);
      start = i + 1;
      i++;
    } else {
      if (!/\s/.test(c)) meaningful = true;
      i++;
    }
  }
  push(n);
  return out;
}

export function checksumOf(text: string): string {
  // Line endings are normalised so a checkout on Windows does not look like an edit.
  return `sha256:${createHash('sha256').update(text.replace(/\r\n/g, '\n'), 'utf8').digest('hex')}`;
}

/** Reads and checks the migration files, sorted by version. */
export function loadMigrations(dir: string = defaultMigrationsDir): Migration[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((f) => f.endsWith('.sql'));
  } catch (err) {
    throw new MigrationError(`Cannot read the migrations folder ${dir}: ${(err as Error).message}`);
  }
  const byVersion = new Map<number, Migration>();
  for (const file of names) {
    const m = fileName.exec(file);
    if (!m) {
      throw new MigrationError(`Migration file ${file} is not named <number>_<name>.sql (for example 007_add_index.sql)`, file);
    }
    const version = Number(m[1]);
    const other = byVersion.get(version);
    if (other) throw new MigrationError(`Migrations ${other.file} and ${file} share version ${version}; renumber one`, file);
    const text = readFileSync(path.join(dir, file), 'utf8');
    let statements: string[];
    try {
      statements = splitStatements(text);
    } catch (err) {
      throw new MigrationError(`Migration ${file}: ${(err as Error).message}`, file);
    }
    if (statements.length === 0) throw new MigrationError(`Migration ${file} holds no statement`, file);
    byVersion.set(version, { version, file, checksum: checksumOf(text), statements });
  }
  return [...byVersion.values()].sort((a, b) => a.version - b.version);
}

async function ensureMigrationsTable(store: Store): Promise<void> {
  await store.client.command({
    query: `CREATE TABLE IF NOT EXISTS ${migrationsTable}
            (
                version     UInt32,
                file        String,
                checksum    String,
                statements  UInt32,
                applied_at  DateTime64(3, 'UTC') DEFAULT now64(3)
            )
            ENGINE = MergeTree ORDER BY version`,
  });
}

/** What `schema_migrations` records (the first record of a version wins). */
export async function appliedMigrations(store: Store): Promise<AppliedMigration[]> {
  await ensureMigrationsTable(store);
  return readAppliedMigrations(store);
}

const unknownTable = 60;
const unknownDatabase = 81;

/**
 * The same, for readers that may not create tables (a read-only analyst): a store without the
 * table, or without the database, has no migration applied. Any other failure (the server cannot
 * be reached, the login is refused) is thrown, not taken for "not migrated".
 */
export async function readAppliedMigrations(store: Store): Promise<AppliedMigration[]> {
  let rows: { version: number; file: string; checksum: string; applied_at: string }[];
  try {
    const rs = await store.client.query({
      query: `SELECT version, file, checksum, toString(applied_at) AS applied_at
              FROM ${migrationsTable} ORDER BY version, applied_at LIMIT 1 BY version`,
      format: 'JSONEachRow',
    });
    rows = await rs.json<{ version: number; file: string; checksum: string; applied_at: string }>();
  } catch (err) {
    const code = clickHouseErrorCode(err);
    if (code === unknownTable || code === unknownDatabase) return [];
    throw err;
  }
  return rows.map((r) => ({ version: Number(r.version), file: r.file, checksum: r.checksum, appliedAt: r.applied_at }));
}

/** Compares disk with what was applied; throws if an applied migration was edited or removed. */
export function pendingMigrations(all: Migration[], applied: AppliedMigration[]): Migration[] {
  const onDisk = new Map(all.map((m) => [m.version, m]));
  for (const a of applied) {
    const m = onDisk.get(a.version);
    if (!m && a.version > (all[all.length - 1]?.version ?? 0)) {
      throw new MigrationError(
        `This database was migrated by a newer decision-log (up to ${a.file}; this one knows up to ${all[all.length - 1]?.file ?? 'none'}): run the newer version, or upgrade this one.`,
        a.file,
      );
    }
    if (!m) {
      throw new MigrationError(
        `Migration ${a.file} (version ${a.version}) was applied to this database but is missing from the migrations folder. ` +
          'Applied migrations are never removed: restore the file.',
        a.file,
      );
    }
    if (m.checksum !== a.checksum) {
      throw new MigrationError(
        `Migration ${m.file} was changed after it was applied (applied ${a.checksum}, file now ${m.checksum}). ` +
          `Applied migrations are immutable: revert the edit and put the change in a new file, e.g. ${String(all[all.length - 1]!.version + 1).padStart(3, '0')}_<what>.sql.`,
        m.file,
      );
    }
  }
  const done = new Set(applied.map((a) => a.version));
  const pending = all.filter((m) => !done.has(m.version));
  const newest = applied.reduce((n, a) => Math.max(n, a.version), 0);
  const early = pending.find((m) => m.version < newest);
  if (early) {
    // Run last, it would replace views and settings that later migrations had already moved on.
    throw new MigrationError(
      `Migration ${early.file} is numbered below ${String(newest).padStart(3, '0')}, already applied to this database: applied after it, it would undo what the later ones changed. ` +
        `Renumber it ${String(all[all.length - 1]!.version + 1).padStart(3, '0')}_<what>.sql.`,
      early.file,
    );
  }
  return pending;
}

/**
 * Applies the pending migrations in order. Each migration's statements run one by one; the
 * migration is recorded only after all of them succeeded, and since they are idempotent a failed
 * run is simply run again.
 */
export async function migrate(store: Store, opts: MigrateOptions = {}): Promise<MigrateResult> {
  const all = loadMigrations(opts.dir);
  if (pendingMigrations(all, await appliedMigrations(store)).length === 0) return { applied: [], all };
  const release = await takeMigrationLock(store, opts);
  try {
    // Read again under the lock: another migrator may have applied them meanwhile.
    return await applyPending(store, all, pendingMigrations(all, await appliedMigrations(store)), opts.log);
  } finally {
    await release();
  }
}

export interface MigrateOptions {
  dir?: string;
  log?: Logger;
  /** How long to wait for another migrator's lock (default 120 s). */
  lockWaitMs?: number;
  /** A lock older than this was left by a migrator that died (default: 10 min on a server; embedded, any: one process owns the store). */
  staleLockMs?: number;
}

export const migrationLockTable = 'schema_migrations_lock';

/**
 * One migrator at a time. Two at once each worked from the list they read at start: one that
 * was behind re-ran an old migration after the other had applied newer ones, putting old view
 * definitions back under a `schema_migrations` that called the schema current. The lock is the
 * table's existence (CREATE without IF NOT EXISTS is atomic); its comment says who took it when.
 */
async function takeMigrationLock(store: Store, opts: MigrateOptions): Promise<() => Promise<void>> {
  const waitMs = opts.lockWaitMs ?? 120_000;
  const staleMs = opts.staleLockMs ?? (store.mode === 'embedded' ? 0 : 600_000);
  const owner = JSON.stringify({ owner: `${hostname()}:${process.pid}:${randomUUID()}`, at: Date.now() });
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      await store.client.command({ query: `CREATE TABLE ${migrationLockTable} (at DateTime64(3, 'UTC')) ENGINE = Memory COMMENT ${sqlLiteral(owner)}` });
      break;
    } catch (err) {
      if (clickHouseErrorCode(err) !== tableExists) throw err;
    }
    const holder = await lockHolder(store);
    if (holder && Date.now() - holder.at >= staleMs) {
      opts.log?.warn({ holder: holder.owner, since: new Date(holder.at).toISOString() }, 'migration lock left by a migrator that stopped: taking it over');
      await store.client.command({ query: `DROP TABLE IF EXISTS ${migrationLockTable} SYNC` });
      continue;
    }
    if (Date.now() > deadline) {
      throw new MigrationError(
        `Another migrator holds ${migrationLockTable} (${holder?.owner ?? 'unknown'}, since ${holder ? new Date(holder.at).toISOString() : '?'}). ` +
          `If none is running, it is taken over ${Math.round(staleMs / 60_000)} min after it was taken; or drop the table ${migrationLockTable} and run again.`,
      );
    }
    if (!told) opts.log?.info({ holder: holder?.owner }, 'waiting for another migrator to finish');
    told = true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return async () => {
    await store.client.command({ query: `DROP TABLE IF EXISTS ${migrationLockTable} SYNC` }).catch((err: unknown) => {
      opts.log?.warn({ err }, `could not drop ${migrationLockTable}; the next migrator takes it over once it is stale`);
    });
  };
}

async function lockHolder(store: Store): Promise<{ owner: string; at: number } | undefined> {
  const rs = await store.client.query({
    query: `SELECT comment FROM system.tables WHERE database = currentDatabase() AND name = {name:String}`,
    query_params: { name: migrationLockTable },
    format: 'JSONEachRow',
  });
  const row = (await rs.json<{ comment: string }>())[0];
  if (!row) return undefined;
  try {
    const parsed = JSON.parse(row.comment) as { owner?: unknown; at?: unknown };
    if (typeof parsed.owner === 'string' && typeof parsed.at === 'number') return { owner: parsed.owner, at: parsed.at };
  } catch {
    // Not ours to read: treated as taken now, so it is waited for, never dropped at once.
  }
  return { owner: row.comment, at: Date.now() };
}

function sqlLiteral(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

const tableExists = 57;

async function applyPending(store: Store, all: Migration[], pending: Migration[], log: Logger | undefined): Promise<MigrateResult> {
  const applied: Migration[] = [];
  for (const m of pending) {
    const t0 = Date.now();
    for (const [i, statement] of m.statements.entries()) {
      try {
        await store.client.command({ query: statement });
      } catch (err) {
        throw new MigrationError(
          `Migration ${m.file} failed at statement ${i + 1} of ${m.statements.length}: ${(err as Error).message}`,
          m.file,
        );
      }
    }
    await store.client.insert({
      table: migrationsTable,
      values: [{ version: m.version, file: m.file, checksum: m.checksum, statements: m.statements.length }],
      format: 'JSONEachRow',
    });
    log?.info({ migration: m.file, statements: m.statements.length, ms: Date.now() - t0 }, 'migration applied');
    applied.push(m);
  }
  return { applied, all };
}
