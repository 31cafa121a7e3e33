import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { spawn } from 'node:child_process';
import os from 'node:os';
import { describe, it } from 'node:test';
import { threadId, Worker } from 'node:worker_threads';
import { SpillFile, spillFrameBytes, type Encoded, type SpillLog } from './spill-file.js';

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

  it('keeps its files (raw inputs) readable by the process user alone, also a log an earlier version left readable by all', () => {
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'dlog-spill-')), 'spill');
    const first = new SpillFile(dir);
    first.append([ev(1), ev(2)]);
    first.ack(first.readNext(1, 1 << 20).reduce((n, e) => n + (e.spillBytes ?? 0), 0));
    first.close();
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    for (const f of readdirSync(dir)) assert.equal(statSync(path.join(dir, f)).mode & 0o077, 0, `${f} is mode ${(statSync(path.join(dir, f)).mode & 0o777).toString(8)}`);
    chmodSync(path.join(dir, 'spill.log'), 0o644);
    new SpillFile(dir).close();
    assert.equal(statSync(path.join(dir, 'spill.log')).mode & 0o777, 0o600);
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

/** Collects what the spill file logs, to check that a cut or a move is never silent. */
function recordingLog() {
  const lines: { level: 'warn' | 'error'; obj: Record<string, unknown>; msg: string }[] = [];
  const log = {
    warn: (obj: Record<string, unknown>, msg: string) => void lines.push({ level: 'warn', obj, msg }),
    error: (obj: Record<string, unknown>, msg: string) => void lines.push({ level: 'error', obj, msg }),
  } as unknown as SpillLog;
  return { log, lines };
}

const bytesOf = (events: Encoded[]) => events.reduce((n, e) => n + (e.spillBytes ?? 0), 0);

describe('SpillFile when the disk fills mid-write', () => {
  it('cuts off a frame written in part, so what follows is read back and survives a restart', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const spill = new SpillFile(dir);
    spill.append([ev(1, 100)]);
    const real = fs.writeSync;
    let calls = 0;
    // One short write (the disk filling), then no space at all.
    (fs as unknown as { writeSync: unknown }).writeSync = (fd: number, buf: Buffer, off: number, len: number, pos: number) => {
      if (calls++ === 0) return real(fd, buf, off, Math.min(len, 40), pos);
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    };
    syncBuiltinESMExports();
    try {
      assert.throws(() => spill.append([ev(2, 100), ev(3, 100)]), /ENOSPC/);
    } finally {
      (fs as unknown as { writeSync: unknown }).writeSync = real;
      syncBuiltinESMExports();
    }
    spill.append([ev(4, 100), ev(5, 100)]);
    assert.equal(statSync(spill.logPath).size, spill.pendingBytes, 'the file holds exactly the frames counted');
    assert.deepEqual(spill.readNext(10, 1 << 20).map((e) => e.seq), [1, 4, 5]);
    spill.close();
    const again = new SpillFile(dir);
    assert.deepEqual(again.readNext(10, 1 << 20).map((e) => e.value[0]), [1, 4, 5], 'nothing set aside as damaged after a restart');
    again.close();
  });
});

