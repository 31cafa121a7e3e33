// Entry of every worker thread the project starts. Worker threads do not inherit the TypeScript
// loader the main thread runs under (tsx), so a .ts entry registers it first, then loads.
import { workerData } from 'node:worker_threads';

const entry = workerData.__entry;
if (entry.endsWith('.ts')) {
  const { register } = await import('tsx/esm/api');
  register();
}
await import(entry);
