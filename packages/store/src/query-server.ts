import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Logger } from 'pino';
import { privateFile } from '@dlog/runtime';
import { clickHouseErrorCode } from './errors.js';
import { readOnlyQueryText, ReadOnlySqlError } from './read-only-sql.js';
import type { Store } from './create-store.js';

export const maxResultRows = 100_000;
/**
 * And at most this much JSON text: rows alone did not bound an answer (100,000 rows of 6 KB made
 * a JSON text past V8's string limit, and the failure took down the pipeline owning the store).
 */
export const maxResultBytes = 64 * 1024 * 1024;
/** DLOG_QUERY_TIMEOUT_MS's default: a query runs at most this long in the engine. */
export const defaultQueryTimeoutMs = 110_000;

export interface QueryRequest {
  sql: string;
  params?: Record<string, unknown>;
}

export interface QueryResponse {
  rows: Record<string, unknown>[];
  /**
   * The columns in the engine's order (empty with no rows). A row object cannot keep it:
   * JavaScript lists integer-like keys first, so a column named `1` was printed before `b`.
   */
  columns?: string[];
  truncated: boolean;
  elapsedMs: number;
}

/**
 * The top-level keys of one JSON object's text, in the order written (JSON.parse's object lists
 * integer-like keys first). The text is the engine's own JSONEachRow row, so it is well formed.
 */
export function keysInOrder(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      if (depth === 1) expectKey = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    } else if (c === 0x2c && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/**
 * The token that `dlog query` signs with; kept next to the embedded data, readable by its owner
 * only, one per data directory: one file for every store under a parent (`/tmp/query-token`) let
 * a pipeline answer for another store's directory.
 */
export function queryTokenFile(dataDir: string): string {
  const dir = path.resolve(dataDir);
  return path.join(path.dirname(dir), `${path.basename(dir)}.query-token`);
}

function ensureToken(file: string): string {
  return privateFile(file, () => randomBytes(24).toString('hex')).content;
}

/**
 * The token never crosses the socket: a request carries a fresh nonce and an HMAC, under the
 * token, of the nonce and the body; the answer carries one of the nonce and its own body. Before,
 * `dlog query` sent the token as a bearer header to whatever listened on the port: a local process
 * that took 127.0.0.1:8124 while the pipeline was down got the token, and could answer with forged
 * audit results the CLI printed as they came. Without the token neither side can prove itself.
 */
export function querySignature(token: string | Buffer, direction: 'request' | 'answer', nonce: string, body: string, dataDir: string): string {
  const digest = createHash('sha256').update(body).digest('hex');
  // The data directory is signed too: an answer proves it comes from the store the caller meant,
  // whatever token files were shared or copied.
  return createHmac('sha256', token).update(`dlog-query ${direction}\n${canonicalDir(dataDir)}\n${nonce}\n${digest}`).digest('hex');
}

/** The directory as the file system names it: reached through a symlink (a release directory), the pipeline's path and the CLI's differed. */
function canonicalDir(dataDir: string): string {
  try {
    return realpathSync(dataDir);
  } catch {
    return path.resolve(dataDir);
  }
}

/** How far a request's time may be from the pipeline's clock (one machine: both read the same one). */
const nonceWindowMs = 30_000;

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Runs one analyst query: read-only (checked here, and by the engine's `readonly` setting),
 * parameters bound by ClickHouse, at most `maxResultRows` rows. The engine stops at one row past
 * the limit (the extra row says the answer was cut), and rows are read as a stream, so neither a
 * server's answer nor this process holds a huge result. The engine stops it after `timeoutMs`
 * (whole seconds, rounded up): a runaway query would otherwise run on after its caller gave up,
 * in embedded mode on the engine the sink writes with.
 */
export async function runReadOnlyQuery(store: Store, req: QueryRequest, timeoutMs = defaultQueryTimeoutMs, opts: ReadOptions = {}): Promise<QueryResponse> {
  const { rows, columns, truncated, elapsedMs } = await runReadOnlyQueryText(store, req, timeoutMs);
  const parse = opts.exactIntegers ? parseExactJson : JSON.parse;
  return { rows: rows.map((r) => parse(r) as Record<string, unknown>), columns, truncated, elapsedMs };
}

export interface ReadOptions {
  /**
   * Integers past Number's exact range (±2^53) as bigint, with every digit. The store writes
   * 64-bit integers as bare JSON numbers, so `JSON.parse` printed cityHash64('a') as
   * 2603192927274642400 (it is ...682). For what people read (`dlog query`); the audit commands
   * keep numbers, which they do arithmetic with.
   */
  exactIntegers?: boolean;
}

/**
 * `JSON.parse`, except that an integer literal beyond ±2^53 becomes a bigint of its own digits.
 * Node 20's JSON.parse gives a reviver no source text, so such literals are first rewritten to
 * strings carrying a mark random to this call (no value can hold it by chance), which the reviver
 * turns into bigints.
 */
export function parseExactJson(text: string): unknown {
  // Every integer of 15 digits or fewer is exact: most answers have no run of 16 and take the fast path.
  if (!/\d{16}/.test(text)) return JSON.parse(text);
  const mark = `dlog-exact-integer-${randomBytes(12).toString('hex')}:`;
  const literal = /-?\d+(\.\d+)?([eE][-+]?\d+)?/y;
  let out = '';
  let copied = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // A string: skip to its closing quote, over escaped characters.
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
      continue;
    }
    // Outside strings a '-' or a digit can only start a number.
    if (c !== 0x2d && (c < 0x30 || c > 0x39)) continue;
    literal.lastIndex = i;
    const m = literal.exec(text);
    if (!m) continue;
    if (m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(Number(m[0]))) {
      out += `${text.slice(copied, i)}"${mark}${m[0]}"`;
      copied = i + m[0].length;
    }
    i += m[0].length - 1;
  }
  if (copied === 0) return JSON.parse(text);
  return JSON.parse(out + text.slice(copied), (_key, value: unknown) => (typeof value === 'string' && value.startsWith(mark) ? BigInt(value.slice(mark.length)) : value));
}

