import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createStore } from './create-store.js';

const root = path.resolve(import.meta.dirname, '../../..');

/**
 * Another process holding the embedded store on `dataDir` until `release()`, as a running `dlog up`
 * does; `up` as its last argument, as on `dlog up`'s command line.
 */
async function heldElsewhere(dataDir: string): Promise<{ pid: number; release: () => Promise<void> }> {
  const code = `
    import { createStore } from '@dlog/store';
    const store = await createStore({ database: 'dlog', dataDir: ${JSON.stringify(dataDir)}, createDatabase: true });
    console.log('holding');
    process.stdin.resume();
    process.stdin.on('end', () => void store.close().then(() => process.exit(0)));`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, 'up'], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('holding')) resolve();
    });
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    void exited.then((c) => reject(new Error(`the holder exited (${c}) before it held the store: ${out}`)));
  });
  return {
    pid: child.pid!,
    release: async () => {
      child.stdin.end();
      await exited;
    },
  };
}

describe('embedded store', () => {
  it('tells a second owner of the data directory that another dlog up owns it, and a reader what it was told before', async () => {
    // A second `dlog up` on the same directory was told it "found no pipeline answering on
    // DLOG_QUERY_PORT", beside a first `dlog up` that was answering.
    const dataDir = path.join(mkdtempSync(path.join(tmpdir(), 'dlog-store-owned-')), 'clickhouse');
    const holder = await heldElsewhere(dataDir);
    try {
      await assert.rejects(createStore({ database: 'dlog', dataDir, createDatabase: true }), (err: Error) => {
        assert.match(err.message, new RegExp(`^Cannot open embedded ClickHouse at ${dataDir}: another \`dlog up\` \\(pid ${holder.pid}\\) already owns this data directory`));
        assert.match(err.message, new RegExp(`Stop it first \\(Ctrl-C in its terminal, or kill ${holder.pid}\\), or leave it running and query through it`));
        assert.doesNotMatch(err.message, /found no pipeline answering/);
        return true;
      });
      // `dlog query` opens the store only after no pipeline answered on DLOG_QUERY_PORT: its message stays.
      await assert.rejects(createStore({ database: 'dlog', dataDir }), /which found no pipeline answering on DLOG_QUERY_PORT: give it the port the pipeline was started with/);
    } finally {
      await holder.release();
    }
  });
});
