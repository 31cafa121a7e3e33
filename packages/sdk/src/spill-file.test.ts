import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { SpillFile, type Encoded } from './spill-file.js';

const ev = (seq: number, size = 10): Encoded => ({ seq, key: `trace-${seq % 3}`, value: Buffer.alloc(size, seq % 256) });

describe('SpillFile', () => {
  it('reads back in order what was appended, and truncates once everything is acknowledged', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const spill = new SpillFile(dir);
    spill.append([ev(1), ev(2), ev(3)]);
    spill.append([ev(4, 5000)]);
    const first = spill.readNext(2, 1 << 20);
    assert.deepEqual(first.map((e) => [e.seq, e.key, e.value.length]), [[1, 'trace-1', 10], [2, 'trace-2', 10]]);
    spill.ack(first.reduce((n, e) => n + (e.spillBytes ?? 0), 0));
    const rest = spill.readNext(10, 100); // smaller than the big frame: still read whole
    assert.deepEqual(rest.map((e) => e.seq), [3]);
    const big = spill.readNext(10, 100);
    assert.deepEqual(big.map((e) => [e.seq, e.value.length]), [[4, 5000]]);
    assert.equal(spill.pendingBytes > 0, true);
    spill.ack([...rest, ...big].reduce((n, e) => n + (e.spillBytes ?? 0), 0));
    assert.equal(spill.pendingBytes, 0);
    assert.equal(statSync(spill.logPath).size, 0);
    spill.close();
  });

  it('resumes after a restart from the acknowledged position and drops a torn tail', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    a.append([ev(1), ev(2), ev(3)]);
    const one = a.readNext(1, 1 << 20);
    a.ack(one[0]!.spillBytes!);
    a.readNext(10, 1 << 20); // read but never acknowledged: must come back
    a.close();
    appendFileSync(a.logPath, Buffer.from([5, 0, 0, 0, 9])); // half a frame from a crash
    assert.equal(readFileSync(a.posPath, 'utf8'), String(one[0]!.spillBytes));

    const b = new SpillFile(dir);
    const again = b.readNext(10, 1 << 20);
    assert.deepEqual(again.map((e) => e.value[0]), [2, 3]);
    assert.deepEqual(again.map((e) => e.seq), [-1, -1], 'events of an earlier process are older than any of this one');
    b.append([ev(7)]);
    assert.deepEqual(b.readNext(10, 1 << 20).map((e) => e.seq), [7]);
    b.close();
  });

  it('prepends what is older than the spilled events, keeping the order across a restart', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    a.append([ev(5), ev(6)]);
    a.ack(a.readNext(1, 1 << 20)[0]!.spillBytes!);
    a.prepend([ev(3), ev(4)]);
    a.close();
    const b = new SpillFile(dir);
    assert.deepEqual(b.readNext(10, 1 << 20).map((e) => e.value[0]), [3, 4, 6]);
    b.close();
  });

  it('refuses a directory another live process holds', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    writeFileSync(path.join(dir, 'spill.lock'), String(process.ppid));
    assert.throws(() => new SpillFile(dir), /in use by process/);
  });
});
