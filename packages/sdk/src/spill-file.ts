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
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { threadId } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import type { Logger } from '@dlog/runtime';
import { messageOf } from './safe-error.js';

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
/** node:zlib has crc32 from Node 20.15 / 22.2; engines allows 20.12, which gets the table. */
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

/**
 * Directories held by a SpillFile of this thread (module state is per worker thread): the lock
 * file cannot tell two of them apart. Another thread's hold is told from the lock (see lock()).
 */
const held = new Set<string>();

export interface SpillFileOptions {
  /**
   * Appends go to a new segment file once the last one holds this many bytes (default 64 MiB).
   * A segment is deleted once all of it is acknowledged, so the files hold at most about one
   * segment of events already sent, whatever the traffic.
   */
  segmentBytes?: number;
  /**
   * How often the holder renews the lock's lease (default 5 s). A process in another PID
   * namespace or on another host cannot tell whether the holder is alive from its pid: it takes
   * the directory only once the lease has gone unrenewed for 3 periods.
   */
  lockRefreshMs?: number;
}

const defaultSegmentBytes = 64 * 1024 * 1024;
const defaultLockRefreshMs = 5_000;
/** Renewal periods a lease outlives its last renewal: a late timer or a slow disk is not a death. */
const leasePeriods = 3;

/** One file of the spill: bytes [base, base + size) of the whole, in order. */
interface Segment {
  base: number;
  size: number;
  path: string;
  /** The last segment's is opened to append and stays open; another's is opened to read, one at a time. */
  fd?: number;
}

/** A file being written to replace the segments (see beginRewrite). */
interface Rewrite {
  path: string;
  fd: number;
  size: number;
}

/** Segments after the first are named after the offset of their first byte in the whole. */
const segmentName = /^spill\.log\.([1-9]\d*)$/;
const rewriteName = /^spill\.log\.tmp(-[0-9a-f]+)?$/;

/**
 * Append-only files that hold events while Kafka is away, replayed in the order written.
 *
 * The spill is a run of segment files: `spill.log` holds its first bytes, and once a segment
 * reaches `segmentBytes` appends go to `spill.log.<offset>`, named after the offset of its first
 * byte. `spill.pos` holds how many bytes the broker has acknowledged, rewritten after each
 * acknowledged batch, so a process that restarts resumes where the last one stopped instead of
 * resending what was already delivered. A segment is deleted once all of it is acknowledged, and
 * when everything is, the spill goes back to one empty `spill.log`: the files hold what is unsent
 * plus at most about one segment, even when the sender never catches up with the appends (a
 * single file was truncated only then, and under steady traffic after an outage grew without
 * bound). Writes are synchronous: spilling happens off the caller's path, and ordering with what
 * is in memory is simplest when a write is done once it returns.
 *
 * Failures lean towards duplicates, never loss: a position that does not point at a frame makes
 * the restart replay from the first segment, and bytes that are not frames are moved aside, not
 * dropped.
 */
export class SpillFile {
  readonly logPath: string;
  readonly posPath: string;
  private readonly dir: string;
  private readonly segmentBytes: number;
  /** In order, each following on from the one before; never empty (the last takes appends). */
  private segs: Segment[] = [];
  /** The one segment other than the last open for reading. */
  private reading: Segment | undefined;
  /** Offset of the end of the last segment. */
  private size = 0;
  /** Everything before this offset is acknowledged. */
  private acked = 0;
  /** Everything before this offset has been read back into memory. */
  private read = 0;
  /** Frames before this offset were written by an earlier process. */
  private inheritedEnd = 0;

  private readonly lockPath: string;
  private readonly lockToken: string;
  private readonly realDir: string;
  private readonly log: SpillLog;
  private readonly leaseTimer: NodeJS.Timeout;
  private leaseMisses = 0;

