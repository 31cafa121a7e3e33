import { closeSync, lstatSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';

/** A secret file that is not this user's alone: refused with what to do, never used. */
export class PrivateFileError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file} ${problem}; it holds a secret, so it must be a regular file of this user's, mode 600. Remove it (a new one is made) or fix it (chmod 600) if it is yours`);
    this.name = 'PrivateFileError';
  }
}

/**
 * A secret kept in a file of its own (the local PII key, the query endpoint's token): made with
 * `make()` when missing (created exclusively, mode 600, in a directory made 700), read when there.
 * A file already there is used only if it is a regular file owned by this user that nobody else
 * can read or write: one planted in a shared directory (a data directory under /tmp) would
 * otherwise hand its author the key or the token.
 */
export function privateFile(file: string, make: () => string): { content: string; created: boolean } {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let created = false;
  try {
    const fd = openSync(file, 'wx', 0o600);
    try {
      writeSync(fd, make());
    } finally {
      closeSync(fd);
    }
    created = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(file);
  if (!st.isFile()) throw new PrivateFileError(file, 'is not a regular file (a link?)');
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw new PrivateFileError(file, `belongs to user ${st.uid}, not to this process's user ${uid}`);
  if ((st.mode & 0o077) !== 0) throw new PrivateFileError(file, `can be read or written by others (mode ${(st.mode & 0o777).toString(8)})`);
  return { content: readFileSync(file, 'utf8').trim(), created };
}
