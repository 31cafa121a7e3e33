import { once } from 'node:events';
import { type FileHandle, open, rm, stat } from 'node:fs/promises';
import type { WriteStream } from 'node:fs';
import { AuditInputError } from './audit-query.js';

const reasons: Record<string, string> = {
  ENOENT: 'its directory does not exist',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'it is a directory',
  ENOTDIR: 'a part of the path is not a directory',
  EROFS: 'the file system is read-only',
  ENOSPC: 'the disk is full',
};

function cannotWrite(option: string, file: string, err: unknown): AuditInputError {
  const code = (err as NodeJS.ErrnoException).code;
  const reason = (code && reasons[code]) ?? (err as Error).message;
  return new AuditInputError(`cannot write ${option} ${file}: ${reason}${code ? ` (${code})` : ''}`);
}

/**
 * A file named by an option, opened before any work so a wrong path fails at once with the
 * option named, not as an unhandled stream 'error' after the query ran. It is opened for append
 * (nothing is truncated yet); `stream()` empties it when the writing starts, `discard()` removes
 * it again if this command created it and wrote nothing.
 */
export class OutputFile {
  private out: WriteStream | undefined;
  private failed: Error | undefined;

  private constructor(
    readonly path: string,
    private readonly option: string,
    private readonly handle: FileHandle,
    private readonly created: boolean,
  ) {}

  static async open(file: string, option = '--out'): Promise<OutputFile> {
    const existed = await stat(file).then(
      () => true,
      () => false,
    );
    try {
      return new OutputFile(file, option, await open(file, 'a'), !existed);
    } catch (err) {
      throw cannotWrite(option, file, err);
    }
  }

  /** Empties the file and returns a writer that waits for the disk (backpressure). */
  async writer(): Promise<(text: string) => Promise<void>> {
    await this.handle.truncate(0);
    // The stream closes the handle when it ends: with autoClose false, the handle's own close()
    // never settled while a stream made from it was open (Node 20), and the command hung there.
    const out = this.handle.createWriteStream({ autoClose: true, start: 0 });
    out.on('error', (err) => (this.failed ??= err));
    this.out = out;
    return async (text: string) => {
      if (this.failed) throw cannotWrite(this.option, this.path, this.failed);
      if (!out.write(text)) await once(out, 'drain').catch((err: unknown) => Promise.reject(cannotWrite(this.option, this.path, err)));
    };
  }

  /** Flushes and closes; throws if any write failed. */
  async close(): Promise<void> {
    if (this.out) {
      const out = this.out;
      const closed = once(out, 'close').catch(() => undefined);
      out.end();
      await closed;
    } else {
      try {
        await this.handle.close();
      } catch (err) {
        this.failed ??= err as Error;
      }
    }
    if (this.failed) throw cannotWrite(this.option, this.path, this.failed);
  }

  /** Closes without writing; removes the file when this command created it. */
  async discard(): Promise<void> {
    if (this.out) {
      const closed = once(this.out, 'close').catch(() => undefined);
      this.out.destroy();
      await closed;
    } else {
      await this.handle.close().catch(() => undefined);
    }
    if (this.created) await rm(this.path, { force: true });
  }
}