describe('SpillFile after a crash or damage', () => {
  it('a position that points into the middle of a frame (crash around a prepend) replays the whole file instead of cutting it', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    a.append([1, 2, 3, 4, 5].map((n) => ev(n, 100)));
    a.ack(bytesOf(a.readNext(2, 1 << 20)));
    const stalePosition = readFileSync(a.posPath, 'utf8');
    a.prepend([ev(10, 90), ev(11, 90), ev(12, 90)]); // other sizes: the old position falls inside a frame
    a.close();
    const size = statSync(a.logPath).size;
    // What a crash between the rename and the position write used to leave: the old position.
    writeFileSync(a.posPath, stalePosition);

    const { log, lines } = recordingLog();
    const b = new SpillFile(dir, log);
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [10, 11, 12, 3, 4, 5]);
    assert.equal(statSync(b.logPath).size, size, 'nothing cut');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!.msg, /replaying the spill file from its start/);
    b.close();
  });

  it('moves damaged bytes aside (logging the byte counts) and keeps the intact frames before them', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    a.append([ev(1, 50), ev(2, 50), ev(3, 50)]);
    a.close();
    const bytes = readFileSync(a.logPath);
    const frame = bytes.length / 3;
    bytes[frame + frame - 10] = bytes[frame + frame - 10]! ^ 0xff; // inside the second frame's value
    writeFileSync(a.logPath, bytes);

    const { log, lines } = recordingLog();
    const b = new SpillFile(dir, log);
    assert.deepEqual(b.readNext(10, 1 << 20).map((e) => e.value[0]), [1]);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.level, 'error');
    assert.equal(lines[0]!.obj.offset, frame);
    assert.equal(lines[0]!.obj.movedBytes, 2 * frame);
    const aside = readdirSync(dir).filter((f) => f.startsWith('spill.log.damaged-'));
    assert.equal(aside.length, 1);
    assert.deepEqual(readFileSync(path.join(dir, aside[0]!)), bytes.subarray(frame), 'the damaged bytes are kept');
    b.close();
  });

  it('cuts a torn last frame with a log line that gives the byte counts', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    a.append([ev(1), ev(2)]);
    a.close();
    const whole = readFileSync(a.logPath);
    const frame = whole.length / 2;
    writeFileSync(a.logPath, whole.subarray(0, whole.length - 3)); // the second frame half written
    const { log, lines } = recordingLog();
    const b = new SpillFile(dir, log);
    assert.deepEqual(b.readNext(10, 1 << 20).map((e) => e.value[0]), [1]);
    assert.equal(statSync(b.logPath).size, frame);
    assert.equal(lines.length, 1);
    assert.deepEqual([lines[0]!.level, lines[0]!.obj.droppedBytes], ['warn', frame - 3]);
    b.close();
  });

  it('keeps the unknown-outcome flag of a frame, set at append or afterwards, across a restart', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    a.append([{ ...ev(1), unknown: true }, ev(2), ev(3), ev(4)]);
    a.ack(bytesOf(a.readNext(1, 1 << 20)));
    const offered = a.readNext(2, 1 << 20);
    assert.deepEqual(offered.map((e) => e.unknown ?? false), [false, false]);
    a.markUnknown(bytesOf(offered));
    a.close();
    const b = new SpillFile(dir);
    assert.deepEqual(b.readNext(10, 1 << 20).map((e) => [e.value[0], e.unknown ?? false]), [[2, true], [3, true], [4, false]]);
    b.close();
  });
});

