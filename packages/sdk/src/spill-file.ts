import { closeSync, existsSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';

/** One encoded event, as queued in memory, written to the spill file and sent. */
export interface Encoded {
  /** Order of acceptance in this process; spilled events from an earlier process read back as -1. */
  seq: number;
  key: string;
  value: Buffer;
  /** Bytes this event takes in the spill file, when it was read back from there. */
  spillBytes?: number;
}

// Frame: u32 key length, u32 value length, f64 seq, key bytes, value bytes.
const headerBytes = 16;

/**
 * An append-only file that holds events while Kafka is away, replayed in the order written.
 *
 * `spill.log` is only ever appended to; `spill.pos` holds how many of its bytes the broker has
 * acknowledged, rewritten after each acknowledged batch, so a process that restarts resumes
 * where the last one stopped instead of resending what was already delivered. When everything is
 * acknowledged both are truncated. Writes are synchronous: spilling happens off the caller's path,
 * and ordering with what is in memory is simplest when a write is done once it returns.
 */
export class SpillFile {
  readonly logPath: string;
  readonly posPath: string;
  private fd: number;
  private size: number;
  /** Everything before this offset is acknowledged. */
  private acked: number;
  /** Everything before this offset has been read back into memory. */
  private read: number;
  /** Frames before this offset were written by an earlier process. */
  private inheritedEnd: number;

  private readonly lockPath: string;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.logPath = path.join(dir, 'spill.log');
    this.posPath = path.join(dir, 'spill.pos');
    this.lockPath = path.join(dir, 'spill.lock');
    lock(this.lockPath);
    this.fd = openSync(this.logPath, 'a+');
    this.size = fstatSync(this.fd).size;
    const pos = existsSync(this.posPath) ? Number(readFileSync(this.posPath, 'utf8').trim()) : 0;
    this.acked = Number.isSafeInteger(pos) && pos >= 0 && pos <= this.size ? pos : 0;
    this.read = this.acked;
    this.inheritedEnd = this.size;
    this.dropTornTail();
  }

  /** A crash mid-append can leave half a frame at the end; it was never acknowledged to anyone. */
  private dropTornTail(): void {
    let off = this.acked;
    const header = Buffer.alloc(headerBytes);
    while (off + headerBytes <= this.size) {
      readSync(this.fd, header, 0, headerBytes, off);
      const frame = headerBytes + header.readUInt32LE(0) + header.readUInt32LE(4);
      if (off + frame > this.size) break;
      off += frame;
    }
    if (off !== this.size) {
      ftruncateSync(this.fd, off);
      this.size = off;
      this.inheritedEnd = off;
    }
  }

  /** Bytes written and not yet acknowledged. */
  get pendingBytes(): number {
    return this.size - this.acked;
  }

  /** Bytes written and not yet read back. */
  get unreadBytes(): number {
    return this.size - this.read;
  }

  append(events: readonly Encoded[]): void {
    if (events.length === 0) return;
    let total = 0;
    const keys: Buffer[] = [];
    for (const e of events) {
      const key = Buffer.from(e.key, 'utf8');
      keys.push(key);
      total += headerBytes + key.length + e.value.length;
    }
    const buf = Buffer.allocUnsafe(total);
    let off = 0;
    events.forEach((e, i) => {
      const key = keys[i]!;
      buf.writeUInt32LE(key.length, off);
      buf.writeUInt32LE(e.value.length, off + 4);
      buf.writeDoubleLE(e.seq, off + 8);
      off += headerBytes;
      off += key.copy(buf, off);
      off += e.value.copy(buf, off);
    });
    let written = 0;
    while (written < total) written += writeSync(this.fd, buf, written, total - written, this.size + written);
    this.size += total;
  }

  /** Reads the next frames after what was already read, up to the limits (at least one frame). */
  readNext(maxEvents: number, maxBytes: number): Encoded[] {
    const out: Encoded[] = [];
    if (this.read >= this.size) return out;
    const want = Math.min(this.size - this.read, Math.max(maxBytes, headerBytes));
    let buf = Buffer.allocUnsafe(want);
    let got = readSync(this.fd, buf, 0, want, this.read);
    let off = 0;
    while (out.length < maxEvents && off + headerBytes <= got) {
      const keyLen = buf.readUInt32LE(off);
      const valueLen = buf.readUInt32LE(off + 4);
      const frame = headerBytes + keyLen + valueLen;
      if (off + frame > got) {
        if (out.length > 0) break;
        // A single frame larger than maxBytes: read it whole.
        buf = Buffer.allocUnsafe(frame);
        got = readSync(this.fd, buf, 0, frame, this.read);
        off = 0;
        continue;
      }
      const seq = this.read + off < this.inheritedEnd ? -1 : buf.readDoubleLE(off + 8);
      const keyStart = off + headerBytes;
      out.push({
        seq,
        key: buf.toString('utf8', keyStart, keyStart + keyLen),
        value: buf.subarray(keyStart + keyLen, keyStart + keyLen + valueLen),
        spillBytes: frame,
      });
      off += frame;
    }
    this.read += off;
    return out;
  }

  /** Marks the oldest `bytes` as delivered; truncates the file once all of it is. */
  ack(bytes: number): void {
    this.acked += bytes;
    if (this.acked >= this.size && this.read >= this.size) {
      ftruncateSync(this.fd, 0);
      this.size = this.acked = this.read = this.inheritedEnd = 0;
    }
    writeFileSync(this.posPath, String(this.acked));
  }

  /** Forgets what was read but not acknowledged, so it is read (and sent) again. */
  rewind(): void {
    this.read = this.acked;
  }

  /**
   * Puts events in front of everything not yet acknowledged (at close, events still in memory are
   * older than what was spilled, and must replay first). Rewrites the file through a rename, so a
   * crash leaves either the old file or the new one.
   */
  prepend(events: readonly Encoded[]): void {
    if (events.length === 0) return;
    const tmp = `${this.logPath}.tmp`;
    const old = { fd: this.fd, from: this.acked, to: this.size };
    this.fd = openSync(tmp, 'w+');
    this.size = this.acked = this.read = this.inheritedEnd = 0;
    this.append(events);
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let off = old.from; off < old.to; ) {
      const n = readSync(old.fd, chunk, 0, Math.min(chunk.length, old.to - off), off);
      if (n <= 0) break;
      let w = 0;
      while (w < n) w += writeSync(this.fd, chunk, w, n - w, this.size + w);
      this.size += n;
      off += n;
    }
    closeSync(old.fd);
    renameSync(tmp, this.logPath);
    writeFileSync(this.posPath, '0');
  }

  close(): void {
    closeSync(this.fd);
    rmSync(this.lockPath, { force: true });
  }
}

/** One process per spill directory: two writers would interleave frames and replay each other's. */
function lock(file: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
        throw new Error(`Spill directory ${path.dirname(file)} is in use by process ${owner}; give each process its own spillDir.`);
      }
      rmSync(file, { force: true }); // left by a process that is gone (or by this one)
    }
  }
  throw new Error(`Cannot lock spill directory ${path.dirname(file)}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
