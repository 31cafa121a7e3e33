import type { Worker } from 'node:worker_threads';
import type { KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';
import { packMessages, transferables, unpackMessages, type BatchContext, type OutputRecord, type PackedMessages } from '@dlog/kafka';
import { startThread } from '@dlog/runtime';
import type { GateWiring } from './create-gate.js';
import type { GateStats } from './gate.js';

export interface ThreadRequest {
  id: number;
  ctx: BatchContext;
  batch: PackedMessages;
}

export type ThreadReply =
  | { id: number; ok: true; outputs: { topic: string; batch: PackedMessages }[]; stats: GateStats }
  | { id: number; ok: false; error: { name: string; message: string; stack?: string | undefined } };

interface Pending {
  resolve(out: OutputRecord[]): void;
  reject(err: Error): void;
  thread: Slot;
}

interface Slot {
  worker: Worker;
  inFlight: number;
  dead: boolean;
  started: boolean;
  /** Settles when the thread has loaded the policy and keys, or failed to. */
  ready: Promise<void>;
}

/**
 * Gate worker threads. Each batch goes to the least busy thread as one transferred buffer and
 * comes back the same way; the caller (the transactional processor) keeps the offsets and the
 * transaction. A thread that dies fails its batches (they are not committed, so they are read
 * again) and is replaced for the next batch.
 */
export class GateThreads {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closing = false;

  constructor(
    count: number,
    private readonly wiring: GateWiring,
    private readonly stats: GateStats,
    private readonly log: Logger,
  ) {
    for (let i = 0; i < count; i++) this.slots.push(this.spawn(i));
  }

  private spawn(index: number): Slot {
    const worker = startThread(new URL('./gate-thread.ts', import.meta.url), { ...this.wiring }, `gate-${index}`);
    let readyResolve!: () => void;
    let readyReject!: (err: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      readyResolve = resolve;
      readyReject = reject;
    });
    ready.catch(() => undefined);
    const slot: Slot = { worker, inFlight: 0, dead: false, started: false, ready };
    worker.on('message', (msg: ThreadReply | { ready: true }) => {
      if (!('id' in msg)) {
        slot.started = true;
        readyResolve();
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      slot.inFlight--;
      if (msg.ok) {
        this.merge(msg.stats);
        p.resolve(msg.outputs.map((o) => ({ topic: o.topic, messages: unpackMessages(o.batch) })));
      } else {
        const err = new Error(`gate thread failed on a batch: ${msg.error.message}`);
        err.stack = msg.error.stack ?? err.stack;
        p.reject(err);
      }
    });
    const fail = (err: Error) => {
      if (slot.dead) return;
      slot.dead = true;
      readyReject(new Error(`gate thread ${index} did not start: ${err.message}`, { cause: err }));
      for (const [id, p] of this.pending) {
        if (p.thread !== slot) continue;
        this.pending.delete(id);
        p.reject(new Error(`gate thread ${index} stopped with the batch in hand: ${err.message}`, { cause: err }));
      }
      // A thread that never started would fail the same way again: that is the gate's start
      // failing (createGate rejects), not something to retry forever.
      if (!this.closing && slot.started) {
        this.log.error({ err, thread: index }, 'gate thread died; starting a new one (its batches are read again)');
        this.slots[index] = this.spawn(index);
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    return slot;
  }

  /** Resolves once every thread has started (policy, keys and contracts loaded). */
  async ready(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.ready));
  }

  private merge(delta: GateStats): void {
    this.stats.kept += delta.kept;
    this.stats.dropped += delta.dropped;
    this.stats.deadLettered += delta.deadLettered;
    for (const [reason, n] of Object.entries(delta.byReason)) this.stats.byReason[reason] = (this.stats.byReason[reason] ?? 0) + n;
  }

  run(messages: KafkaMessage[], ctx: BatchContext): Promise<OutputRecord[]> {
    const live = this.slots.filter((s) => !s.dead);
    if (live.length === 0) return Promise.reject(new Error('no gate thread is running (they failed to restart; see the log)'));
    let slot = live[0]!;
    for (const s of live) if (s.inFlight < slot.inFlight) slot = s;
    const id = this.nextId++;
    const req: ThreadRequest = { id, ctx, batch: packMessages(messages) };
    return new Promise<OutputRecord[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, thread: slot });
      slot.inFlight++;
      slot.worker.postMessage(req, transferables(req.batch));
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
