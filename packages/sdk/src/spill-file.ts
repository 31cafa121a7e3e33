import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fchmodSync,
  fstatSync,
  ftruncateSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import * as zlib from 'node:zlib';
import type { Logger } from '@dlog/runtime';

/** One encoded event, as queued in memory, written to the spill file and sent. */
export interface Encoded {
  /** Order of acceptance in this process; spilled events from an earlier process read back as -1. */
  seq: number;
  key: string;
  value: Buffer;
  /** Bytes this event takes in the spill file, when it was read back from there. */
  spillBytes?: number;
  /**
   * Handed to a producer session whose answer never came: it may already be in the topic, so it is
   * checked (Transport.written) before it is sent again. Kept in the spill file across restarts.
   */
  unknown?: boolean;
}

/**
 * Frame: u8 magic, u8 version, u8 flags, u8 zero, u32 key length, u32 value length, f64 seq,
 * u32 CRC-32 (of bytes 4..20, the key and the value), key bytes, value bytes. The magic and the
 * CRC let a restart tell a frame from garbage: an offset that points anywhere else, or a frame
 * torn by a crash, is detected instead of being read as lengths. The flags byte is outside the
 * CRC so that it can be set in place with a one-byte write.
 */
const headerBytes = 24;

/** Bytes an event takes in the spill file. */
export function spillFrameBytes(e: { key: string; value: Buffer }): number {
  return headerBytes + Buffer.byteLength(e.key, 'utf8') + e.value.length;
}
const magic = 0xdc;
const version = 1;
const flagUnknown = 1;
/** The frame header before magic and CRC: u32 key length, u32 value length, f64 seq. */
const legacyHeaderBytes = 16;

type Crc = (data: Uint8Array, value?: number) => number;
/** node:zlib has crc32 from Node 20.15 / 22.2; engines allows 20.11, which gets the table. */
const crc32: Crc = (zlib as { crc32?: Crc }).crc32 ?? tableCrc32;