  constructor(dir: string, log: SpillLog = silent, opts: SpillFileOptions = {}) {
    this.log = log;
    this.segmentBytes = Math.max(1, opts.segmentBytes ?? defaultSegmentBytes);
    const refreshMs = Math.max(1, opts.lockRefreshMs ?? defaultLockRefreshMs);
    // Spilled events hold the raw input (personal data, as on inference.raw): the files are the
    // process user's alone, like the topic's readers are few.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.realDir = realpathSync(dir);
    if (held.has(this.realDir)) {
      throw new Error(`Spill directory ${dir} is already used by another decision logger in this process; give each logger its own buffer.spillDir`);
    }
    this.dir = dir;
    this.logPath = path.join(dir, 'spill.log');
    this.posPath = path.join(dir, 'spill.pos');
    this.lockPath = path.join(dir, 'spill.lock');
    this.lockToken = lock(this.lockPath, refreshMs, log);
    held.add(this.realDir);
    try {
      this.recover(this.open());
    } catch (err) {
      this.closeFiles();
      this.release();
      throw err;
    }
    this.leaseTimer = setInterval(() => this.renewLease(), refreshMs);
    this.leaseTimer.unref();
  }

  /** Lists the segments and opens the last one; returns the saved position's text. */
  private open(): string {
    const raw = existsSync(this.posPath) ? readFileSync(this.posPath, 'utf8').trim() : '';
    const [pos = '', pending] = raw.split(/\s+/);
    if (pending !== undefined) this.finishRewrite(pending);
    // What is left of a rewrite never committed is a copy: the segments it copied are intact.
    for (const f of readdirSync(this.dir)) if (rewriteName.test(f)) rmSync(path.join(this.dir, f), { force: true });
    this.segs = this.listSegments();
    if (this.segs.length === 0) this.segs = [{ base: 0, size: 0, path: this.logPath }];
    const tail = this.segs[this.segs.length - 1]!;
    tail.fd = openSync(tail.path, 'a+', 0o600);
    // One written by an earlier version was readable by all.
    fchmodSync(tail.fd, 0o600);
    tail.size = fstatSync(tail.fd).size;
    this.size = tail.base + tail.size;
    return pos;
  }

  private listSegments(): Segment[] {
    const segs: Segment[] = [];
    for (const f of readdirSync(this.dir)) {
      const base = f === 'spill.log' ? 0 : Number(segmentName.exec(f)?.[1] ?? Number.NaN);
      if (!Number.isSafeInteger(base)) continue;
      const p = path.join(this.dir, f);
      segs.push({ base, size: statSync(p).size, path: p });
    }
    return segs.sort((a, b) => a.base - b.base);
  }

  /** A rewrite was committed (its name saved with the position) and the process died before it was in place. */
  private finishRewrite(pending: string): void {
    if (!/^spill\.log\.tmp-[0-9a-f]+$/.test(pending)) return; // not ours: recover() judges the position
    const tmp = path.join(this.dir, pending);
    if (existsSync(tmp)) renameSync(tmp, this.logPath);
    for (const s of this.listSegments()) if (s.base !== 0) rmSync(s.path, { force: true });
    this.savePosition('0');
    this.log.warn({ file: pending }, 'finished replacing the spill files, which a process killed meanwhile had begun');
  }

  /**
   * Finds where to resume. The saved position is trusted only when a whole, intact frame starts
   * there (or it is the end); otherwise the spill is replayed from its first segment. From there
   * every frame is checked: a torn last frame (a crash mid-append, never acknowledged to anyone)
   * is cut off; anything else unreadable is moved aside to a file of its own, with a log line, as
   * are the segments after it.
   */
  private recover(raw: string): void {
    let pos = raw === '' ? 0 : Number(raw);
    if (this.upgradeLegacy(pos)) pos = 0;
    let start = this.segs[0]!.base;
    if (Number.isSafeInteger(pos) && pos >= start && pos <= this.size && (pos === this.size || typeof this.checkAt(pos) === 'number')) {
      start = pos;
    } else if (this.size > 0) {
      this.log.warn(
        { savedPosition: raw.slice(0, 24), fileBytes: this.size },
        'spill position does not point at a frame (a crash while it was rewritten); replaying the spill file from its start, some events may be sent twice',
      );
    }
    // Acknowledged whole, but a process killed before it deleted them.
    while (this.segs.length > 1 && this.segs[0]!.base + this.segs[0]!.size <= start) this.dropSegment(this.segs.shift()!);
    let bad: { at: number; torn: boolean; reason: string } | undefined;
    for (let i = 0; i < this.segs.length && !bad; i++) {
      const s = this.segs[i]!;
      if (i > 0 && s.base !== this.segs[i - 1]!.base + this.segs[i - 1]!.size) {
        bad = { at: s.base, torn: false, reason: 'segment files do not follow on' };
        break;
      }
      for (let off = Math.max(0, start - s.base); off < s.size; ) {
        const r = this.check(s, off);
        if (typeof r !== 'number') {
          // Only the end of the spill can be torn by a crash mid-append.
          bad = { at: s.base + off, torn: r.torn && i === this.segs.length - 1, reason: r.reason };
          break;
        }
        off += r;
      }
    }
    if (bad) {
      const bytes = this.size - bad.at;
      if (bad.torn) {
        this.log.warn({ offset: bad.at, droppedBytes: bytes, fileBytes: this.size, reason: bad.reason }, 'spill file ends in a frame torn by a crash; cut it off');
      } else {
        const aside = `${this.logPath}.damaged-${Date.now()}`;
        this.moveAside(bad.at, aside);
        this.log.error({ offset: bad.at, movedBytes: bytes, fileBytes: this.size, reason: bad.reason, file: aside }, 'spill file holds bytes that are not frames; moved them aside and replaying what precedes them');
      }
      this.cutAt(bad.at);
    }
    this.inheritedEnd = this.size;
    this.acked = this.read = start;
  }

