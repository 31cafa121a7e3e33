import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
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
  return all.filter((m) => !done.has(m.version));
}

/**
 * Applies the pending migrations in order. Each migration's statements run one by one; the
 * migration is recorded only after all of them succeeded, and since they are idempotent a failed
 * run is simply run again.
 */
export async function migrate(store: Store, opts: { dir?: string; log?: Logger } = {}): Promise<MigrateResult> {
  const all = loadMigrations(opts.dir);
  const pending = pendingMigrations(all, await appliedMigrations(store));
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
    opts.log?.info({ migration: m.file, statements: m.statements.length, ms: Date.now() - t0 }, 'migration applied');
    applied.push(m);
  }
  return { applied, all };
}