let crcTable: Int32Array | undefined;
function tableCrc32(data: Uint8Array, value = 0): number {
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let crc = ~value;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

function frameCrc(header: Buffer, hOff: number, payload: Buffer, pOff: number, pLen: number): number {
  return crc32(payload.subarray(pOff, pOff + pLen), crc32(header.subarray(hOff + 4, hOff + 20)));
}

/** What the spill file needs of a logger (pino's shape). */
export type SpillLog = Pick<Logger, 'warn' | 'error'>;
const silent: SpillLog = { warn: () => undefined, error: () => undefined } as unknown as SpillLog;

/** Directories held by a SpillFile of this process: the lock file cannot tell two of them apart. */
const held = new Set<string>();

/**
 * An append-only file that holds events while Kafka is away, replayed in the order written.
 *
 * `spill.log` is only ever appended to; `spill.pos` holds how many of its bytes the broker has
 * acknowledged, rewritten after each acknowledged batch, so a process that restarts resumes
 * where the last one stopped instead of resending what was already delivered. When everything is
 * acknowledged both are truncated. Writes are synchronous: spilling happens off the caller's path,
 * and ordering with what is in memory is simplest when a write is done once it returns.
 *
 * Failures lean towards duplicates, never loss: a position that does not point at a frame makes
 * the restart replay the whole file, and bytes that are not frames are moved aside, not dropped.
 */
export class SpillFile {
  readonly logPath: string;
  readonly posPath: string;
  private fd: number;
  private size: number;
  /** Everything before this offset is acknowledged. */
  private acked = 0;
  /** Everything before this offset has been read back into memory. */
  private read = 0;
  /** Frames before this offset were written by an earlier process. */
  private inheritedEnd: number;

  private readonly lockPath: string;
  private readonly lockToken: string;
  private readonly realDir: string;
  private readonly log: SpillLog;

  constructor(dir: string, log: SpillLog = silent) {
    this.log = log;
    // Spilled events hold the raw input (personal data, as on inference.raw): the files are the
    // process user's alone, like the topic's readers are few.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.realDir = realpathSync(dir);
    if (held.has(this.realDir)) {
      throw new Error(`Spill directory ${dir} is already used by another decision logger in this process; give each logger its own buffer.spillDir`);
    }
    this.logPath = path.join(dir, 'spill.log');
    this.posPath = path.join(dir, 'spill.pos');
    this.lockPath = path.join(dir, 'spill.lock');
    this.lockToken = lock(this.lockPath);
    held.add(this.realDir);
    try {
      this.fd = openSync(this.logPath, 'a+', 0o600);
      // One written by an earlier version was readable by all.
      fchmodSync(this.fd, 0o600);
    } catch (err) {
      this.release();
      throw err;
    }
    this.size = fstatSync(this.fd).size;
    this.inheritedEnd = this.size;
    try {
      this.recover();
    } catch (err) {
      closeSync(this.fd);
      this.release();
      throw err;
    }
  }

  /**
   * Finds where to resume. The saved position is trusted only when a whole, intact frame starts
   * there (or it is the end of the file); otherwise the file is replayed from its start. From there
   * every frame is checked: a torn last frame (a crash mid-append, never acknowledged to anyone) is
   * cut off; anything else unreadable is moved aside to a file of its own, with a log line.
   */
  private recover(): void {
    const raw = existsSync(this.posPath) ? readFileSync(this.posPath, 'utf8').trim() : '0';
    let pos = raw === '' ? 0 : Number(raw);
    if (this.upgradeLegacy(pos)) pos = 0;
    let start = 0;
    if (Number.isSafeInteger(pos) && pos >= 0 && pos <= this.size && (pos === this.size || typeof this.check(pos) === 'number')) {
      start = pos;
    } else {
      this.log.warn(
        { savedPosition: raw.slice(0, 24), fileBytes: this.size },
        'spill position does not point at a frame (a crash while it was rewritten); replaying the spill file from its start, some events may be sent twice',
      );
    }
    let off = start;
    let bad: { torn: boolean; reason: string } | undefined;
    while (off < this.size) {
      const r = this.check(off);
      if (typeof r !== 'number') {
        bad = r;
        break;
      }
      off += r;
    }
    if (bad) {
      const bytes = this.size - off;
      if (bad.torn) {
        this.log.warn({ offset: off, droppedBytes: bytes, fileBytes: this.size, reason: bad.reason }, 'spill file ends in a frame torn by a crash; cut it off');
      } else {
        const aside = `${this.logPath}.damaged-${Date.now()}`;
        this.copyRange(off, this.size, aside);
        this.log.error({ offset: off, movedBytes: bytes, fileBytes: this.size, reason: bad.reason, file: aside }, 'spill file holds bytes that are not frames; moved them aside and replaying what precedes them');
      }
      ftruncateSync(this.fd, off);
      this.size = off;
      this.inheritedEnd = off;
    }
    this.acked = this.read = start;
  }

  /**
   * A file written before frames had a magic and a CRC (u32 key length, u32 value length, f64
   * seq): its unacknowledged frames are rewritten in this format, through a rename as in prepend(),
   * so that an upgrade neither replays nor sets aside an existing backlog.
   */
  private upgradeLegacy(pos: number): boolean {
    if (this.size === 0) return false;
    const h = Buffer.alloc(legacyHeaderBytes);
    readSync(this.fd, h, 0, Math.min(4, this.size), 0);
    // An earlier file can start with the same four bytes (a first key of 476 bytes reads as magic,
    // version, flags): it is the current format only if its first frame checks out.
    if (h[0] === magic && h[1] === version && h[3] === 0 && typeof this.check(0) === 'number') return false;
    const starts: number[] = [];
    let end = 0;
    while (end + legacyHeaderBytes <= this.size) {
      readSync(this.fd, h, 0, legacyHeaderBytes, end);
      const frame = legacyHeaderBytes + h.readUInt32LE(0) + h.readUInt32LE(4);
      // Sequence numbers were counts: anything else is not a frame of that format.
      const seq = h.readDoubleLE(8);
      if (end + frame > this.size || !Number.isSafeInteger(seq) || seq < 0) break;
      starts.push(end);
      end += frame;
    }
    if (starts.length === 0) return false; // not that format either: recover() sets it aside
    const from = starts.includes(pos) || pos === end ? pos : 0;
    const tmp = `${this.logPath}.tmp`;
    const old = this.fd;
    const legacySize = this.size;
    this.fd = openSync(tmp, 'w+', 0o600);
    this.size = 0;
    let batch: Encoded[] = [];
    let frames = 0;
    for (const at of starts) {
      if (at < from) continue;
      readSync(old, h, 0, legacyHeaderBytes, at);
      const keyLen = h.readUInt32LE(0);
      const body = Buffer.allocUnsafe(keyLen + h.readUInt32LE(4));
      readSync(old, body, 0, body.length, at + legacyHeaderBytes);
      batch.push({ seq: h.readDoubleLE(8), key: body.toString('utf8', 0, keyLen), value: body.subarray(keyLen) });
      frames++;
      if (batch.length === 1_000) {
        this.append(batch);
        batch = [];
      }
    }
    this.append(batch);
    closeSync(old);
    this.savePosition(0);
    renameSync(tmp, this.logPath);
    this.inheritedEnd = this.size;
    this.log.warn({ frames, acknowledgedBytes: from, legacyBytes: legacySize, tornBytes: legacySize - end }, 'spill file was in the earlier frame format; rewrote its unacknowledged frames');
    return true;
  }

  /** The length of the intact frame at `off`, or why there is none (torn: it could be a crash mid-append). */
  private check(off: number): number | { torn: boolean; reason: string } {
    const left = this.size - off;
    const header = Buffer.alloc(headerBytes);
    const got = readSync(this.fd, header, 0, Math.min(headerBytes, left), off);
    if (got < headerBytes) return { torn: true, reason: 'incomplete header' };
    if (header[0] !== magic || header[1] !== version || header[3] !== 0) {
      return { torn: this.zeroFrom(off), reason: 'no frame magic' };
    }
    const payload = header.readUInt32LE(4) + header.readUInt32LE(8);
    if (headerBytes + payload > left) return { torn: true, reason: 'frame longer than the file' };
    const body = Buffer.allocUnsafe(payload);
    readSync(this.fd, body, 0, payload, off + headerBytes);
    if (frameCrc(header, 0, body, 0, payload) !== header.readUInt32LE(20)) {
      return { torn: headerBytes + payload === left, reason: 'CRC mismatch' };
    }
    return headerBytes + payload;
  }

  /** A crash can leave the file longer than what reached it, the gap reading as zeros. */
  private zeroFrom(off: number): boolean {
    const chunk = Buffer.allocUnsafe(64 * 1024);
    for (let at = off; at < this.size; ) {
      const n = readSync(this.fd, chunk, 0, Math.min(chunk.length, this.size - at), at);
      if (n <= 0) break;
      for (let i = 0; i < n; i++) if (chunk[i] !== 0) return false;
      at += n;
    }
    return true;
  }

  private copyRange(from: number, to: number, file: string): void {
    const out = openSync(file, 'wx', 0o600);
    try {
      const chunk = Buffer.allocUnsafe(1 << 20);
      for (let off = from, w = 0; off < to; ) {
        const n = readSync(this.fd, chunk, 0, Math.min(chunk.length, to - off), off);
        if (n <= 0) break;
        for (let done = 0; done < n; ) done += writeSync(out, chunk, done, n - done, w + done);
        w += n;
        off += n;
      }
    } finally {
      closeSync(out);
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
      const h = off;
      buf[h] = magic;
      buf[h + 1] = version;
      buf[h + 2] = e.unknown ? flagUnknown : 0;
      buf[h + 3] = 0;
      buf.writeUInt32LE(key.length, h + 4);
      buf.writeUInt32LE(e.value.length, h + 8);
      buf.writeDoubleLE(e.seq, h + 12);
      off += headerBytes;
      off += key.copy(buf, off);
      off += e.value.copy(buf, off);
      buf.writeUInt32LE(frameCrc(buf, h, buf, h + headerBytes, key.length + e.value.length), h + 20);
    });
    let written = 0;
    try {
      while (written < total) written += writeSync(this.fd, buf, written, total - written, this.size + written);
    } catch (err) {
      // Part written, then a failure (the disk filled): cut the part off. Left there, the file
      // (opened to append) took the next frames after it, out of line with what was counted, so
      // reading stopped at it for good and a restart set everything after it aside.
      if (written > 0) {
        try {
          ftruncateSync(this.fd, this.size);
        } catch {
          // Nothing more to do here: recover() cuts a torn tail at the next start.
        }
      }
      throw err;
    }
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
      if (buf[off] !== magic || buf[off + 1] !== version) {
        throw new Error(`Spill file ${this.logPath} holds no frame at byte ${this.read + off} (of ${this.size})`);
      }
      const keyLen = buf.readUInt32LE(off + 4);
      const valueLen = buf.readUInt32LE(off + 8);
      const frame = headerBytes + keyLen + valueLen;
      if (off + frame > got) {
        if (out.length > 0) break;
        // A single frame larger than maxBytes: read it whole.
        buf = Buffer.allocUnsafe(frame);
        got = readSync(this.fd, buf, 0, frame, this.read);
        off = 0;
        continue;
      }
      const seq = this.read + off < this.inheritedEnd ? -1 : buf.readDoubleLE(off + 12);
      const keyStart = off + headerBytes;
      const e: Encoded = {
        seq,
        key: buf.toString('utf8', keyStart, keyStart + keyLen),
        value: buf.subarray(keyStart + keyLen, keyStart + keyLen + valueLen),
        spillBytes: frame,
      };
      if ((buf[off + 2]! & flagUnknown) !== 0) e.unknown = true;
      out.push(e);
      off += frame;
    }
    this.read += off;
    return out;
  }

  /**
   * Writes the acknowledged position through a rename, so a process killed meanwhile leaves the
   * old position or the new one: a position file rewritten in place could be left empty (read as
   * 0, which replayed everything without a word) or cut to another number.
   */
  private savePosition(pos: number): void {
    const tmp = `${this.posPath}.tmp`;
    writeFileSync(tmp, String(pos), { mode: 0o600 });
    renameSync(tmp, this.posPath);
  }

  /** Marks the oldest `bytes` as delivered; truncates the file once all of it is. */
  ack(bytes: number): void {
    this.acked += bytes;
    if (this.acked >= this.size && this.read >= this.size) {
      ftruncateSync(this.fd, 0);
      this.size = this.acked = this.read = this.inheritedEnd = 0;
    }
    this.savePosition(this.acked);
  }

  /**
   * Flags the oldest unacknowledged `bytes` (whole frames) as of unknown outcome: they were handed
   * to a producer that never answered, so the next process checks the topic before resending.
   * One byte written per frame, so a crash leaves each flag either set or not.
   */
  markUnknown(bytes: number): void {
    const end = Math.min(this.acked + bytes, this.size);
    const header = Buffer.alloc(headerBytes);
    const flag = Buffer.from([flagUnknown]);
    // Not through this.fd: it appends (O_APPEND), wherever a write asks to go.
    const fd = openSync(this.logPath, 'r+');
    try {
      for (let off = this.acked; off + headerBytes <= end; ) {
        readSync(fd, header, 0, headerBytes, off);
        if (header[0] !== magic) throw new Error(`Spill file ${this.logPath} holds no frame at byte ${off} (of ${this.size})`);
        flag[0] = header[2]! | flagUnknown;
        writeSync(fd, flag, 0, 1, off + 2);
        off += headerBytes + header.readUInt32LE(4) + header.readUInt32LE(8);
      }
    } finally {
      closeSync(fd);
    }
  }

  /** Forgets what was read but not acknowledged, so it is read (and sent) again. */
  rewind(): void {
    this.read = this.acked;
  }

  /**
   * Puts events in front of everything not yet acknowledged (at close, events still in memory are
   * older than what was spilled, and must replay first). Rewrites the file through a rename, so a
   * crash leaves either the old file or the new one. The position is reset before the rename: a
   * crash in between replays the old file whole (duplicates), where the other order would leave
   * the old position pointing into the new file.
   */
  prepend(events: readonly Encoded[]): void {
    if (events.length === 0) return;
    const tmp = `${this.logPath}.tmp`;
    const old = { fd: this.fd, from: this.acked, to: this.size };
    this.fd = openSync(tmp, 'w+', 0o600);
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
    this.savePosition(0);
    renameSync(tmp, this.logPath);
  }

  close(): void {
    closeSync(this.fd);
    this.release();
  }

  private release(): void {
    try {
      if (readFileSync(this.lockPath, 'utf8') === this.lockToken) rmSync(this.lockPath, { force: true });
    } catch {
      // Already gone.
    }
    held.delete(this.realDir);
  }
}