/**
 * The same, each row as the engine's own JSON text. The query endpoint sends these as they are:
 * parsed into objects and written out again, a capped answer of tiny values (`[[],[],...]`, 3
 * characters each and some 40 bytes each as objects) took a gigabyte of heap in the process that
 * also runs the sink.
 */
export async function runReadOnlyQueryText(store: Store, req: QueryRequest, timeoutMs = defaultQueryTimeoutMs): Promise<{ rows: string[]; columns: string[]; truncated: boolean; elapsedMs: number }> {
  const query = readOnlyQueryText(req.sql, { readonly: store.mode === 'embedded' ? 1 : 2, limit: maxResultRows + 1, maxSeconds: timeoutMs / 1000 });
  const t0 = Date.now();
  // Decimals as strings: as bare JSON numbers they were read as doubles, and
  // toDecimal128('12345678901234567.89', 2) printed 12345678901234568.
  const run = (text: string) => store.client.query({ query: text, query_params: req.params ?? {}, format: 'JSONEachRow', clickhouse_settings: { output_format_json_quote_decimals: 1 } });
  let rs: Awaited<ReturnType<typeof run>>;
  try {
    rs = await run(query);
  } catch (err) {
    // A server user with readonly = 1 may not set even `limit` (code 164, READONLY): it is
    // read-only already, so the statement runs without settings and the stream below cuts it.
    if (store.mode !== 'server' || clickHouseErrorCode(err) !== 164) throw err;
    rs = await run(readOnlyQueryText(req.sql, 'no settings'));
  }
  const rows: string[] = [];
  let truncated = false;
  let bytes = 0;
  try {
    read: for await (const batch of rs.stream<Record<string, unknown>>()) {
      for (const row of batch) {
        // Bytes as sent (UTF-8), not characters.
        bytes += Buffer.byteLength(row.text) + 1;
        if (rows.length === maxResultRows || bytes > maxResultBytes) {
          truncated = true;
          break read;
        }
        rows.push(row.text);
      }
    }
  } finally {
    rs.close();
  }
  return { rows, columns: rows[0] === undefined ? [] : keysInOrder(rows[0]), truncated, elapsedMs: Date.now() - t0 };
}

/** An answer already written as JSON (rows as the engine wrote them). */
class RawJson {
  constructor(readonly text: string) {}
}

/**
 * In embedded mode only the pipeline's process may open the store, so it answers queries for
 * `dlog query` on loopback: requests and answers are signed with a token from a 0600 file that never crosses the socket.
 */