  /** Everything from `at` on, into `file` (and `file`.<n> for each later segment), kept for a person to look at. */
  private moveAside(at: number, file: string): void {
    let n = 0;
    for (const s of this.segs) {
      if (s.base + s.size <= at) continue;
      const from = Math.max(0, at - s.base);
      const target = n === 0 ? file : `${file}.${n}`;
      n++;
      if (from === 0 && s !== this.tail) renameSync(s.path, target);
      else this.copyRange(s, from, s.size, target);
    }
  }

  /** Ends the spill at `at`: later segments go, the one holding `at` becomes the last. */
  private cutAt(at: number): void {
    while (this.segs.length > 1 && this.tail.base >= at && this.tail.base > 0) {
      const gone = this.segs.pop()!;
      if (gone.fd !== undefined) closeSync(gone.fd);
      rmSync(gone.path, { force: true });
    }
    const tail = this.tail;
    // Opened to read it, it cannot be cut or appended to.
    if (this.reading === tail && tail.fd !== undefined) {
      closeSync(tail.fd);
      tail.fd = undefined;
      this.reading = undefined;
    }
    tail.fd ??= openSync(tail.path, 'a+', 0o600);
    const keep = Math.max(0, at - tail.base);
    if (keep < tail.size) ftruncateSync(tail.fd, keep);
    tail.size = keep;
    this.size = tail.base + keep;
  }

  private get tail(): Segment {
    return this.segs[this.segs.length - 1]!;
  }

  /** The segment holding byte `at` (the last one for the end). */
  private segmentAt(at: number): Segment {
    for (const s of this.segs) if (at < s.base + s.size) return s;
    return this.tail;
  }

  /** A descriptor to read `s` with: the last segment's own, or one kept open until another is read. */
  private fdOf(s: Segment): number {
    if (s.fd !== undefined) return s.fd;
    if (this.reading && this.reading !== s && this.reading.fd !== undefined) {
      closeSync(this.reading.fd);
      this.reading.fd = undefined;
    }
    s.fd = openSync(s.path, 'r');
    this.reading = s;
    return s.fd;
  }

  private dropSegment(s: Segment): void {
    if (s.fd !== undefined) closeSync(s.fd);
    s.fd = undefined;
    if (this.reading === s) this.reading = undefined;
    rmSync(s.path, { force: true });
  }

