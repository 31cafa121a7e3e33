import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { createStore, migrate } from '@dlog/store';

/**
 * The CLI's own process, for what only shows there: its exit code and every line on stderr. The
 * services it would talk to are pointed at closed local ports (nothing listens on port 1), so
 * these need nothing running.
 */
const main = path.join(import.meta.dirname, 'main.ts');
const closed = { CLICKHOUSE_URL: 'http://analyst:pw-not-to-print@127.0.0.1:1', KAFKA_BROKERS: '127.0.0.1:1' };

/** This process's environment without LOG_LEVEL, with `env` over it; '' unsets a variable. */
function envWith(env: Record<string, string>): Record<string, string> {
  const { LOG_LEVEL: _ignored, ...rest } = process.env;
  return Object.fromEntries(Object.entries({ ...rest, ...env }).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''));
}

function dlog(args: string[], env: Record<string, string> = closed): { status: number | null; stderr: string; stdout: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', main, ...args], { env: envWith(env), encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout, ms: Date.now() - t0 };
}

/** `dlog <args> | head -<lines>`, with the exit status of dlog (pipefail). */
function dlogIntoHead(args: string[], lines: number, env: Record<string, string>): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync('bash', ['-c', `set -o pipefail; "$@" | head -${lines}`, 'dlog', process.execPath, '--import', 'tsx', main, ...args], {
    env: envWith(env),
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

/** A port nothing listens on: `dlog query` finds no pipeline there and opens the store itself. */
async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One line, no stack trace, no library log lines. */
function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${stderr}`);
  assert.doesNotMatch(stderr, /^\s+at /m);
  return lines[0]!;
}

describe('dlog when a service cannot be reached', () => {
  it('query and scope say the ClickHouse server cannot be reached, never that migrations are missing', () => {
    for (const args of [['query', 'select 1'], ['scope', '--model', 'loan-approver:2.5.0']]) {
      const r = dlog(args);
      assert.equal(r.status, 1, r.stderr);
      const line = oneLine(r.stderr);
      assert.match(line, /^dlog: Cannot reach the ClickHouse server at http:\/\/analyst:\*\*\*@127\.0\.0\.1:1 \(CLICKHOUSE_URL\): .*ECONNREFUSED/);
      assert.doesNotMatch(line, /migration/);
      assert.doesNotMatch(r.stderr, /pw-not-to-print/);
    }
  });

  it('register fails within seconds, quietly, and says to check KAFKA_BROKERS and the stack', () => {
    const r = dlog(['register', path.join(import.meta.dirname, '../../../infra/examples/artifacts.yaml')]);
    assert.equal(r.status, 1, r.stderr);
    const line = oneLine(r.stderr);
    assert.match(line, /^dlog: Cannot reach Kafka at 127\.0\.0\.1:1 \(KAFKA_BROKERS\): .*Check KAFKA_BROKERS.*dlog -- stack status/);
    // kafkajs's default retries took ~33 s; a cold tsx start on a loaded machine takes up to ~6 s.
    assert.ok(r.ms < 25_000, `took ${r.ms} ms`);
  });
});

describe('dlog option mistakes', () => {
  it('scope --out to a directory that does not exist: one line naming the option, nothing crashes', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-cli-'));
    const out = path.join(dir, 'missing', 'x.csv');
    const r = dlog(['scope', '--model', 'loan-approver:2.5.0', '--export', 'csv', '--out', out]);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(oneLine(r.stderr), `dlog: cannot write --out ${out}: its directory does not exist (ENOENT)`);
    assert.equal(existsSync(out), false);
  });

  it('time options: an impossible date, and diff with --since after --until', () => {
    const bad = dlog(['scope', '--model', 'loan-approver:2.5.0', '--since', '2026-02-30']);
    assert.equal(bad.status, 1);
    assert.match(oneLine(bad.stderr), /^dlog: --since names a day that does not exist .* e\.g\. --since 2h\.$/);
    const swapped = dlog(['diff', '--model', 'loan-approver:2.4.1', '--vs', '2.5.0', '--since', '1h', '--until', '2h']);
    assert.equal(swapped.status, 1);
    assert.match(oneLine(swapped.stderr), /^dlog: --since \(1h\) must be before --until \(2h\); swap them, e\.g\. --since 2h --until 1h/);
  });

  it('diff --vs reads a version with a colon as a version of --model\'s model, as --model does', () => {
    // eu:2 is fraud's version eu:2 (read before as a model named eu): the same version twice.
    const same = dlog(['diff', '--model', 'fraud:eu:2', '--vs', 'eu:2']);
    assert.equal(same.status, 1);
    assert.match(oneLine(same.stderr), /^dlog: --model and --vs name the same version \(eu:2\)/);
  });
});

/**
 * The CLI on an embedded store of its own (a temporary directory, migrated and filled here, then
 * closed: one process at a time may open it), with no pipeline answering on DLOG_QUERY_PORT.
 */
describe('dlog on an embedded store', () => {
  let env: Record<string, string>;

  before(async () => {
    const dataDir = path.join(mkdtempSync(path.join(tmpdir(), 'dlog-cli-store-')), 'clickhouse');
    const store = await createStore({ database: 'dlog', dataDir });
    try {
      await migrate(store);
      // 5,000 stored and counted decisions: an export of some 700 KB, more than a pipe holds.
      await store.client.command({
        query: `INSERT INTO decisions (event_id, request_id, ts, endpoint, decision_type, model_name, model_version, input_hash, decision, confidence, tier, sample_rate, policy_version, resolved, source_partition, source_offset, gate_ts, enriched_at, step)
          SELECT concat('ev-', leftPad(toString(number), 8, '0')), concat('req-', toString(number)), toDateTime64('2026-11-27 06:00:00', 3, 'UTC') + toIntervalMillisecond(number * 10),
                 'rec-api', 'recommendation', 'item-recommender', '7.1.0', concat('sha256-', hex(SHA256(toString(number)))), concat('item-', toString(number % 7)), 0.5, 'standard', 1, 'p1', true, 0, number, now64(3), now64(3), number % 3
          FROM numbers(5000)`,
      });
      await store.client.command({
        query: `INSERT INTO decision_counts (minute, model_name, model_version, endpoint, decision_type, tier, decision, policy_version, kept, dropped, batch_id, row_key)
          SELECT toStartOfMinute(toDateTime64('2026-11-27 06:00:00', 3, 'UTC') + toIntervalMillisecond(number * 10)), 'item-recommender', '7.1.0', 'rec-api', 'recommendation', 'standard',
                 concat('item-', toString(number % 7)), 'p1', 1, 0, 'b', concat('k', toString(number))
          FROM numbers(5000)`,
      });
    } finally {
      await store.close();
    }
    env = { CLICKHOUSE_DATA_DIR: dataDir, DLOG_QUERY_PORT: String(await unusedPort()), CLICKHOUSE_URL: '', KAFKA_BROKERS: '127.0.0.1:1' };
  });

  it('query prints 64-bit integers with every digit, as a table, CSV and JSON, and other numbers as before', () => {
    const sql = "SELECT cityHash64('a') AS h, toInt64(9007199254740993) AS i, [toUInt64(18446744073709551615)] AS a, 1.5 AS f, count() AS n FROM numbers(2)";
    const table = dlog(['query', sql], env);
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout.split('\n')[2]!, /^2603192927274642682 +9007199254740993 +\[18446744073709551615\] +1\.5 +2$/);
    const csv = dlog(['query', sql, '-f', 'csv'], env);
    assert.equal(csv.stdout, 'h,i,a,f,n\n2603192927274642682,9007199254740993,[18446744073709551615],1.5,2\n');
    const json = dlog(['query', sql, '-f', 'json'], env);
    assert.equal(json.stdout, '{"h":2603192927274642682,"i":9007199254740993,"a":[18446744073709551615],"f":1.5,"n":2}\n');
  });

  it('query and scope piped into head: exit 0, nothing on stderr about the closed pipe', () => {
    const query = dlogIntoHead(['query', 'SELECT number, toString(number) AS s FROM numbers(100000)', '-f', 'csv'], 2, env);
    assert.equal(query.stdout, 'number,s\n0,0\n');
    assert.equal(query.status, 0, query.stderr);
    assert.doesNotMatch(query.stderr, /EPIPE|^\s+at /m);
    const scope = dlogIntoHead(['scope', '--model', 'item-recommender:7.1.0', '--export', 'csv'], 2, env);
    assert.equal(scope.stdout.split('\n').length, 3, scope.stdout);
    assert.equal(scope.status, 0, scope.stderr);
    assert.doesNotMatch(scope.stderr, /EPIPE|^\s+at /m);
  });

  it('says what to type: a placeholder without -p, a --where number out of range; a float filter past 2^53 runs', () => {
    const unbound = dlog(['query', 'SELECT {x:String} AS x'], env);
    assert.equal(unbound.status, 1);
    assert.match(oneLine(unbound.stderr), /^dlog: Substitution `x` is not set\..* -p x=<value>/);
    const range = dlog(['scope', '--model', 'item-recommender:7.1.0', '--where', 'step=1e20'], env);
    assert.equal(range.status, 1);
    assert.equal(oneLine(range.stderr), 'dlog: 100000000000000000000 is out of range for step: it takes whole numbers from -9007199254740991 to 9007199254740991.');
    const float = dlog(['scope', '--model', 'item-recommender:7.1.0', '--where', 'confidence<1e20', '--json'], env);
    assert.equal(float.status, 0, float.stderr);
    assert.equal(float.stderr, '');
  });
});
