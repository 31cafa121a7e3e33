import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';

/**
 * The CLI's own process, for what only shows there: its exit code and every line on stderr. The
 * services it would talk to are pointed at closed local ports (nothing listens on port 1), so
 * these need nothing running.
 */
const main = path.join(import.meta.dirname, 'main.ts');
const closed = { CLICKHOUSE_URL: 'http://analyst:pw-not-to-print@127.0.0.1:1', KAFKA_BROKERS: '127.0.0.1:1' };

function dlog(args: string[], env: Record<string, string> = closed): { status: number | null; stderr: string; stdout: string; ms: number } {
  const { LOG_LEVEL: _ignored, ...rest } = process.env;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...rest, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout, ms: Date.now() - t0 };
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
    assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
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
});
