import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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
});
