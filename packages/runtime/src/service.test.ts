import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const fixture = fileURLToPath(new URL('./fixtures/supervised.ts', import.meta.url));

describe('startService under a supervisor', () => {
  it('shuts down cleanly when the supervising process goes away, instead of running on orphaned', async () => {
    const child = fork(fixture, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, LOG_LEVEL: 'warn' } });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fixture not ready: ${out}`)), 30_000);
      child.on('message', (m: { type?: string }) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    // What the channel sees when the supervisor dies.
    child.disconnect();
    const code = await Promise.race([exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 20_000))]);
    if (code === 'still running') child.kill('SIGKILL');
    assert.equal(code, 0, out);
    assert.match(out, /shutdown steps ran/);
    assert.match(out, /supervising process went away/);
  });
});
