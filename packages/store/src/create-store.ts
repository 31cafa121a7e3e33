import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ClickHouseLogLevel, createClient, type ClickHouseClient, type Logger as ClickHouseLogger } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import type { Logger } from 'pino';
import { redactUrl, type Config } from '@dlog/config';

export type StoreMode = 'server' | 'embedded';

export interface StoreOptions {
  /** Server HTTP URL; when unset the store is embedded chDB on `dataDir`. */
  url?: string | undefined;
  username?: string;
  password?: string;
  database: string;
  dataDir: string;
  /** Create the database when missing (migrations do; read-only analysts cannot). */
  createDatabase?: boolean;
  log?: Logger;
  /** Server mode: per-request timeout. */
  requestTimeoutMs?: number;
}

export interface Store {
  readonly mode: StoreMode;
  readonly database: string;
  /** The official client; identical API in both modes, so everything above it is one code path. */
  readonly client: ClickHouseClient;
  /** Where the data lives, for messages: the server URL or the embedded directory. */
  readonly location: string;
  close(): Promise<void>;
}

const identifier = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The client's own log, routed into ours. Its request errors are the errors its calls reject
 * with, which the caller reports with context; logged again at error level they printed a second
 * message with a stack before the CLI's own line. So they go to debug; its warnings (settings it
 * overrode) stay warnings. Without our logger the client says nothing.
 */
function clientLog(log: Logger | undefined): { LoggerClass: new () => ClickHouseLogger; level: ClickHouseLogLevel } {
  if (!log) {
    class Silent implements ClickHouseLogger {
      trace(): void {}
      debug(): void {}
      info(): void {}
      warn(): void {}
      error(): void {}
    }
    return { LoggerClass: Silent, level: ClickHouseLogLevel.OFF };
  }
  const target = log.child({ lib: '@clickhouse/client' });
  class Forward implements ClickHouseLogger {
    trace(p: { module: string; message: string; args?: Record<string, unknown> }): void {
      target.trace({ module: p.module, ...p.args }, p.message);
    }
    debug(p: { module: string; message: string; args?: Record<string, unknown> }): void {
      target.debug({ module: p.module, ...p.args }, p.message);
    }
    info(p: { module: string; message: string; args?: Record<string, unknown> }): void {
      target.debug({ module: p.module, ...p.args }, p.message);
    }
    warn(p: { module: string; message: string; args?: Record<string, unknown>; err?: Error }): void {
      target.warn({ module: p.module, ...p.args, err: p.err }, p.message);
    }
    error(p: { module: string; message: string; args?: Record<string, unknown>; err: Error }): void {
      target.debug({ module: p.module, ...p.args, err: p.err }, p.message);
    }
  }
  return { LoggerClass: Forward, level: ClickHouseLogLevel.WARN };
}

/**
 * The live process that holds an embedded data directory, from the status file the engine keeps
 * in it while open ("PID: 123"; removed on a clean close, left stale by a crash, hence the check
 * that the pid lives), and whether it is a `dlog up`; undefined when none is known.
 */