/**
 * One process per spill directory: two writers would interleave frames and replay each other's.
 * The lock file appears whole (written under a name of its own, then linked into place, which
 * fails if one exists). A stale one (its process is gone) is moved aside and compared before it
 * is deleted, so a process that judged it stale never deletes a lock another has just taken.
 * Returns the lock's content, which only this holder has.
 */
function lock(file: string): string {
  const dir = path.dirname(file);
  const token = `${process.pid} ${randomBytes(8).toString('hex')}`;
  const mine = `${file}.${token.replace(' ', '.')}`;
  writeFileSync(mine, token, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(mine, file);
        return token;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`Cannot lock spill directory ${dir}: ${(err as Error).message}`, { cause: err });
      }
      let seen: string;
      try {
        seen = readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const owner = Number.parseInt(seen, 10);
      // A lock with this process's pid is from an earlier process that had the same pid (pid 1 in
      // a container): this process's own holds are in `held`, checked before.
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
        throw new Error(`Spill directory ${dir} is in use by process ${owner}; give each process its own spillDir.`);
      }
      const aside = `${mine}.stale`;
      try {
        renameSync(file, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (readFileSync(aside, 'utf8') !== seen) {
        // Another process took the lock after it was read: put its lock back.
        try {
          linkSync(aside, file);
        } catch {
          // A third one took it meanwhile; the next attempt sees its lock.
        }
      }
      rmSync(aside, { force: true });
    }
  } finally {
    rmSync(mine, { force: true });
  }
  throw new Error(`Cannot lock spill directory ${dir}: the lock kept changing hands`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
