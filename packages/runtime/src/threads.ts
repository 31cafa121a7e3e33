import { Worker } from 'node:worker_threads';

/**
 * Starts a worker thread on a module of this project, TypeScript or not. `data` reaches the
 * thread as `workerData` (structured-cloned), next to the `__entry` the boot file reads.
 */
export function startThread(entry: URL, data: Record<string, unknown>, name: string): Worker {
  return new Worker(new URL('./thread-boot.mjs', import.meta.url), {
    workerData: { ...data, __entry: entry.href },
    name,
  });
}
