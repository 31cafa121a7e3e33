import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { assertReadOnlySql, clickHouseErrorCode, loadMigrations, pendingMigrations, queryViaEndpoint, readAppliedMigrations, runReadOnlyQuery, storeFromConfig, storeUnavailable, type QueryResponse } from '@dlog/store';
import type { Config } from '@dlog/config';
import { cliContext } from './context.js';
import { csvLine, jsonText, oneLine } from './csv.js';

type Rows = Record<string, unknown>[];

/**
 * An answer's columns in the order the engine gave them. A row object cannot say: JavaScript puts
 * integer-like keys first, so `SELECT 'x' AS b, 1 AS \`1\`` printed column 1 before b, and an
 * answer with no rows has no row to ask. `columns` is that order, from the engine's own header;
 * the store's QueryResponse does not carry it yet, and until it does the first row's keys are the
 * best left (and an empty answer has none).
 */
export function columnsOf(answer: { rows: Rows; columns?: readonly string[] | undefined }): readonly string[] {
  return answer.columns ?? (answer.rows[0] ? Object.keys(answer.rows[0]) : []);
}

const cellText = (v: unknown) => (v === null || v === undefined ? '' : typeof v === 'object' ? jsonText(v) : oneLine(String(v)));

export function formatTable(rows: Rows, cols: readonly string[]): string {
  if (rows.length === 0) return '(no rows)\n';
  const widths = cols.map((c) => Math.min(60, Math.max(oneLine(c).length, ...rows.map((r) => cellText(r[c]).length))));
  const line = (vals: string[]) => vals.map((v, i) => (v.length > widths[i]! ? `${v.slice(0, widths[i]! - 1)}…` : v.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(cols.map(oneLine)), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => cellText(r[c]))))].join('\n') + '\n';
}

/** The header line even with no rows: a script reading the file learns the columns either way. */
export function formatCsv(rows: Rows, cols: readonly string[]): string {
  if (cols.length === 0) return '';
  return [csvLine(cols), ...rows.map((r) => csvLine(cols.map((c) => r[c])))].join('\n') + '\n';
}

/** One JSON object a line, members in the columns' order (jsonText of the row would put `1` first). */
export function formatJsonLines(rows: Rows, cols: readonly string[]): string {
  return rows.map((r) => `{${cols.map((c) => `${JSON.stringify(c)}:${jsonText(r[c])}`).join(',')}}\n`).join('');
}

/**
 * -p as commander's collector: one name=value each time, repeated for more. A variadic -p took
 * every word after it, the SQL too, so `dlog query -p m=x "SELECT ..."` lacked its SQL.
 */
export function collectParam(value: string, previous: string[]): string[] {
  return [...previous, value];
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

/**
 * `exactIntegers`: integers past ±2^53 come back as bigint (see ReadOptions in @dlog/store); only
 * for what is printed as it is.
 */
export function readOnlyQuery(config: Config, sql: string, params: Record<string, unknown>, opts: { exactIntegers?: boolean } = {}): Promise<QueryResponse> {
  const run = (async () => runQuery(config, sql, bindableParams(sql, params), opts))();
  inFlight.add(run);
  void run.then(
    () => inFlight.delete(run),
    () => inFlight.delete(run),
  );
  return run;
}

/**
 * The parameters as both engines can bind them. An integer-valued number past ±2^53 has lost
 * digits already, and the embedded engine refuses it with its binder's own words ("Refusing to
 * serialize unsafe integer"; through the pipeline, an internal error): `--where "step=1e20"`
 * said nothing of the filter. For a Float placeholder the number is exact as a float and goes as
 * text, which the engine reads by the placeholder's type; for an integer one it is out of range.
 */
export function bindableParams(sql: string, params: Record<string, unknown>): Record<string, unknown> {
  let out = params;
  for (const [name, value] of Object.entries(params)) {
    if (typeof value !== 'number' || !Number.isInteger(value) || Number.isSafeInteger(value)) continue;
    const placeholder = `\\{${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\s*`;
    const type = new RegExp(`${placeholder}([^}]*)\\}`).exec(sql)?.[1] ?? '';
    if (/Float|Decimal/.test(type)) {
      out = { ...out, [name]: String(value) };
      continue;
    }
    // The column compared with it (the --where filter writes `step = {w1:Int64}`), to name in the message.
    const column = new RegExp(`([A-Za-z_][A-Za-z0-9_]*)\\s*(?:<=|>=|!=|=|<|>)\\s*${placeholder}`).exec(sql)?.[1];
    throw new QueryInputError(
      `${value} is out of range for ${column ?? `the parameter ${name}`}: it takes whole numbers from ${Number.MIN_SAFE_INTEGER} to ${Number.MAX_SAFE_INTEGER}.`,
    );
  }
  return out;
}

/** A query the person typing got wrong, with what to type instead. */
export class QueryInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueryInputError';
  }
}