  /**
   * A file written before frames had a magic and a CRC (u32 key length, u32 value length, f64
   * seq): its unacknowledged frames are rewritten in this format, through a rewrite as in keep(),
   * so that an upgrade neither replays nor sets aside an existing backlog.
   */
  private upgradeLegacy(pos: number): boolean {
    const seg = this.segs[0]!;
    // Earlier versions wrote one file only.
    if (this.segs.length !== 1 || seg.base !== 0 || seg.size === 0) return false;
    const fd = seg.fd!;
    const h = Buffer.alloc(legacyHeaderBytes);
    readSync(fd, h, 0, Math.min(4, seg.size), 0);
    // An earlier file can start with the same four bytes (a first key of 476 bytes reads as magic,
    // version, flags): it is the current format only if its first frame checks out.
    if (h[0] === magic && h[1] === version && h[3] === 0 && typeof this.check(seg, 0) === 'number') return false;
    const starts: number[] = [];
    let end = 0;
    while (end + legacyHeaderBytes <= seg.size) {
      readSync(fd, h, 0, legacyHeaderBytes, end);
      const frame = legacyHeaderBytes + h.readUInt32LE(0) + h.readUInt32LE(4);
      // Sequence numbers were counts: anything else is not a frame of that format.
      const seq = h.readDoubleLE(8);
      if (end + frame > seg.size || !Number.isSafeInteger(seq) || seq < 0) break;
      starts.push(end);
      end += frame;
    }
    if (starts.length === 0) return false; // not that format either: recover() sets it aside
    const from = starts.includes(pos) || pos === end ? pos : 0;
    const legacySize = seg.size;
    const out = this.beginRewrite();
    let batch: Encoded[] = [];
    let frames = 0;
    try {
      for (const at of starts) {
        if (at < from) continue;
        readSync(fd, h, 0, legacyHeaderBytes, at);
        const keyLen = h.readUInt32LE(0);
        const body = Buffer.allocUnsafe(keyLen + h.readUInt32LE(4));
        readSync(fd, body, 0, body.length, at + legacyHeaderBytes);
        batch.push({ seq: h.readDoubleLE(8), key: body.toString('utf8', 0, keyLen), value: body.subarray(keyLen) });
        frames++;
        if (batch.length === 1_000) {
          this.writeFrames(out, batch);
          batch = [];
        }
      }
      this.writeFrames(out, batch);
    } catch (err) {
      this.abandon(out);
      throw err;
    }
    this.commitRewrite(out);
    this.log.warn({ frames, acknowledgedBytes: from, legacyBytes: legacySize, tornBytes: legacySize - end }, 'spill file was in the earlier frame format; rewrote its unacknowledged frames');
    return true;
  }

  /** The length of the intact frame at `at`, or why there is none. */
  private checkAt(at: number): number | { torn: boolean; reason: string } {
    const s = this.segmentAt(at);
    return this.check(s, at - s.base);
  }

  /** The length of the intact frame at `off` in `s`, or why there is none (torn: it could be a crash mid-append). */
  private check(s: Segment, off: number): number | { torn: boolean; reason: string } {
    const fd = this.fdOf(s);
    const left = s.size - off;
    const header = Buffer.alloc(headerBytes);
    const got = readSync(fd, header, 0, Math.min(headerBytes, left), off);
    if (got < headerBytes) return { torn: true, reason: 'incomplete header' };
    if (header[0] !== magic || header[1] !== version || header[3] !== 0) {
      return { torn: this.zeroFrom(s, off), reason: 'no frame magic' };
    }
    const payload = header.readUInt32LE(4) + header.readUInt32LE(8);
    if (headerBytes + payload > left) return { torn: true, reason: 'frame longer than the file' };
    const body = Buffer.allocUnsafe(payload);
    readSync(fd, body, 0, payload, off + headerBytes);
    if (frameCrc(header, 0, body, 0, payload) !== header.readUInt32LE(20)) {
      return { torn: headerBytes + payload === left, reason: 'CRC mismatch' };
    }
    return headerBytes + payload;
  }

  /** A crash can leave the file longer than what reached it, the gap reading as zeros. */
  private zeroFrom(s: Segment, off: number): boolean {
    const fd = this.fdOf(s);
    const chunk = Buffer.allocUnsafe(64 * 1024);
    for (let at = off; at < s.size; ) {
      const n = readSync(fd, chunk, 0, Math.min(chunk.length, s.size - at), at);
      if (n <= 0) break;
      for (let i = 0; i < n; i++) if (chunk[i] !== 0) return false;
      at += n;
    }
    return true;
  }