export async function startQueryServer(opts: { store: Store; port: number; dataDir: string; log: Logger; host?: string; queryTimeoutMs?: number }): Promise<{ close(): Promise<void>; port: number }> {
  const token = Buffer.from(ensureToken(queryTokenFile(opts.dataDir)));
  // A request names its time and a random part; it is good within `nonceWindowMs` of that time,
  // and once. Before, a request a squatter had captured while the pipeline was down was answered
  // by the pipeline later (the set of seen nonces starts empty at every start).
  const seen = new Map<string, number>();
  const fresh = (nonce: string): boolean => {
    const m = /^(\d{13}):[0-9a-f]{32}$/.exec(nonce);
    const at = m ? Number(m[1]) : Number.NaN;
    const now = Date.now();
    if (!(Math.abs(now - at) <= nonceWindowMs) || seen.has(nonce)) return false;
    for (const [n, t] of seen) {
      if (now - t <= 2 * nonceWindowMs) break;
      seen.delete(n);
    }
    seen.set(nonce, now);
    return true;
  };
  // requestTimeout is enforced on this interval (Node's default, 30 s, let a stalled request live
  // 40 s).
  const server = http.createServer({ connectionsCheckingInterval: 1_000 }, (req, res) => {
    // The body is made before the headers go: a body that cannot be made (too large a string)
    // then gets its own error answer, and a failure after the headers ends this response alone.
    // Before, the second writeHead threw in a detached promise and stopped the whole pipeline.
    const send = (status: number, body: unknown) => {
      let text: string;
      try {
        text = body instanceof RawJson ? body.text : JSON.stringify(body);
      } catch (err) {
        opts.log.warn({ err }, 'query answer could not be serialised');
        status = 413;
        text = JSON.stringify({ error: 'the answer is too large to send: select fewer columns or rows, or aggregate' });
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const nonce = String(req.headers['x-dlog-nonce'] ?? '');
      res.writeHead(status, { 'content-type': 'application/json', ...(nonce ? { 'x-dlog-proof': querySignature(token, 'answer', nonce, text, opts.dataDir) } : {}) });
      res.end(text);
    };
    if (req.method === 'GET' && req.url === '/health') return send(200, { status: 'ok', mode: opts.store.mode });
    if (req.method !== 'POST' || req.url !== '/query') return send(404, { error: 'POST /query' });
    const nonce = String(req.headers['x-dlog-nonce'] ?? '');
    const signature = String(req.headers['x-dlog-signature'] ?? '');
    if (!/^\d{13}:[0-9a-f]{32}$/.test(nonce)) return send(401, { error: 'missing or malformed nonce' });
    const chunks: Buffer[] = [];
    let size = 0;
    // A body over the limit is read on and dropped, so the client hears why (cut off mid-send, it
    // heard only that the connection closed); one far over it is cut.
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 16 * maxRequestBytes) req.destroy();
      else if (size <= maxRequestBytes) chunks.push(c);
    });
    req.on('end', () => {
      (async () => {
        if (size > maxRequestBytes) return send(413, { error: requestTooLarge(size) });
        const text = Buffer.concat(chunks).toString('utf8');
        if (!sameHex(signature, querySignature(token, 'request', nonce, text, opts.dataDir))) return send(401, { error: 'wrong signature: dlog query signs with the data directory\'s query-token file beside it, for that directory (check CLICKHOUSE_DATA_DIR)' });
        // Checked and recorded in one step, once the body is in: copies sent side by side all
        // passed a check made when their headers came.
        if (!fresh(nonce)) return send(401, { error: 'a request is good once, within 30 s of its time: check this clock, or ask again' });
        let body: QueryRequest;
        try {
          body = JSON.parse(text) as QueryRequest;
          if (typeof body.sql !== 'string') throw new Error('sql must be a string');
        } catch (err) {
          return send(400, { error: `bad request: ${(err as Error).message}` });
        }
        try {
          const answer = await runReadOnlyQueryText(opts.store, body, opts.queryTimeoutMs);
          send(200, new RawJson(`{"rows":[${answer.rows.join(',')}],"columns":${JSON.stringify(answer.columns)},"truncated":${answer.truncated},"elapsedMs":${answer.elapsedMs}}`));
        } catch (err) {
          if (err instanceof ReadOnlySqlError) return send(400, { error: err.message });
          const code = clickHouseErrorCode(err);
          if (code !== undefined) return send(400, { error: (err as Error).message, code });
          opts.log.error({ err }, 'query failed');
          send(500, { error: 'internal error; see the pipeline log' });
        }
      })().catch((err: unknown) => {
        // Nothing an analyst sends may end the process that owns the store.
        opts.log.error({ err }, 'query request failed');
        res.destroy();
      });
    });
  });
  // A client gets 10 s to send its request (5 s for its headers), and only so many at once: a
  // request that never finishes sending held a connection that a stop then waited on for 300 s,
  // with no token needed.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.maxConnections = 64;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      // Named like the stack's ports: the bare "listen EADDRINUSE" said nothing of the setting.
      if (err.code === 'EADDRINUSE') reject(new QueryEndpointError(`Port ${opts.port} on ${host} is already taken by another process, so the query endpoint cannot start. Stop that process, or pick a free port with DLOG_QUERY_PORT=<port> (for dlog query too).`, 0));
      else reject(err);
    });
    server.listen(opts.port, host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  opts.log.info({ host, port }, 'query endpoint listening');
  return {
    port,
    // Takes no new query from the moment it is called; resolves once those in hand are answered.
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // A query still in the engine is answered (the store must not close under it); what is
        // left once the longest query could have ended (a client not reading its answer) is cut.
        setTimeout(() => server.closeAllConnections(), (opts.queryTimeoutMs ?? defaultQueryTimeoutMs) + 5_000).unref();
      }),
  };
}

