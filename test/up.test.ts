import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { freePort, tempDir, unique, waitFor } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');

describe('dlog up and dlog query', () => {
  it('runs the pipeline in the foreground, answers dlog query from the store it owns, and stops cleanly', async () => {
    const env = {
      ...process.env,
      DLOG_TOPIC_PREFIX: `${unique('up')}.`,
      CLICKHOUSE_DATA_DIR: path.join(tempDir('up'), 'clickhouse'),
      DLOG_QUERY_PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
    };
    const up = spawn(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', 'up', '--no-stack', '--status-every', '0'], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    up.stdout.on('data', (c: Buffer) => (out += c.toString()));
    up.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)));
    const dlog = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', ...args], { cwd: root, env, encoding: 'utf8' });
    try {
      await waitFor(() => out.includes('decision-log is running'), { timeoutMs: 120_000, what: `dlog up to start; output so far:\n${out}` });

      const simulated = dlog('simulate', '-n', '400', '--bad-share', '0');
      assert.equal(simulated.status, 0, simulated.stderr);
      // The store is locked by `dlog up`; the answer comes through its loopback endpoint.
      await waitFor(
        () => {
          const r = dlog('query', 'SELECT count() AS n FROM v_decision_totals', '-f', 'json');
          return r.status === 0 && Number((JSON.parse(r.stdout.trim() || '{"n":0}') as { n: number }).n) > 0;
        },
        { timeoutMs: 60_000, intervalMs: 1_000, what: 'decisions to be queryable through dlog query' },
      );
      const bound = dlog('query', 'SELECT {m:String} AS m, count() > 0 AS any FROM v_decisions WHERE model_name = {m:String}', '-p', 'm=loan-approver', '-f', 'json');
      assert.equal(bound.status, 0, bound.stderr);
      assert.deepEqual(JSON.parse(bound.stdout.trim()), { m: 'loan-approver', any: 1 });

      const write = dlog('query', 'DROP TABLE decisions');
      assert.equal(write.status, 1);
      assert.match(write.stderr, /Only reads are allowed here/);
      const typo = dlog('query', 'SELECT count() FROM decisons');
      assert.equal(typo.status, 1);
      assert.match(typo.stderr, /decisons/);
    } finally {
      up.kill('SIGINT');
    }
    assert.equal(await exited, 0, `dlog up exits 0 on Ctrl-C; output:\n${out.slice(-2000)}`);
  });

  it('names DLOG_QUERY_PORT when that port is taken, before any worker starts', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const env = {
        ...process.env,
        DLOG_TOPIC_PREFIX: `${unique('up-port')}.`,
        CLICKHOUSE_DATA_DIR: path.join(tempDir('up-port'), 'clickhouse'),
        DLOG_QUERY_PORT: String(port),
        LOG_LEVEL: 'warn',
      };
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', 'up', '--no-stack', '--status-every', '0'], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`Port ${port} on 127\\.0\\.0\\.1 is already taken.*DLOG_QUERY_PORT=<port>`));
      assert.doesNotMatch(r.stdout + r.stderr, /decision-log is running/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
