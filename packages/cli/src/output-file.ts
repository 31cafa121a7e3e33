import { randomBytes } from 'node:crypto';
import { constants, unlinkSync } from 'node:fs';
import { access, type FileHandle, lstat, open, readlink, rename, rm, stat } from 'node:fs/promises';
import { constants as os } from 'node:os';
import path from 'node:path';
import { AuditInputError } from './audit-query.js';

const reasons: Record<string, string> = {
  ENOENT: 'its directory does not exist',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'it is a directory',
  ENOTDIR: 'a part of the path is not a directory',
  EROFS: 'the file system is read-only',
  ENOSPC: 'the disk is full',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'its symbolic links go round in a loop',
};

function cannotWrite(option: string, file: string, err: unknown): AuditInputError {
  const code = (err as NodeJS.ErrnoException).code;
  const reason = (code && reasons[code]) ?? (err as Error).message;
  return new AuditInputError(`cannot write ${option} ${file}: ${reason}${code ? ` (${code})` : ''}`);
}

/** Rows are gathered into writes of this size, not a system call each. */
const chunkChars = 64 * 1024;

/** Output files not yet complete; `dlog` stopped by a signal removes their temporary files. */
const unfinished = new Set<OutputFile>();
const stopSignals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function stopped(signal: NodeJS.Signals): void {
  for (const f of unfinished) f.removeTemporarySync();
  // Then end as the signal would have without a handler (a shell reports 130 for Ctrl-C, 143 for a
  // kill): no exit-time teardown, during which an embedded query still running crashed the
  // process (a segfault, 139) after process.exit().
  for (const s of stopSignals) process.off(s, stopped);
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  else process.exit(128 + (os.signals[signal] ?? 0));
}

function track(f: OutputFile): void {
  if (unfinished.size === 0) for (const s of stopSignals) process.on(s, stopped);
  unfinished.add(f);
}

function untrack(f: OutputFile): void {
  unfinished.delete(f);
  // Only while a file is written: otherwise the signals keep their default, immediate effect.
  if (unfinished.size === 0) for (const s of stopSignals) process.off(s, stopped);
}

/** Whether an output file is still being written (main lets it finish when stdout closes early). */
export function outputFilesInProgress(): boolean {
  return unfinished.size > 0;
}

/** The file a path names, through symbolic links (also to a file that does not exist yet). */
async function followLinks(file: string): Promise<string> {
  let p = file;
  for (let hops = 0; hops < 40; hops++) {
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isSymbolicLink()) return p;
    p = path.resolve(path.dirname(p), await readlink(p));
  }
  throw Object.assign(new Error('too many symbolic links'), { code: 'ELOOP' });
}

/**
 * A file named by an option, opened before any work so a wrong path fails at once with the
 * option named, not after the query ran. The text goes to a temporary file beside it
 * (`<file>.tmp-<pid>-<random>`), renamed over the file only once all of it is written and on disk:
 * an export that fails or is interrupted (Ctrl-C, a kill) leaves the file as it was and no
 * temporary file behind. Before, the file was emptied at the first page, and a failure on a later
 * one left a shorter file that looked complete, in place of the one it had held.
 *
 * Kept from writing in place: a symbolic link is written through (the link stays, the file it
 * names is replaced); a file this user may not write is refused; a replaced file keeps its mode
 * (and, where allowed, owner), and a new one gets the umask's. A device or pipe (/dev/null, a FIFO)
 * is written directly: it holds nothing to keep, and renaming over it would replace the device.
 */
export class OutputFile {
  private pending = '';
  private handleOpen = true;

  private constructor(
    /** As given, for messages. */
    readonly path: string,
    private readonly option: string,
    private readonly handle: FileHandle,
    /** Where the bytes end up (links followed). */
    private readonly target: string,
    /** The temporary file renamed over `target`; undefined when `target` is written directly. */
    private readonly temp: string | undefined,
  ) {
    track(this);
  }

  static async open(file: string, option = '--out'): Promise<OutputFile> {
    let made: OutputFile | undefined;
    try {
      const target = await followLinks(file);
      const existing = await stat(target).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      if (existing?.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      if (existing && !existing.isFile()) return new OutputFile(file, option, await open(target, 'a'), target, undefined);
      if (existing) await access(target, constants.W_OK);
      const temp = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      let handle: FileHandle;
      try {
        // 'wx': never through something already at that name. Created with at most the final mode
        // (the umask narrows it), so the export is never readable by more people than the file was.
        handle = await open(temp, 'wx', existing ? existing.mode & 0o777 : 0o666);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (existing && (code === 'EACCES' || code === 'EPERM')) {
          throw new AuditInputError(`cannot write ${option} ${file}: its directory is not writable (${code}); the file is replaced by one written beside it, so the directory must be`);
        }
        throw err;
      }
      made = new OutputFile(file, option, handle, target, temp);
      if (existing) {
        await handle.chmod(existing.mode & 0o777);
        // Only root may give a file away; anyone else ends up owning the new file.
        if (existing.uid !== process.getuid?.() || existing.gid !== process.getgid?.()) await handle.chown(existing.uid, existing.gid).catch(() => undefined);
      }
      return made;
    } catch (err) {
      await made?.discard();
      throw err instanceof AuditInputError ? err : cannotWrite(option, file, err);
    }
  }

  /** A writer that waits for the disk (backpressure); nothing reaches the file until close(). */
  async writer(): Promise<(text: string) => Promise<void>> {
    return async (text: string) => {
      this.pending += text;
      if (this.pending.length >= chunkChars) await this.flush();
    };
  }

  private async flush(): Promise<void> {
    if (!this.handleOpen) throw cannotWrite(this.option, this.path, new Error('written after close() or discard()'));
    const data = Buffer.from(this.pending);
    this.pending = '';
    try {
      for (let at = 0; at < data.length; ) at += (await this.handle.write(data, at)).bytesWritten;
    } catch (err) {
      throw cannotWrite(this.option, this.path, err);
    }
  }

  /** Writes what is left and puts the file in place; throws, leaving the file as it was, if any of it failed. */
  async close(): Promise<void> {
    try {
      await this.flush();
      // On disk before it takes the file's name: after a crash, the old file or the whole new one.
      if (this.temp) await this.handle.sync();
      this.handleOpen = false;
      await this.handle.close();
      if (this.temp) await rename(this.temp, this.target);
    } catch (err) {
      await this.discard();
      throw err instanceof AuditInputError ? err : cannotWrite(this.option, this.path, err);
    }
    untrack(this);
  }

  /** Gives up: the file is left as it was. */
  async discard(): Promise<void> {
    this.pending = '';
    if (this.handleOpen) {
      this.handleOpen = false;
      await this.handle.close().catch(() => undefined);
    }
    // Not after close() put it in place: the temporary name is gone, and must stay free.
    if (this.temp && unfinished.has(this)) await rm(this.temp, { force: true }).catch(() => undefined);
    untrack(this);
  }

  /** For a signal handler, which cannot wait. */
  removeTemporarySync(): void {
    if (!this.temp) return;
    try {
      unlinkSync(this.temp);
    } catch {
      // Already renamed or removed.
    }
  }
}