/** Largest query request (SQL and bound parameters, as JSON) the endpoint takes. */
export const maxRequestBytes = 1_000_000;

const requestTooLarge = (bytes: number) =>
  `the query request is ${bytes} bytes, over the ${maxRequestBytes} the query endpoint takes: bind fewer or shorter parameters, or send less SQL`;

/** One POST on loopback; node:http, because undici's fetch left a request to a listener that closed the connection unsettled, and the CLI exited 13 without a word. */
function post(port: number, urlPath: string, headers: Record<string, string>, body: string, timeoutMs: number): Promise<{ status: number; proof: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, proof: String(res.headers['x-dlog-proof'] ?? ''), text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    // The timer is the socket's, which keeps the process waiting for it.
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(body);
  });
}

export class QueryEndpointError extends Error {
  constructor(
    message: string,
    readonly status: number,
    /** The engine's error code, when the engine refused the query: the CLI tells its mistakes by code in both modes. */
    readonly code?: number,
  ) {
    super(message);
    this.name = 'QueryEndpointError';
  }
}

/** Asks a running pipeline; undefined when nothing listens (the caller may open the store itself). */
export async function queryViaEndpoint(opts: { port: number; dataDir: string; sql: string; params?: Record<string, unknown>; timeoutMs?: number } & ReadOptions): Promise<QueryResponse | undefined> {
  const file = queryTokenFile(opts.dataDir);
  const token = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
  const nonce = `${Date.now()}:${randomBytes(16).toString('hex')}`;
  // No size check here: with no pipeline listening, the caller opens the store itself, which
  // has no such limit; a pipeline answers a request over it with 413 and what to do.
  const payload = JSON.stringify({ sql: opts.sql, params: opts.params ?? {} });
  let res: { status: number; proof: string; text: string };
  try {
    res = await post(
      opts.port,
      '/query',
      { 'content-type': 'application/json', 'x-dlog-nonce': nonce, 'x-dlog-signature': querySignature(token, 'request', nonce, payload, opts.dataDir) },
      payload,
      // Longer than the engine's own limit, so its error (which names it) comes back first.
      (opts.timeoutMs ?? defaultQueryTimeoutMs) + 10_000,
    );
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ECONNREFUSED') return undefined;
    throw new QueryEndpointError(
      `Asking the pipeline on 127.0.0.1:${opts.port} failed (${code ?? (err as Error).message}): what listens there closed the connection or did not answer. Check DLOG_QUERY_PORT and CLICKHOUSE_DATA_DIR, and what else listens on that port.`,
      0,
    );
  }
  const { text, proof } = res;
  if (!token || !sameHex(proof, querySignature(token, 'answer', nonce, text, opts.dataDir))) {
    throw new QueryEndpointError(
      `What answers on 127.0.0.1:${opts.port} is not the pipeline that owns ${opts.dataDir} (it cannot prove it holds ${file}); its answer is ignored. Check DLOG_QUERY_PORT and CLICKHOUSE_DATA_DIR, and what else listens on that port.`,
      res.status,
    );
  }
  const body = (opts.exactIntegers ? parseExactJson(text) : JSON.parse(text)) as QueryResponse & { error?: string; code?: number };
  if (res.status < 200 || res.status > 299) throw new QueryEndpointError(body.error ?? `HTTP ${res.status}`, res.status, body.code);
  return body;
}
