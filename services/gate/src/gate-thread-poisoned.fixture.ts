import { parentPort } from 'node:worker_threads';
import { unpackMessages } from '@dlog/kafka';
import type { ThreadRequest } from './gate-threads.js';

/**
 * For gate-threads.test.ts only: the real gate thread, except that a batch holding a message whose
 * value is `poison` ends the thread before it answers, as a thread that ran out of memory would.
 * Registered first, this listener sees each request before the real thread's does.
 */
parentPort!.on('message', (req: ThreadRequest) => {
  if (unpackMessages(req.batch).some((m) => m.value?.toString() === 'poison')) process.exit(3);
});
await import('./gate-thread.js');