function embeddedHolder(dataDir: string): { pid: number; up: boolean } | undefined {
  let pid: number;
  try {
    pid = Number(/^PID: (\d+)$/m.exec(readFileSync(path.join(dataDir, 'status'), 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  let up = false;
  try {
    up = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('up');
  } catch {
    // not Linux, or gone: named by pid alone
  }
  return { pid, up };
}

type StoreConfig = Pick<Config, 'clickhouseUrl' | 'clickhouseUser' | 'clickhousePassword' | 'clickhouseDatabase' | 'clickhouseDataDir'>;

/** The store the configuration names: a server when CLICKHOUSE_URL is set, else embedded. */
export function storeFromConfig(config: StoreConfig, opts: { createDatabase?: boolean; log?: Logger; requestTimeoutMs?: number } = {}): Promise<Store> {
  return createStore({
    url: config.clickhouseUrl,
    username: config.clickhouseUser,
    password: config.clickhousePassword,
    database: config.clickhouseDatabase,
    dataDir: config.clickhouseDataDir,
    ...opts,
  });
}

/**
 * The one way to reach ClickHouse. With a URL: `@clickhouse/client` over HTTP to a server. Without:
 * the same client over `createChdbConnection`, an in-process engine on a data directory that only
 * this process may open (ClickHouse locks it), so in embedded mode one process owns the store.
 */
export async function createStore(opts: StoreOptions): Promise<Store> {
  if (!identifier.test(opts.database)) {
    throw new Error(`Invalid ClickHouse database name ${JSON.stringify(opts.database)}: use letters, digits and _`);
  }
  if (opts.url) {
    const url = opts.url;
    // The client reads settings from the URL's query and refuses names it does not know: say which
    // variable holds them, instead of a bare "Unknown URL parameters: password".
    const clientFor = (config: Parameters<typeof createClient>[0]) => {
      try {
        return createClient(config);
      } catch (err) {
        throw new Error(
          `CLICKHOUSE_URL=${redactUrl(url)} is refused by the ClickHouse client: ${(err as Error).message}. ` +
            'Give the server as http(s)://host:port (no path: name the database in CLICKHOUSE_DATABASE); the user and password go in CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (or user:password@ in the URL).',
          { cause: err },
        );
      }
    };
    const client = clientFor({
      url: opts.url,
      username: opts.username ?? 'default',
      password: opts.password ?? '',
      request_timeout: opts.requestTimeoutMs ?? 30_000,
      application: 'decision-log',
      clickhouse_settings: { date_time_output_format: 'iso', output_format_json_quote_64bit_integers: 0 },
      log: clientLog(opts.log),
    });
    if (opts.createDatabase) {
      await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${opts.database}` });
    }
    await client.close();
    const scoped = clientFor({
      url: opts.url,
      username: opts.username ?? 'default',
      password: opts.password ?? '',
      database: opts.database,
      request_timeout: opts.requestTimeoutMs ?? 30_000,
      application: 'decision-log',
      clickhouse_settings: { date_time_output_format: 'iso', output_format_json_quote_64bit_integers: 0 },
      log: clientLog(opts.log),
    });
    opts.log?.debug({ url: redactUrl(opts.url), database: opts.database }, 'clickhouse server store');
    return {
      mode: 'server',
      database: opts.database,
      client: scoped,
      location: redactUrl(opts.url),
      close: () => scoped.close(),
    };
  }

  mkdirSync(opts.dataDir, { recursive: true });
  let client: ClickHouseClient;
  try {
    client = createClient({
      connection: createChdbConnection({ path: opts.dataDir }),
      clickhouse_settings: { date_time_output_format: 'iso', output_format_json_quote_64bit_integers: 0 },
      log: clientLog(opts.log),
    } as Parameters<typeof createClient>[0]);
    // chDB ignores the client's `database` option, so select it on the session; `USE` persists
    // for the life of the embedded connection.
    await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${opts.database}` });
    await client.command({ query: `USE ${opts.database}` });
  } catch (err) {
    const reason = (err as Error).message;
    // A caller that may create the database means to own the store (`dlog up`, `dlog migrate`), not
    // to read it as `dlog query` does after finding no pipeline on DLOG_QUERY_PORT: a second
    // `dlog up` was told that no pipeline answered, beside a first one that did. chDB's error says
    // only "Failed to create connection"; the engine's status file names the process holding it.
    const holder = opts.createDatabase ? embeddedHolder(opts.dataDir) : undefined;
    if (holder) {
      throw new Error(
        `Cannot open embedded ClickHouse at ${opts.dataDir}: ${holder.up ? `another \`dlog up\` (pid ${holder.pid})` : `another process (pid ${holder.pid})`} already owns this data directory, and only one process at a time may open it. ` +
          `Stop it first (Ctrl-C in its terminal, or kill ${holder.pid}), or leave it running and query through it: \`npm run dlog -- query "..."\` reaches it on DLOG_QUERY_PORT. ` +
          `To run a second pipeline beside it, give this one its own CLICKHOUSE_DATA_DIR and DLOG_QUERY_PORT, or set CLICKHOUSE_URL to use a server. (${reason.trim()})`,
        { cause: err },
      );
    }
    throw new Error(
      `Cannot open embedded ClickHouse at ${opts.dataDir}: ${reason}. ` +
        'Only one process may open an embedded data directory; if the pipeline is running, query it through `dlog query` ' +
        '(which found no pipeline answering on DLOG_QUERY_PORT: give it the port the pipeline was started with), or set CLICKHOUSE_URL to use a server.',
      { cause: err },
    );
  }
  opts.log?.debug({ dataDir: opts.dataDir, database: opts.database }, 'embedded clickhouse store');
  return {
    mode: 'embedded',
    database: opts.database,
    client,
    location: opts.dataDir,
    close: () => client.close(),
  };
}