describe('SpillFile lock', () => {
  it('refuses a second SpillFile on the same directory in this process, naming it, until the first is closed', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir);
    assert.throws(() => new SpillFile(path.join(dir, '.', '')), (err: Error) => err.message.includes(dir) && /already used by another decision logger in this process/.test(err.message));
    a.close();
    const b = new SpillFile(dir);
    b.close();
  });

  it('takes over a lock left by a process that is gone, or by an earlier process with this pid', () => {
    for (const owner of [deadPid(), process.pid]) {
      const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
      const lockFile = path.join(dir, 'spill.lock');
      writeFileSync(lockFile, `${owner} left-behind`);
      const s = new SpillFile(dir);
      // pid, a random part, the PID namespace, the lease's renewal period, the host, and the
      // process's start time with the thread.
      assert.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid} [0-9a-f]{16} \\S+ 5000 \\S+ (\\d+|-)\\.${threadId}$`));
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('spill.lock')), ['spill.lock'], 'no temporary lock files left');
      s.close();
      assert.equal(existsSync(lockFile), false);
    }
  });

  it('close() leaves alone a lock that is no longer its own', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const s = new SpillFile(dir);
    const lockFile = path.join(dir, 'spill.lock');
    writeFileSync(lockFile, `${process.ppid} someone-else`);
    s.close();
    assert.equal(readFileSync(lockFile, 'utf8'), `${process.ppid} someone-else`);
  });
});

/** The PID namespace as the lock names it, read as spill-file.ts reads it. */
function ourNamespace(): string {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const ns = /\[(\d+)\]/.exec(fs.readlinkSync('/proc/self/ns/pid'))?.[1];
    if (boot !== '' && ns !== undefined) return `${boot}/${ns}`;
  } catch {
    // below
  }
  return `host:${os.hostname().replace(/\s/g, '_') || 'unknown'}`;
}

describe('SpillFile lock across PID namespaces (a lease)', () => {
  // A holder in another PID namespace (a container sharing the volume): its pid is some other
  // process, or none, here. Judged by pid, a live holder's lock was taken and events were lost.
  const foreign = (pid: number, refreshMs: number) => `${pid} 0123456789abcdef 00000000-0000-0000-0000-000000000000/4026531999 ${refreshMs} other-host`;

  it('refuses a directory whose holder in another PID namespace renews its lease, whatever its pid means here', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const lockFile = path.join(dir, 'spill.lock');
    // A lease of 3 s: the verdict "alive" comes at the first renewal, and a loaded machine may
    // stall the renewing process for a good part of a second.
    writeFileSync(lockFile, foreign(deadPid(), 1_000));
    // The holder, renewing: a process of its own, since taking the lock blocks this thread.
    const holder = spawn(process.execPath, ['-e', `const fs = require('fs'); setInterval(() => { const t = new Date(); fs.utimesSync(${JSON.stringify(lockFile)}, t, t); }, 25);`], { stdio: 'ignore' });
    try {
      // Renewing already: its start-up can take longer than the lease.
      const written = statSync(lockFile).mtimeMs;
      for (const until = Date.now() + 10_000; statSync(lockFile).mtimeMs === written && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
      const { log, lines } = recordingLog();
      assert.throws(() => new SpillFile(dir, log), (err: Error) => /in use by process \d+ on other-host \(another PID namespace/.test(err.message));
      assert.ok(lines.some((l) => /waiting for its lease/.test(l.msg)));
      assert.equal(readFileSync(lockFile, 'utf8'), foreign(deadPid(), 1_000), 'the lock left as it was');
    } finally {
      holder.kill();
    }
  });

  it('takes a lock from another PID namespace once its lease has run out: at once if it has, else after waiting for it', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const lockFile = path.join(dir, 'spill.lock');
    // A live pid here, which says nothing about a holder elsewhere.
    writeFileSync(lockFile, foreign(process.ppid, 100));
    const old = new Date(Date.now() - 1_000);
    fs.utimesSync(lockFile, old, old);
    let t0 = Date.now();
    const a = new SpillFile(dir);
    assert.ok(Date.now() - t0 < 250, `expired: taken at once (${Date.now() - t0} ms)`);
    assert.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid} `));
    a.close();

    // Renewed just now, then never again (its holder was killed): stale once 3 periods have passed.
    writeFileSync(lockFile, foreign(process.ppid, 100));
    const renewed = statSync(lockFile).mtimeMs;
    const b = new SpillFile(dir);
    const waited = Date.now() - renewed;
    assert.ok(waited >= 250 && waited < 2_000, `waited ${waited} ms for a lease of 300 ms`);
    assert.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid} `));
    // Taken now, so its lease starts now: written before the wait, it looked as old as the wait to
    // the next claimant, which found it expired and took it too (two holders).
    assert.ok(Date.now() - statSync(lockFile).mtimeMs < 150, `the new lock is ${Date.now() - statSync(lockFile).mtimeMs} ms old`);
    b.close();
  });

  it('within its own PID namespace a lock is judged by its pid, as before: a dead one at once, a live one refused', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const lockFile = path.join(dir, 'spill.lock');
    writeFileSync(lockFile, `${process.ppid} 0123456789abcdef ${ourNamespace()} 60000 ${os.hostname()}`);
    assert.throws(() => new SpillFile(dir), new RegExp(`in use by process ${process.ppid};`));
    writeFileSync(lockFile, `${deadPid()} 0123456789abcdef ${ourNamespace()} 60000 ${os.hostname()}`);
    const t0 = Date.now();
    new SpillFile(dir).close();
    assert.ok(Date.now() - t0 < 1_000, 'no lease to wait for');
  });

  it('the holder renews its lease, and says so when its lock is no longer its own', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const lockFile = path.join(dir, 'spill.lock');
    const { log, lines } = recordingLog();
    const s = new SpillFile(dir, log, { lockRefreshMs: 20 });
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockFile, old, old);
    const until = async (ok: () => boolean) => {
      for (const end = Date.now() + 5_000; !ok() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
    };
    await until(() => Date.now() - statSync(lockFile).mtimeMs < 1_000);
    assert.ok(Date.now() - statSync(lockFile).mtimeMs < 1_000, 'renewed');
    assert.match(readFileSync(lockFile, 'utf8'), / 20 /, 'the lock names its renewal period, which sets the lease for others');
    writeFileSync(lockFile, foreign(deadPid(), 20));
    await until(() => lines.some((l) => l.level === 'error'));
    assert.ok(lines.some((l) => l.level === 'error' && /no longer this process/.test(l.msg)), JSON.stringify(lines));
    s.close();
    assert.equal(readFileSync(lockFile, 'utf8'), foreign(deadPid(), 20), 'another\'s lock is left alone');
  });
});

describe('SpillFile lock across worker threads of one process', () => {
  /** Tries to take `dir` in a worker thread; resolves to what happened, once the thread has ended. */
  function inWorker(dir: string, close: boolean): Promise<string> {
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      (async () => {
        // Worker threads do not inherit the tsx loader (see packages/runtime/src/thread-boot.mjs).
        (await import(workerData.tsx)).register();
        const { SpillFile } = await import(workerData.spill);
        try {
          const s = new SpillFile(workerData.dir, undefined, { lockRefreshMs: 50 });
          if (workerData.close) s.close();
          parentPort.postMessage('took');
        } catch (err) {
          parentPort.postMessage('refused: ' + err.message);
        }
      })();`;
    const workerData = { tsx: import.meta.resolve('tsx/esm/api'), spill: new URL('./spill-file.ts', import.meta.url).href, dir, close };
    return new Promise((resolve, reject) => {
      let said = 'ended without a word';
      const w = new Worker(code, { eval: true, workerData });
      w.on('message', (m) => (said = String(m)));
      w.on('error', reject);
      w.on('exit', () => resolve(said));
    });
  }

  it('refuses a directory another thread holds (its lease renewed); takes one a thread left without closing once the lease runs out', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const lockFile = path.join(dir, 'spill.lock');
    // This thread holds it and renews every 50 ms while the worker judges the lease (150 ms).
    const held = new SpillFile(dir, undefined, { lockRefreshMs: 50 });
    const token = readFileSync(lockFile, 'utf8');
    assert.match(await inWorker(dir, true), /^refused: Spill directory .* is in use by another thread of this process \(thread \d+; it renews its lease\)/);
    assert.equal(readFileSync(lockFile, 'utf8'), token, 'the holder keeps its lock');
    held.close();

    // A worker takes it and ends without closing: its lease is no longer renewed.
    assert.equal(await inWorker(dir, false), 'took');
    const left = readFileSync(lockFile, 'utf8');
    assert.match(left, new RegExp(`^${process.pid} .*\\.\\d+$`));
    assert.notEqual(left.split(' ')[5], `${token.split(' ')[5]}`, 'the worker\'s thread id is in its lock');
    const t0 = Date.now();
    const after = new SpillFile(dir);
    assert.ok(Date.now() - t0 < 2_000, `waited ${Date.now() - t0} ms for a lease of 150 ms`);
    assert.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid} [0-9a-f]{16} .* \\S+\\.${threadId}$`));
    after.close();
  });

  it('takes at once a lock of an earlier process that had this pid (pid 1 in a container): its start time is another', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const lockFile = path.join(dir, 'spill.lock');
    // Renewed just now, with a long lease: judged by its lease, it would hold for a minute.
    writeFileSync(lockFile, `${process.pid} 0123456789abcdef ${ourNamespace()} 20000 ${os.hostname()} 1.0`);
    const t0 = Date.now();
    new SpillFile(dir).close();
    assert.ok(Date.now() - t0 < 1_000, `no lease to wait for (${Date.now() - t0} ms)`);
  });
});

/** A pid no process has (pids stay below 2^22 on Linux). */
function deadPid(): number {
  for (let pid = 4_000_000; ; pid++) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}

describe('SpillFile upgrade', () => {
  it('rewrites a file of the earlier frame format (no magic, no CRC), keeping its position and order', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    // The earlier format: u32 key length, u32 value length, f64 seq, key, value.
    const legacy = (seq: number) => {
      const key = Buffer.from(`trace-${seq}`);
      const value = Buffer.alloc(30, seq);
      const h = Buffer.alloc(16);
      h.writeUInt32LE(key.length, 0);
      h.writeUInt32LE(value.length, 4);
      h.writeDoubleLE(seq, 8);
      return Buffer.concat([h, key, value]);
    };
    const frames = [1, 2, 3].map(legacy);
    writeFileSync(path.join(dir, 'spill.log'), Buffer.concat([...frames, Buffer.from([7, 0])])); // and a torn tail
    writeFileSync(path.join(dir, 'spill.pos'), String(frames[0]!.length)); // the first was acknowledged
    const { log, lines } = recordingLog();
    const s = new SpillFile(dir, log);
    assert.deepEqual(s.readNext(10, 1 << 20).map((e) => [e.key, e.value[0], e.seq]), [['trace-2', 2, -1], ['trace-3', 3, -1]]);
    assert.equal(lines.length, 1);
    assert.deepEqual([lines[0]!.obj.frames, lines[0]!.obj.tornBytes], [2, 2]);
    s.close();
    const again = new SpillFile(dir);
    assert.equal(again.readNext(10, 1 << 20).length, 2, 'now in the current format: read as it is');
    again.close();
  });

  it('upgrades an earlier file whose first key is 476 bytes long (its first bytes read as the magic)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const key = Buffer.from('k'.repeat(476));
    const h = Buffer.alloc(16);
    h.writeUInt32LE(key.length, 0);
    h.writeUInt32LE(3, 4);
    h.writeDoubleLE(1, 8);
    writeFileSync(path.join(dir, 'spill.log'), Buffer.concat([h, key, Buffer.from([1, 2, 3])]));
    writeFileSync(path.join(dir, 'spill.pos'), '0');
    const s = new SpillFile(dir);
    assert.deepEqual(s.readNext(10, 1 << 20).map((e) => [e.key.length, [...e.value]]), [[476, [1, 2, 3]]]);
    s.close();
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('damaged')), [], 'nothing set aside');
  });
});

/** Bytes the spill's segment files take on disk. */
function onDisk(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f === 'spill.log' || /^spill\.log\.\d+$/.test(f))
    .reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
}

/** Replaces a node:fs function for the length of `fn` (named imports follow, see syncBuiltinESMExports). */
function withFs<K extends 'renameSync' | 'rmSync' | 'writeSync'>(name: K, replacement: (real: (typeof fs)[K]) => (typeof fs)[K], fn: () => void): void {
  const real = fs[name];
  (fs as unknown as Record<string, unknown>)[name] = replacement(real);
  syncBuiltinESMExports();
  try {
    fn();
  } finally {
    (fs as unknown as Record<string, unknown>)[name] = real;
    syncBuiltinESMExports();
  }
}

describe('SpillFile segments: disk bounded by what is unsent', () => {
  it('a spill that is never all acknowledged holds on disk what is unsent plus at most one segment', () => {
    // Under steady traffic after an outage the sender trails the appends: one file was truncated
    // only once all of it was acknowledged, so it grew for ever (8 MB in 8 s at 1.2k events/s).
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const segmentBytes = 16 * 1024;
    const spill = new SpillFile(dir, undefined, { segmentBytes });
    let n = 0;
    let worst = 0;
    for (let i = 0; i < 300; i++) {
      const batch = Array.from({ length: 5 }, () => ev(n++, 1_000));
      spill.append(batch);
      spill.ack(bytesOf(spill.readNext(4, 1 << 20)));
      worst = Math.max(worst, onDisk(dir) - spill.pendingBytes);
    }
    // What was sent stays only in the first segment, which an append may have taken past its size.
    assert.ok(worst <= segmentBytes + 5 * 1_040, `up to ${worst} bytes on disk beyond the ${spill.pendingBytes} unsent`);
    assert.ok(readdirSync(dir).filter((f) => /^spill\.log\.\d+$/.test(f)).length > 1, 'several segments');
    spill.close();
    // A restart resumes at the first unsent event, across segments, in order.
    const again = new SpillFile(dir, undefined, { segmentBytes });
    const rest: Encoded[] = [];
    for (let got = again.readNext(1_000, 1 << 22); got.length > 0; got = again.readNext(1_000, 1 << 22)) rest.push(...got);
    assert.deepEqual(rest.map((e) => e.value.length === 1_000 && e.value[0]), Array.from({ length: 300 }, (_, i) => (1_200 + i) % 256));
    again.ack(bytesOf(rest));
    assert.equal(onDisk(dir), 0, 'emptied once all is acknowledged');
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('spill.log')), ['spill.log'], 'back to one file');
    again.close();
  });

  it('deletes, at the next start, a segment acknowledged whole that a killed process had not deleted yet', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    // Two frames a segment.
    const a = new SpillFile(dir, undefined, { segmentBytes: 1_000 });
    for (let i = 0; i < 6; i++) a.append([ev(i, 900), ev(i + 100, 900)]);
    // The position is saved, then the process dies before the deletion.
    withFs('rmSync', () => () => {
      throw new Error('killed');
    }, () => assert.throws(() => a.ack(bytesOf(a.readNext(3, 1 << 20))), /killed/));
    a.close();
    assert.equal(readdirSync(dir).filter((f) => f.startsWith('spill.log')).length, 6);
    const b = new SpillFile(dir, undefined, { segmentBytes: 1_000 });
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [1, 101], 'from the first unacknowledged frame');
    assert.equal(readdirSync(dir).filter((f) => f.startsWith('spill.log')).length, 5, 'the acknowledged segment is gone');
    b.close();
  });

  it('a rewrite (prepend) killed between saving the position and renaming is finished at the next start: nothing sent twice or lost', () => {
    // Resetting the position, then renaming, replayed the old file whole after a kill in between.
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir, undefined, { segmentBytes: 300 });
    a.append([1, 2, 3, 4, 5, 6].map((n) => ev(n, 100)));
    a.ack(bytesOf(a.readNext(2, 1 << 20)));
    withFs('renameSync', (real) => ((from: fs.PathLike, to: fs.PathLike) => {
      if (String(from).includes('spill.log.tmp')) throw new Error('killed');
      real(from, to);
    }) as typeof fs.renameSync, () => assert.throws(() => a.prepend([ev(10, 90), ev(11, 90)]), /killed/));
    a.close();
    const { log, lines } = recordingLog();
    const b = new SpillFile(dir, log);
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [10, 11, 3, 4, 5, 6]);
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('spill.log')), ['spill.log']);
    assert.ok(lines.every((l) => !/replaying/.test(l.msg)), JSON.stringify(lines));
    b.close();
  });

  it('a rewrite killed before it was committed leaves the spill as it was', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir, undefined, { segmentBytes: 300 });
    a.append([1, 2, 3, 4].map((n) => ev(n, 100)));
    a.ack(bytesOf(a.readNext(1, 1 << 20)));
    let writes = 0;
    withFs('writeSync', (real) => ((...args: Parameters<typeof fs.writeSync>) => {
      if (writes++ === 1) throw new Error('killed');
      return (real as (...a: unknown[]) => number)(...args);
    }) as typeof fs.writeSync, () => assert.throws(() => a.keep([ev(10, 90)], [ev(11, 90)]), /killed/));
    a.close();
    const b = new SpillFile(dir);
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [2, 3, 4]);
    assert.ok(!readdirSync(dir).some((f) => f.includes('.tmp')), 'no temporary file left');
    b.close();
  });

  it('keep() puts what memory held before everything spilled, or behind what was read back and before what was not', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir, undefined, { segmentBytes: 250 });
    a.append([1, 2, 3, 4, 5].map((n) => ev(n, 100)));
    a.ack(bytesOf(a.readNext(1, 1 << 20)));
    a.readNext(2, 1 << 20); // read back, in memory, not acknowledged: 2 and 3
    a.keep([ev(20, 50)], [ev(30, 50), ev(31, 50)]);
    a.close();
    const b = new SpillFile(dir);
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [20, 2, 3, 30, 31, 4, 5]);
    b.close();
  });

  it('moves aside damaged bytes in a segment before the last, with the segments after it, keeping the frames before them', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-spill-'));
    const a = new SpillFile(dir, undefined, { segmentBytes: 250 });
    for (let i = 1; i <= 6; i++) a.append([ev(i, 100)]);
    a.close();
    const segments = readdirSync(dir).filter((f) => f === 'spill.log' || /^spill\.log\.\d+$/.test(f));
    assert.equal(segments.length, 3);
    const first = path.join(dir, 'spill.log');
    const bytes = readFileSync(first);
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff; // inside its second frame
    writeFileSync(first, bytes);
    const { log, lines } = recordingLog();
    const b = new SpillFile(dir, log, { segmentBytes: 250 });
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [1]);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.obj.movedBytes, 5 * spillFrameBytes(ev(1, 100)));
    assert.equal(readdirSync(dir).filter((f) => f.startsWith('spill.log.damaged-')).length, 3, 'the damaged part and both later segments kept aside');
    b.append([ev(7, 100)]);
    assert.deepEqual(b.readNext(100, 1 << 20).map((e) => e.value[0]), [7], 'appends go on after what was kept');
    b.close();
  });
});