async function runQuery(config: Config, sql: string, params: Record<string, unknown>, opts: { exactIntegers?: boolean }): Promise<QueryResponse> {
  // The statement's own mistakes first: they are the same wherever it would run.
  assertReadOnlySql(sql);
  if (!config.clickhouseUrl) {
    const viaPipeline = await queryViaEndpoint({ port: config.queryPort, dataDir: config.clickhouseDataDir, sql, params, timeoutMs: config.queryTimeoutMs, ...opts });
    if (viaPipeline) return viaPipeline;
    // Opened, a mistyped directory was made into an empty store, which then read as one written by
    // an older version ("missing 11 schema migrations ... run migrate").
    if (!existsSync(path.join(config.clickhouseDataDir, 'metadata'))) {
      throw new QueryInputError(
        `No store at ${config.clickhouseDataDir}: nothing has written one there. Start the pipeline with npm start (it makes the store), or set CLICKHOUSE_DATA_DIR to the directory of one.`,
      );
    }
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
    return await runReadOnlyQuery(store, { sql, params }, config.queryTimeoutMs, opts);
  } catch (err) {
    throw storeUnavailable(err, store.location, config.clickhouseUser) ?? err;
  } finally {
    await store.close();
  }
}

/** UNKNOWN_QUERY_PARAMETER: a {name:Type} in the SQL that no -p gave. */
const unknownQueryParameter = 456;

export function registerQueryCommand(program: Command): void {
  program
    .command('query')
    .description('run a read-only SQL query on the decision store (parameters are bound, never pasted)')
    .argument('<sql>', 'e.g. "SELECT model_version, count() FROM v_decisions WHERE model_name = {model:String} GROUP BY 1"')
    // Words past the SQL are caught here, to say how -p is repeated, not commander's "too many arguments".
    .argument('[extra...]')
    .option('-p, --param <name=value>', 'bind a {name:Type} placeholder; repeat for more: -p a=1 -p b=2', collectParam, [])
    .option('-f, --format <format>', 'table | json | csv', 'table')
    .action(async (sql: string, extra: string[], opts: { param: string[]; format: string }) => {
      if (extra.length > 0) {
        throw new QueryInputError(
          `The SQL is one argument, in quotes, and -p comes once for each parameter (got ${[sql, ...extra].map((w) => JSON.stringify(w)).join(' ')}), e.g. dlog query "SELECT {a:String} AS a, {b:String} AS b" -p a=1 -p b=2`,
        );
      }
      if (!['table', 'json', 'csv'].includes(opts.format)) throw new Error(`--format is table, json or csv (got ${opts.format})`);
      const { config } = cliContext();
      const result = await readOnlyQuery(config, sql, parseParams(opts.param), { exactIntegers: true }).catch((err: unknown) => {
        // The engine's own words name neither the setting nor a way out.
        const message = (err as Error).message ?? String(err);
        if (clickHouseErrorCode(err) === unknownQueryParameter) {
          const name = /`([^`]+)`/.exec(message)?.[1] ?? 'name';
          throw new QueryInputError(`${message.trimEnd()} Give its value with -p ${name}=<value> (the SQL's {${name}:Type} says how it is read).`);
        }
        if (!/Timeout exceeded|TIMEOUT_EXCEEDED/i.test(message)) throw err;
        throw new Error(`${message.trimEnd()} The limit is DLOG_QUERY_TIMEOUT_MS (${config.queryTimeoutMs} ms): narrow the query (a time range, a model) or raise it.`, { cause: err });
      });
      const columns = columnsOf(result);
      if (opts.format === 'json') process.stdout.write(formatJsonLines(result.rows, columns));
      else if (opts.format === 'csv') process.stdout.write(formatCsv(result.rows, columns));
      else process.stdout.write(formatTable(result.rows, columns));
      if (result.truncated) process.stderr.write('(result truncated: add a LIMIT or aggregate)\n');
      if (opts.format === 'table') process.stderr.write(`${result.rows.length} row(s) in ${result.elapsedMs} ms\n`);
    });
}
