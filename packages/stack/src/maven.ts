import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readdirSync, readSync } from 'node:fs';
import path from 'node:path';

/**
 * Runs Maven in batch mode. Downloads go to the user's Maven repository (~/.m2), the result into
 * the stack's cache folder, so a second `stack up` needs no network.
 *
 * Checksums are strict (`--strict-checksums`): Maven's default policy only warns about a download
 * whose checksum fails, a warning `-q` hides, and keeps the file, so a jar cut short in transit
 * was copied into the cache and failed every start of the component that loads it.
 */
export function runMaven(args: string[], log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('mvn', ['-B', '-q', '--strict-checksums', '-Dmaven.wagon.http.retryHandler.count=3', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.length > 20_000) output = output.slice(-20_000);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('error', (err) =>
      reject(new Error(`Cannot run Maven (mvn): ${err.message}. Install Maven 3.8+ and Java 17+.`, { cause: err })),
    );
    child.once('close', (code) => {
      if (code === 0) {
        resolve();
        return;
      }
      log(output);
      reject(new Error(`mvn ${args.join(' ')} failed with exit code ${code}:\n${output.split('\n').slice(-25).join('\n')}`));
    });
  });
}

const endOfCentralDirectory = Buffer.from([0x50, 0x4b, 0x05, 0x06]);
/** The end-of-central-directory record without a comment. */
const recordBytes = 22;
/** The record plus the longest zip comment. */
const tailBytes = recordBytes + 65_535;

/**
 * True when the file ends as a zip ends (with its end-of-central-directory record). A jar cut
 * short, in transit or while it was copied or unpacked, does not, and the JVM then fails on a
 * missing class at every start. It does not prove every entry intact; it is cheap enough to run
 * on every start.
 */
export function isWholeJar(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    if (size < recordBytes) return false;
    // Jars almost never carry an archive comment, so their record is the last 22 bytes: one small
    // read each instead of 64 KiB each. Kafka's 45 jars then take about a millisecond to check.
    const last = Buffer.alloc(recordBytes);
    readSync(fd, last, 0, recordBytes, size - recordBytes);
    if (last.subarray(0, 4).equals(endOfCentralDirectory)) return true;
    const n = Math.min(size, tailBytes);
    const tail = Buffer.alloc(n);
    readSync(fd, tail, 0, n, size - n);
    return tail.lastIndexOf(endOfCentralDirectory) >= 0;
  } catch {
    return false; // unreadable: not whole
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The names of the entries of `dir` that are not whole jars (see isWholeJar); none when `dir` is missing. */
export function damagedJars(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((name) => !isWholeJar(path.join(dir, name))).sort();
}
