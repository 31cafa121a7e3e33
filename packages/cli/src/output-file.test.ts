import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { OutputFile } from './output-file.js';

/** Fails instead of hanging: a close that never settles made every `--out` command exit 13. */
function within<T>(p: Promise<T>, what: string, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

describe('OutputFile', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'dlog-out-'));

  it('writes, then closes and settles, replacing what the file held', async () => {
    const file = path.join(dir, 'scope.csv');
    writeFileSync(file, 'old content that is longer than the new one\n');
    const f = await OutputFile.open(file);
    const write = await f.writer();
    await write('a,b\n');
    await write('1,2\n');
    await within(f.close(), 'close()');
    assert.equal(readFileSync(file, 'utf8'), 'a,b\n1,2\n');
  });

  it('closes a file nothing was written to, and discards one it created, with or without a writer', async () => {
    const kept = path.join(dir, 'kept.txt');
    await within((await OutputFile.open(kept)).close(), 'close() without a writer');
    assert.ok(existsSync(kept));
    const gone = path.join(dir, 'gone.txt');
    await within((await OutputFile.open(gone)).discard(), 'discard()');
    assert.ok(!existsSync(gone));
    const gone2 = path.join(dir, 'gone2.txt');
    const f = await OutputFile.open(gone2);
    await f.writer();
    await within(f.discard(), 'discard() after writer()');
    assert.ok(!existsSync(gone2));
  });

  it('leaves the file it would replace as it was when the export fails after some pages, and no temporary file', async () => {
    const sub = mkdtempSync(path.join(dir, 'fail-'));
    const file = path.join(sub, 'scope.csv');
    writeFileSync(file, 'yesterday,complete\n');
    const f = await OutputFile.open(file);
    const write = await f.writer();
    await write('event_id,request_id\n');
    await write('e1,r1\n'.repeat(50_000)); // past one chunk: some of it is on disk already
    assert.equal(readFileSync(file, 'utf8'), 'yesterday,complete\n', 'nothing reaches the file before close()');
    await within(f.discard(), 'discard()'); // a later page's query failed
    assert.equal(readFileSync(file, 'utf8'), 'yesterday,complete\n');
    assert.deepEqual(readdirSync(sub), ['scope.csv']);
  });

  it('keeps the mode of the file it replaces, writes through a symbolic link, and writes a device directly', async () => {
    const sub = mkdtempSync(path.join(dir, 'keep-'));
    const real = path.join(sub, 'real.csv');
    writeFileSync(real, 'old\n');
    chmodSync(real, 0o640);
    const link = path.join(sub, 'link.csv');
    symlinkSync('real.csv', link);
    const f = await OutputFile.open(link);
    await (await f.writer())('new\n');
    await within(f.close(), 'close()');
    assert.ok(lstatSync(link).isSymbolicLink(), 'the link is still a link');
    assert.equal(readFileSync(real, 'utf8'), 'new\n');
    assert.equal(statSync(real).mode & 0o777, 0o640);
    assert.deepEqual(readdirSync(sub).sort(), ['link.csv', 'real.csv']);
    // Renamed over, /dev/null would have been replaced by a file; truncated, it failed (EINVAL).
    const nul = await OutputFile.open('/dev/null');
    await (await nul.writer())('x\n');
    await within(nul.close(), 'close() of /dev/null');
    assert.ok(statSync('/dev/null').isCharacterDevice());
  });

  it('says which option names a directory or a missing directory', async () => {
    await assert.rejects(OutputFile.open(dir, '--out'), { message: `cannot write --out ${dir}: it is a directory (EISDIR)` });
    const missing = path.join(dir, 'no-such-dir', 'x.csv');
    await assert.rejects(OutputFile.open(missing, '--out'), { message: `cannot write --out ${missing}: its directory does not exist (ENOENT)` });
  });

  it('Ctrl-C or a kill mid-export: ends by that signal (130 / 143 in a shell), the file as it was, the temporary file removed', async () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const sub = mkdtempSync(path.join(dir, 'signal-'));
      const file = path.join(sub, 'scope.csv');
      writeFileSync(file, 'yesterday,complete\n');
      const script = [
        `import { OutputFile } from ${JSON.stringify(path.join(import.meta.dirname, 'output-file.ts'))};`,
        `const f = await OutputFile.open(${JSON.stringify(file)});`,
        'const write = await f.writer();',
        "await write('e1,r1\\n'.repeat(50_000));",
        "process.stdout.write('written\\n');",
        'setInterval(() => undefined, 1000);',
      ].join('\n');
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = once(child, 'exit');
      let ended: [number | null, string | null];
      try {
        await within(once(child.stdout, 'data'), 'the export to start', 20_000);
        assert.equal(readdirSync(sub).length, 2, 'a temporary file beside the file while it is written');
        child.kill(signal);
        ended = (await within(exited, 'the process to end')) as [number | null, string | null];
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
      assert.deepEqual({ status: ended[0], killedBy: ended[1] }, { status: null, killedBy: signal });
      assert.equal(readFileSync(file, 'utf8'), 'yesterday,complete\n');
      assert.deepEqual(readdirSync(sub), ['scope.csv']);
    }
  });
});