  private copyRange(s: Segment, from: number, to: number, file: string): void {
    const out = openSync(file, 'wx', 0o600);
    try {
      const fd = this.fdOf(s);
      const chunk = Buffer.allocUnsafe(1 << 20);
      for (let off = from, w = 0; off < to; ) {
        const n = readSync(fd, chunk, 0, Math.min(chunk.length, to - off), off);
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
    const buf = encodeFrames(events);
    let tail = this.tail;
    if (tail.size >= this.segmentBytes) tail = this.roll();
    let written = 0;
    try {
      while (written < buf.length) written += writeSync(tail.fd!, buf, written, buf.length - written, tail.size + written);
    } catch (err) {
      // Part written, then a failure (the disk filled): cut the part off. Left there, the file
      // (opened to append) took the next frames after it, out of line with what was counted, so
      // reading stopped at it for good and a restart set everything after it aside.
      if (written > 0) {
        try {
          ftruncateSync(tail.fd!, tail.size);
        } catch {
          // Nothing more to do here: recover() cuts a torn tail at the next start.
        }
      }
      throw err;
    }
    tail.size += buf.length;
    this.size += buf.length;
  }

  /** Starts a new last segment at the end. */
  private roll(): Segment {
    const prev = this.tail;
    const p = path.join(this.dir, `spill.log.${this.size}`);
    // Fails if the name is taken: nothing may be appended to bytes of unknown origin.
    const seg: Segment = { base: this.size, size: 0, path: p, fd: openSync(p, 'ax+', 0o600) };
    this.segs.push(seg);
    if (prev.fd !== undefined) closeSync(prev.fd);
    prev.fd = undefined;
    return seg;
  }

  /** Reads the next frames after what was already read, up to the limits (at least one frame). */
  readNext(maxEvents: number, maxBytes: number): Encoded[] {
    const out: Encoded[] = [];
    if (this.read >= this.size) return out;
    // A frame never spans two segments: one read takes frames from one segment.
    const s = this.segmentAt(this.read);
    const fd = this.fdOf(s);
    const start = this.read - s.base;
    const want = Math.min(s.size - start, Math.max(maxBytes, headerBytes));
    let buf = Buffer.allocUnsafe(want);
    let got = readSync(fd, buf, 0, want, start);
    let off = 0;
    while (out.length < maxEvents && off + headerBytes <= got) {
      if (buf[off] !== magic || buf[off + 1] !== version) {
        throw new Error(`Spill file ${s.path} holds no frame at byte ${start + off} (of ${s.size})`);
      }
      const keyLen = buf.readUInt32LE(off + 4);
      const valueLen = buf.readUInt32LE(off + 8);
      const frame = headerBytes + keyLen + valueLen;
      if (off + frame > got) {
        if (out.length > 0) break;
        // A single frame larger than maxBytes: read it whole.
        buf = Buffer.allocUnsafe(frame);
        got = readSync(fd, buf, 0, frame, start);
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
  private savePosition(text: string): void {
    const tmp = `${this.posPath}.tmp`;
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, this.posPath);
  }

  /** Marks the oldest `bytes` as delivered; deletes each segment once all of it is. */
  ack(bytes: number): void {
    this.acked += bytes;
    if (this.acked >= this.size && this.read >= this.size) {
      this.empty();
      return;
    }
    this.savePosition(String(this.acked));
    // After the position: a process killed in between finds them acknowledged and deletes them.
    while (this.segs.length > 1 && this.segs[0]!.base + this.segs[0]!.size <= this.acked) this.dropSegment(this.segs.shift()!);
  }

  /** Everything is acknowledged: back to one empty `spill.log`. */
  private empty(): void {
    // With several segments the end is saved first, so that a process killed among the deletions
    // finds what is left acknowledged rather than a position in a segment that is gone.
    if (this.segs.length > 1) this.savePosition(String(this.acked));
    for (const s of this.segs.slice(0, -1)) this.dropSegment(s);
    const tail = this.tail;
    let fd: number;
    if (tail.base === 0) {
      ftruncateSync(tail.fd!, 0);
      fd = tail.fd!;
    } else {
      this.dropSegment(tail);
      fd = openSync(this.logPath, 'a+', 0o600);
    }
    this.segs = [{ base: 0, size: 0, path: this.logPath, fd }];
    this.size = this.acked = this.read = this.inheritedEnd = 0;
    this.savePosition('0');
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
    for (let off = this.acked; off + headerBytes <= end; ) {
      const s = this.segmentAt(off);
      // Not through the last segment's descriptor: it appends (O_APPEND), wherever a write asks to go.
      const fd = openSync(s.path, 'r+');
      try {
        for (; off + headerBytes <= end && off < s.base + s.size; ) {
          readSync(fd, header, 0, headerBytes, off - s.base);
          if (header[0] !== magic) throw new Error(`Spill file ${s.path} holds no frame at byte ${off - s.base} (of ${s.size})`);
          flag[0] = header[2]! | flagUnknown;
          writeSync(fd, flag, 0, 1, off - s.base + 2);
          off += headerBytes + header.readUInt32LE(4) + header.readUInt32LE(8);
        }
      } finally {
        closeSync(fd);
      }
    }
  }

  /** Forgets what was read but not acknowledged, so it is read (and sent) again. */
  rewind(): void {
    this.read = this.acked;
  }

  /** Puts events in front of everything not yet acknowledged (see keep). */
  prepend(events: readonly Encoded[]): void {
    this.keep(events, []);
  }

  /**
   * Keeps, at close, what only memory holds, each where it belongs in the order of the spill:
   * `older` (in memory before anything was spilled) in front of everything unacknowledged, and
   * `behind` (taken into memory once everything spilled had been read back) after what was read
   * back and before what was spilled since. Rewrites the spill into one new file (see beginRewrite).
   */
  keep(older: readonly Encoded[], behind: readonly Encoded[]): void {
    if (older.length === 0 && behind.length === 0) return;
    const out = this.beginRewrite();
    try {
      this.writeFrames(out, older);
      this.copyInto(out, this.acked, this.read);
      this.writeFrames(out, behind);
      this.copyInto(out, this.read, this.size);
    } catch (err) {
      this.abandon(out);
      throw err;
    }
    this.commitRewrite(out);
  }

  /**
   * A rewrite replaces every segment with one new `spill.log` holding only what is unacknowledged.
   * It is written under a name of its own; saving that name with the position (0) is the commit:
   * a process killed before it keeps the old segments and position, one killed after it finishes
   * the switch at its next start (finishRewrite). Either way nothing is replayed twice or lost,
   * where resetting the position and then renaming replayed the old file whole after a crash in
   * between.
   */
  private beginRewrite(): Rewrite {
    const p = path.join(this.dir, `spill.log.tmp-${randomBytes(6).toString('hex')}`);
    return { path: p, fd: openSync(p, 'w+', 0o600), size: 0 };
  }

  private writeFrames(out: Rewrite, events: readonly Encoded[]): void {
    if (events.length === 0) return;
    const buf = encodeFrames(events);
    for (let w = 0; w < buf.length; ) w += writeSync(out.fd, buf, w, buf.length - w, out.size + w);
    out.size += buf.length;
  }

  /** Copies bytes [from, to) of the spill to the end of `out`. */
  private copyInto(out: Rewrite, from: number, to: number): void {
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (const s of this.segs) {
      const a = Math.max(from, s.base);
      const b = Math.min(to, s.base + s.size);
      if (a >= b) continue;
      const fd = this.fdOf(s);
      for (let off = a; off < b; ) {
        const n = readSync(fd, chunk, 0, Math.min(chunk.length, b - off), off - s.base);
        if (n <= 0) throw new Error(`Spill file ${s.path} ended at byte ${off - s.base}, before ${b - s.base}`);
        for (let w = 0; w < n; ) w += writeSync(out.fd, chunk, w, n - w, out.size + w);
        out.size += n;
        off += n;
      }
    }
  }

  private abandon(out: Rewrite): void {
    try {
      closeSync(out.fd);
    } finally {
      rmSync(out.path, { force: true });
    }
  }

  private commitRewrite(out: Rewrite): void {
    this.savePosition(`0 ${path.basename(out.path)}`);
    renameSync(out.path, this.logPath);
    for (const s of this.segs) {
      if (s.fd !== undefined) closeSync(s.fd);
      s.fd = undefined;
      // spill.log itself was replaced by the rename.
      if (s.path !== this.logPath) rmSync(s.path, { force: true });
    }
    this.reading = undefined;
    this.segs = [{ base: 0, size: out.size, path: this.logPath, fd: out.fd }];
    this.size = out.size;
    this.acked = this.read = this.inheritedEnd = 0;
    this.savePosition('0');
  }

  close(): void {
    this.closeFiles();
    this.release();
  }

  private closeFiles(): void {
    for (const s of this.segs) {
      if (s.fd !== undefined) closeSync(s.fd);
      s.fd = undefined;
    }
    this.reading = undefined;
  }

  /** The lease: the lock file's mtime, renewed while the lock is still this holder's. */
  private renewLease(): void {
    let mine = false;
    try {
      mine = readFileSync(this.lockPath, 'utf8') === this.lockToken;
      if (mine) {
        const now = new Date();
        utimesSync(this.lockPath, now, now);
      }
    } catch {
      // Gone, or moved aside for a moment by a process judging it: counted as not ours.
    }
    if (mine) {
      this.leaseMisses = 0;
      return;
    }
    // Twice in a row: once can be another process putting it back after judging it live.
    if (++this.leaseMisses === 2) {
      this.log.error({ dir: this.dir }, 'the spill directory lock is no longer this process\'s (its lease was not renewed in time?): another process may use the directory, so events may be sent twice or lost');
    }
  }

  private release(): void {
    clearInterval(this.leaseTimer);
    try {
      if (readFileSync(this.lockPath, 'utf8') === this.lockToken) rmSync(this.lockPath, { force: true });
    } catch {
      // Already gone.
    }
    held.delete(this.realDir);
  }
}

function encodeFrames(events: readonly Encoded[]): Buffer {
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
  return buf;
}

/**
 * Which PID namespace of which running kernel this process is in: a pid means something only
 * there. The boot id tells kernels (hosts, and one host across reboots) apart, the namespace's
 * inode the namespaces of one kernel (containers sharing a volume). Without /proc (macOS, BSD)
 * the host name is all there is.
 */
function pidNamespace(): string {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const ns = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1];
    if (boot !== '' && ns !== undefined) return `${boot}/${ns}`;
  } catch {
    // No /proc: below.
  }
  return `host:${hostName()}`;
}

function hostName(): string {
  return os.hostname().replace(/\s/g, '_') || 'unknown';
}

/**
 * When this process started, in clock ticks after boot (/proc/self/stat, field 22): with the pid
 * and the boot id (in the namespace), it tells this process from an earlier one that had the same
 * pid. Undefined without /proc.
 */
function processStart(): string | undefined {
  try {
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its ')'.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    return start !== undefined && /^\d+$/.test(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A lock's content: `pid random namespace refreshMs host start.thread` (`start` is '-' when
 * unknown); earlier versions wrote the first five fields, or `pid random`.
 */
function parseLock(text: string): { pid: number; ns: string | undefined; refreshMs: number; host: string; start: string | undefined; thread: string | undefined } {
  const [pid = '', , ns, refresh, host, proc] = text.trim().split(' ');
  const refreshMs = Number(refresh);
  const dot = proc?.lastIndexOf('.') ?? -1;
  const start = proc !== undefined && dot > 0 ? proc.slice(0, dot) : undefined;
  return {
    pid: Number.parseInt(pid, 10),
    ns,
    // Bounded: a lock must not make a taker wait for ever.
    refreshMs: Number.isFinite(refreshMs) && refreshMs > 0 ? Math.min(refreshMs, 60_000) : defaultLockRefreshMs,
    host: host ?? 'this host',
    start: start === '-' ? undefined : start,
    thread: proc !== undefined && dot > 0 ? proc.slice(dot + 1) : undefined,
  };
}

/** Blocks the thread: taking the lock is part of creating the logger, which is synchronous. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, ms));
}

/**
 * A lock from another PID namespace or host, renewed at `mtime` last: whether its holder is alive
 * is known only from its lease. Waits until the lease is renewed (alive), runs out (stale) or
 * the lock changes; at most one lease, only while a lock from elsewhere is fresh (after the holder
 * was killed, say), so that a restarted process waits rather than fails.
 */
function judgeLease(file: string, seen: string, mtime: number, leaseMs: number, log: SpillLog, holder: string): 'alive' | 'stale' | 'changed' {
  const deadline = Math.min(mtime + leaseMs, Date.now() + leaseMs);
  if (Date.now() >= deadline) return 'stale';
  log.warn({ file, lock: seen, waitMs: deadline - Date.now() }, `spill directory is locked by ${holder}; waiting for its lease to be renewed or to run out`);
  const step = Math.min(250, Math.max(5, leaseMs / (leasePeriods * 4)));
  while (Date.now() < deadline) {
    sleepSync(Math.min(step, deadline - Date.now()));
    try {
      if (readFileSync(file, 'utf8') !== seen) return 'changed';
      if (statSync(file).mtimeMs !== mtime) return 'alive';
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'changed';
      throw err;
    }
  }
  return 'stale';
}

/**
 * One process per spill directory: two writers would interleave frames and replay each other's.
 * The lock file appears whole (written under a name of its own, then linked into place, which
 * fails if one exists). Its holder is judged by its pid within the same PID namespace (gone:
 * stale at once), and by its lease from elsewhere (a pid of another namespace means nothing
 * here: a live holder's lock was taken and events were lost). A stale lock is moved aside and
 * compared before it is deleted, so a process that judged it stale never deletes a lock another
 * has just taken or its holder has just renewed. Returns the lock's content, which only this
 * holder has.
 */
function lock(file: string, refreshMs: number, log: SpillLog): string {
  const dir = path.dirname(file);
  const ns = pidNamespace();
  const start = processStart();
  const token = `${process.pid} ${randomBytes(8).toString('hex')} ${ns} ${refreshMs} ${hostName()} ${start ?? '-'}.${threadId}`;
  const mine = `${file}.${process.pid}.${token.split(' ')[1]}`;
  writeFileSync(mine, token, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        // Its lease starts now: written before a wait of up to a lease, the lock looked that old to
        // the next claimant judging by lease, which found it expired and took it too.
        const now = new Date();
        utimesSync(mine, now, now);
        linkSync(mine, file);
        return token;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`Cannot lock spill directory ${dir}: ${messageOf(err)}`, { cause: err });
      }
      let seen: string;
      let mtime: number;
      try {
        seen = readFileSync(file, 'utf8');
        mtime = statSync(file).mtimeMs;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const holder = parseLock(seen);
      // An earlier version's lock names no namespace: judged as before, by its pid.
      const sameNamespace = holder.ns === undefined || holder.ns === ns;
      // This thread's own holds are in `held`, checked before. A lock with this process's pid and
      // start time is another thread's (module state, `held` included, is per thread: two worker
      // threads both took the directory); with another start time, or from an earlier version
      // that wrote none, it is an earlier process's with the same pid (pid 1 in a container),
      // taken at once as before. Whether another thread is alive shows only in its lease, which a
      // thread that ended without closing its logger no longer renews. (Without /proc neither
      // start is known, and a lock with this pid is judged by its lease: it may be another thread's.)
      const otherThread = sameNamespace && holder.pid === process.pid && holder.thread !== undefined && holder.start === start;
      const byLease = !sameNamespace || otherThread;
      if (byLease) {
        const who = !otherThread
          ? 'a process in another PID namespace or on another host'
          : holder.thread === String(threadId)
            ? 'an earlier logger of this thread that was not closed (or a second copy of the SDK loaded in it)'
            : `another thread of this process (thread ${holder.thread ?? 'unknown'})`;
        const verdict = judgeLease(file, seen, mtime, leasePeriods * holder.refreshMs, log, who);
        if (verdict === 'changed') continue;
        if (verdict === 'alive') {
          throw new Error(
            otherThread
              ? `Spill directory ${dir} is in use by another thread of this process (thread ${holder.thread ?? 'unknown'}; it renews its lease); give each logger its own buffer.spillDir.`
              : `Spill directory ${dir} is in use by process ${holder.pid} on ${holder.host} (another PID namespace or host; it renews its lease); give each process its own spillDir.`,
          );
        }
      } else if (sameNamespace) {
        if (Number.isInteger(holder.pid) && holder.pid > 0 && holder.pid !== process.pid && alive(holder.pid)) {
          throw new Error(`Spill directory ${dir} is in use by process ${holder.pid}; give each process its own spillDir.`);
        }
      }
      const aside = `${mine}.stale`;
      try {
        renameSync(file, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (readFileSync(aside, 'utf8') !== seen || (byLease && statSync(aside).mtimeMs !== mtime)) {
        // Another process took the lock after it was read, or its holder renewed it: put it back.
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
