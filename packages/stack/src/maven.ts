import { spawn } from 'node:child_process';

/**
 * Runs Maven in batch mode. Downloads go to the user's Maven repository (~/.m2), the result into
 * the stack's cache folder, so a second `stack up` needs no network.
 */
export function runMaven(args: string[], log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('mvn', ['-B', '-q', '-Dmaven.wagon.http.retryHandler.count=3', ...args], {
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
