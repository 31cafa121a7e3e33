import type { Command } from 'commander';
import { assertReadOnlySql, loadMigrations, pendingMigrations, queryViaEndpoint, readAppliedMigrations, runReadOnlyQuery, storeFromConfig, storeUnavailable, type QueryResponse } from '@dlog/store';
import type { Config } from '@dlog/config';
import { cliContext } from './context.js';
import { csvLine } from './csv.js';

export function formatTable(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '(no rows)\n';
  const cols = Object.keys(rows[0]!);
  const cell = (v: unknown) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const widths = cols.map((c) => Math.min(60, Math.max(c.length, ...rows.map((r) => cell(r[c]).length))));
  const line = (vals: string[]) => vals.map((v, i) => (v.length > widths[i]! ? `${v.slice(0, widths[i]! - 1)}…` : v.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(cols), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n') + '\n';
}

function formatCsv(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]!);
  return [csvLine(cols), ...rows.map((r) => csvLine(cols.map((c) => r[c])))].join('\n') + '\n';
}

/** Parses `--param name=value`; values stay strings and ClickHouse converts them to the declared {name:Type}. */
export function parseParams(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`--param takes name=value (got ${JSON.stringify(p)}); use it with {name:Type} in the SQL, e.g. --param model=loan-approver and WHERE model_name = {model:String}`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

/**
 * One read-only query: against the server when CLICKHOUSE_URL is set; in embedded mode through
 * the running pipeline (which owns the store), or by opening the store when nothing runs.
 */
/** Queries still running, so the process does not end under one (see settleQueries). */
const inFlight = new Set<Promise<unknown>>();

/**
 * Waits for every query this process started to end. A command whose query failed while others it
 * ran beside it (Promise.all) were still in the embedded engine exited under them, and the engine
 * crashed the process (exit 139, a segfault) instead of it exiting 1.
 */
export async function settleQueries(): Promise<void> {
  while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
}

export function readOnlyQuery(config: Config, sql: string, params: Record<string, unknown>): Promise<QueryResponse> {
  const run = runQuery(config, sql, params);
  inFlight.add(run);
  void run.then(
    () => inFlight.delete(run),
    () => inFlight.delete(run),
  );
  return run;
}

async function runQuery(config: Config, sql: string, params: Record<string, unknown>): Promise<QueryResponse> {
  // The statement's own mistakes first: they are the same wherever it would run.
  assertReadOnlySql(sql);
  if (!config.clickhouseUrl) {
    const viaPipeline = await queryViaEndpoint({ port: config.queryPort, dataDir: config.clickhouseDataDir, sql, params, timeoutMs: config.queryTimeoutMs });
    if (viaPipeline) return viaPipeline;
  }
  // The client waits longer than the engine's own limit, so a slow query ends with the engine's
  // error naming DLOG_QUERY_TIMEOUT_MS, not the client's 30 s "unreachable" timeout.
  const store = await storeFromConfig(config, { requestTimeoutMs: config.queryTimeoutMs + 10_000 });
  try {
    // A store written by an older version lacks what newer queries read: say so plainly. Only a
    // missing table means that; an unreachable server or a refused login is reported as such.
    const pending = pendingMigrations(loadMigrations(), await readAppliedMigrations(store));
    if (pending.length > 0) {
      throw new Error(
        `The store at ${store.location} is missing ${pending.length} schema migration(s) (${pending.map((m) => m.file).join(', ')}). Run: npm run dlog -- migrate`,
      );
    }
    return await runReadOnlyQuery(store, { sql, params }, config.queryTimeoutMs);
  } catch (err) {
    throw storeUnavailable(err, store.location, config.clickhouseUser) ?? err;
  } finally {
    await store.close();
  }
}

export function registerQueryCommand(program: Command): void {
  program
    .command('query')
    .description('run a read-only SQL query on the decision store (parameters are bound, never pasted)')
    .argument('<sql>', 'e.g. "SELECT model_version, count() FROM v_decisions WHERE model_name = {model:String} GROUP BY 1"')
    .option('-p, --param <name=value...>', 'bind {name:Type} placeholders', [])
    .option('-f, --format <format>', 'table | json | csv', 'table')
    .action(async (sql: string, opts: { param: string[]; format: string }) => {
      if (!['table', 'json', 'csv'].includes(opts.format)) throw new Error(`--format is table, json or csv (got ${opts.format})`);
      const { config } = cliContext();
      const result = await readOnlyQuery(config, sql, parseParams(opts.param)).catch((err: unknown) => {
        // The engine's own words name neither the setting nor a way out.
        const message = (err as Error).message ?? String(err);
        if (!/Timeout exceeded|TIMEOUT_EXCEEDED/i.test(message)) throw err;
        throw new Error(`${message.trimEnd()} The limit is DLOG_QUERY_TIMEOUT_MS (${config.queryTimeoutMs} ms): narrow the query (a time range, a model) or raise it.`, { cause: err });
      });
      if (opts.format === 'json') process.stdout.write(result.rows.map((r) => JSON.stringify(r)).join('\n') + (result.rows.length ? '\n' : ''));
      else if (opts.format === 'csv') process.stdout.write(formatCsv(result.rows));
      else process.stdout.write(formatTable(result.rows));
      if (result.truncated) process.stderr.write('(result truncated: add a LIMIT or aggregate)\n');
      if (opts.format === 'table') process.stderr.write(`${result.rows.length} row(s) in ${result.elapsedMs} ms\n`);
    });
}
