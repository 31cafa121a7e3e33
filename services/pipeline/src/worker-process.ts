import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface WorkerProcess {
  readonly name: string;
  readonly pid: number | undefined;
  /** Resolves with the exit code when the worker exits, expected or not. */
  readonly exited: Promise<number | null>;
  /** SIGTERM (a graceful drain and commit), SIGKILL after the grace period. */
  stop(graceMs: number): Promise<number | null>;
  /** The signal that ended it, once it has ended by one. */
  signal(): NodeJS.Signals | null;
}

/** "code 1", or "killed by SIGKILL": a code of null alone said nothing. */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return code === null && signal ? `killed by ${signal}` : `code ${code}`;
}

const mains: Record<string, string> = {
  gate: fileURLToPath(new URL('../../gate/src/main.ts', import.meta.url)),
  enricher: fileURLToPath(new URL('../../enricher/src/main.ts', import.meta.url)),
  alerter: fileURLToPath(new URL('../../alerter/src/main.ts', import.meta.url)),
};

/**
 * Starts one worker's main.ts as a child process and resolves once it reports ready. Workers that
 * do not touch the store run in their own processes, so they use the second core instead of
 * sharing one event loop with the sink.
 */
export async function startWorkerProcess(
  name: keyof typeof mains & string,
  env: NodeJS.ProcessEnv,
  readyTimeoutMs = 120_000,
  /** What sets the limit, named in the error when it passes. */
  limitSetBy?: string,
): Promise<WorkerProcess> {
  const main = mains[name];
  if (!main) throw new Error(`No worker called ${name}`);
  // WORKER_CPU_PROF_DIR (a developer's switch, see bench/pipeline.ts): a V8 CPU profile per worker.
  const profile = process.env.WORKER_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.WORKER_CPU_PROF_DIR}`] : [];
  // Detached: its own process group, so a Ctrl-C at the terminal reaches only the pipeline, which
  // stops the workers in order (a worker that got SIGINT too took the pipeline's SIGTERM as a
  // second signal and exited at once). Workers end with the pipeline either way (below, and on
  // the IPC channel closing: see startService).
  const child: ChildProcess = fork(main, [], { env, execArgv: ['--import', 'tsx', ...profile], stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // However this process ends (its own shutdown limit, a crash, process.exit), the worker does not
  // outlive it: an orphaned gate would go on consuming and holding its transactional id.
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  void exited.then(() => process.removeListener('exit', killOnExit));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      killOnExit();
      reject(new Error(`${name} did not report ready within ${readyTimeoutMs} ms${limitSetBy ? ` (${limitSetBy})` : ''}`));
    }, readyTimeoutMs);
    child.on('message', (m: { type?: string }) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${describeExit(code, child.signalCode)}) before it was ready`));
    });
  });
  return {
    name,
    pid: child.pid,
    exited,
    signal: () => child.signalCode,
    async stop(graceMs) {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
