import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { chmodSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from './logger.js';
import { privateFile, PrivateFileError } from './private-file.js';
import { backoffDelay, retry, RetriableError } from './retry.js';
import { Shutdown } from './shutdown.js';
import { waitFor } from './wait-for.js';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { stream, lines: () => chunks.join('').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('logger', () => {
  it('redacts secrets wherever they are logged', () => {
    const out = capture();
    const log = createLogger({ name: 't', destination: out.stream });
    log.info({ password: 'pw1', config: { clickhousePassword: 'pw2', piiKeys: 'k2:c2VjcmV0', schemaRegistryPassword: 'pw4' }, kafka: { sasl: { password: 'pw3' } }, key: 'k1' }, 'hello');
    log.info({ piiKeys: 'k3:c2VjcmV0', req: { options: { headers: { Authorization: 'Bearer t1' } } }, res: { headers: { Authorization: 'Basic t2' } } }, 'again');
    const text = JSON.stringify(out.lines());
    for (const secret of ['pw1', 'pw2', 'pw3', 'pw4', 'k1', 'k2:', 'k3:', 't1', 't2']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
    assert.equal(out.lines()[0]?.msg, 'hello');
    assert.equal(out.lines()[0]?.level, 'info');
  });
});

describe('Shutdown', () => {
  const quiet = createLogger({ name: 't', level: 'silent' });

  it('runs steps in order, continues after a failure and reports it', async () => {
    const order: string[] = [];
    let exitCode = -1;
    const s = new Shutdown(quiet, 1_000, (c) => (exitCode = c));
    s.add('stop fetching', () => void order.push('stop'));
    s.add('flush', async () => {
      order.push('flush');
      throw new Error('boom');
    });
    s.add('disconnect', () => void order.push('disconnect'));
    assert.equal(await s.run(0), 1);
    assert.deepEqual(order, ['stop', 'flush', 'disconnect']);
    assert.equal(exitCode, 1);
  });

  it('gives up at the hard limit with a non-zero code', async () => {
    const s = new Shutdown(quiet, 50, () => {});
    s.add('hang', () => new Promise(() => {}));
    assert.equal(await s.run(0), 1);
  });

  it('a signal starts it; the same Ctrl-C arriving twice at once does not force an exit, a later second signal does', async () => {
    const codes: number[] = [];
    const s = new Shutdown(quiet, 5_000, (c) => void codes.push(c));
    let release!: () => void;
    s.add('slow flush', () => new Promise<void>((r) => (release = r)));
    const signals = new EventEmitter();
    s.install(signals, 200);
    signals.emit('SIGHUP', 'SIGHUP');
    assert.equal(s.started, true, 'SIGHUP starts the shutdown');
    signals.emit('SIGINT', 'SIGINT');
    assert.deepEqual(codes, [], 'a repeat within the window is the same request');
    await new Promise((r) => setTimeout(r, 250));
    signals.emit('SIGINT', 'SIGINT');
    assert.deepEqual(codes, [130], 'a second signal after the window forces the exit');
    release();
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(codes, [130, 0]);
  });

  it('runs once even when asked twice', async () => {
    let runs = 0;
    const s = new Shutdown(quiet, 1_000, () => {});
    s.add('count', () => void runs++);
    await Promise.all([s.run(0), s.run(0)]);
    assert.equal(runs, 1);
  });
});

describe('retry', () => {
  it('retries retriable errors and stops on others', async () => {
    let calls = 0;
    const value = await retry(
      async () => {
        if (++calls < 3) throw new RetriableError('later');
        return 'ok';
      },
      { attempts: 5, initialMs: 1, maxMs: 2 },
    );
    assert.equal(value, 'ok');
    assert.equal(calls, 3);

    let fatal = 0;
    await assert.rejects(
      retry(
        async () => {
          fatal++;
          throw new TypeError('bug');
        },
        { attempts: 5, initialMs: 1, maxMs: 2, retryOn: () => true },
      ),
      TypeError,
    );
    assert.equal(fatal, 1, 'programmer errors are not retried');
  });

  it('backs off exponentially with jitter, capped', () => {
    assert.equal(backoffDelay(0, 100, 10_000, () => 0), 50);
    assert.equal(backoffDelay(3, 100, 10_000, () => 1), 800);
    assert.equal(backoffDelay(20, 100, 10_000, () => 1), 10_000);
  });
});

describe('waitFor', () => {
  it('returns the first truthy value, or times out naming what it waited for', async () => {
    let n = 0;
    assert.equal(await waitFor(() => (++n >= 3 ? n : undefined), { timeoutMs: 1_000, intervalMs: 1, what: 'n' }), 3);
    await assert.rejects(waitFor(() => false, { timeoutMs: 20, intervalMs: 5, what: 'the moon' }), /waiting for the moon/);
  });

  it('gives up on a check that never answers, at the deadline, saying so', async () => {
    // On the old code this never settled.
    await assert.rejects(
      waitFor(() => new Promise<number>(() => undefined), { timeoutMs: 50, intervalMs: 5, what: 'a stuck query' }),
      /waiting for a stuck query: the check itself did not answer/,
    );
  });

  it('keeps the last error of a check that failed before one hung', async () => {
    let n = 0;
    const err = await waitFor(
      () => (++n === 1 ? Promise.reject(new Error('connection refused')) : new Promise<number>(() => undefined)),
      // Long enough that the rejected first check is always seen before the deadline.
      { timeoutMs: 500, intervalMs: 1, what: 'the store' },
    ).catch((e: Error) => e);
    assert.match((err as Error).message, /did not answer/);
    assert.match(((err as Error).cause as Error).message, /connection refused/);
  });
});

describe('privateFile', () => {
  it('makes a missing secret file mode 600 in a 700 directory, then reads the same content back', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'dlog-private-')), 'sub', 'token');
    const made = privateFile(file, () => 'secret-1\n');
    assert.deepEqual(made, { content: 'secret-1', created: true });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.deepEqual(privateFile(file, () => 'other'), { content: 'secret-1', created: false });
  });

  it('refuses a file others can read or write, or a link, instead of trusting a planted secret', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-private-'));
    const planted = path.join(dir, 'query-token');
    writeFileSync(planted, 'planted-by-someone-else');
    chmodSync(planted, 0o644);
    assert.throws(() => privateFile(planted, () => 'x'), (err: unknown) => err instanceof PrivateFileError && /mode 644/.test(err.message) && err.message.includes(planted));
    assert.equal(readFileSync(planted, 'utf8'), 'planted-by-someone-else', 'left as it was');
    const target = path.join(dir, 'elsewhere');
    writeFileSync(target, 'k', { mode: 0o600 });
    const link = path.join(dir, 'pii-keys');
    symlinkSync(target, link);
    assert.throws(() => privateFile(link, () => 'x'), /not a regular file/);
  });
});
