import { parentPort, threadId, workerData } from 'node:worker_threads';
import { packMessages, transferables, unpackMessages } from '@dlog/kafka';
import { createLogger } from '@dlog/runtime';
import { gateDeps, type GateWiring } from './create-gate.js';
import { processBatch, type GateStats } from './gate.js';
import type { ThreadReply, ThreadRequest } from './gate-threads.js';
import { warmUp } from './warm-up.js';

/**
 * A gate worker thread: the same `processBatch` as the main thread, on batches posted to it.
 * It holds no Kafka connection and no offsets; a failure is replied, never swallowed, so the
 * main thread aborts that batch's transaction and the batch is read again.
 */
const wiring = workerData as GateWiring;
const log = createLogger({ name: 'gate', level: wiring.config.logLevel }).child({ component: 'gate-thread', thread: threadId });
const deps = gateDeps(wiring, log);
const port = parentPort!;

port.on('message', (req: ThreadRequest) => {
  void (async () => {
    try {
      const messages = unpackMessages(req.batch);
      await deps.schemas.prepare(messages.map((m) => m.value));
      const stats: GateStats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} };
      const outputs = processBatch(messages, req.ctx, deps, stats).map((o) => ({ topic: o.topic, batch: packMessages(o.messages) }));
      const reply: ThreadReply = { id: req.id, ok: true, outputs, stats };
      port.postMessage(reply, outputs.flatMap((o) => transferables(o.batch)));
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      const reply: ThreadReply = { id: req.id, ok: false, error: { name: e.name, message: e.message, stack: e.stack } };
      port.postMessage(reply);
    }
  })();
});
await warmUp(deps);
port.postMessage({ ready: true });
