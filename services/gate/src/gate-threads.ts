import type { Worker } from 'node:worker_threads';
import type { KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';
import { deadLetterMessage, packMessages, transferables, unpackMessages, type BatchContext, type OutputRecord, type PackedMessages } from '@dlog/kafka';
import { backoffDelay, startThread } from '@dlog/runtime';
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

/** A batch's outputs and the counts of what became of its events. */
interface Answer {
  outputs: OutputRecord[];
  stats: GateStats;
}

interface Pending {
  resolve(answer: Answer): void;
  reject(err: Error): void;
  thread: Slot;
  timer: NodeJS.Timeout;
}

interface Slot {
  index: number;
  worker: Worker;
  inFlight: number;
  dead: boolean;
  started: boolean;
  /** Settles when the thread has loaded the policy and keys and warmed up, or failed to. */
  ready: Promise<void>;
}

export interface GateThreadOptions {
  /**
   * A batch not answered in this long means the thread is stuck (a pathological input, a bug):
   * it is terminated, the batch fails and is read again, and a new thread takes its place. A
   * healthy thread answers a full fetch in well under a second.
   */
  batchTimeoutMs?: number;
  /** The thread's script; tests give one that stops on a marked message. */
  threadUrl?: URL;
}

/** A batch's thread died or was terminated (stuck) with the batch in hand. */
export class ThreadLostError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'ThreadLostError';
  }
}

const running = (s: Slot) => s.started && !s.dead;

function addStats(into: GateStats, delta: GateStats): void {
  into.kept += delta.kept;
  into.dropped += delta.dropped;
  into.deadLettered += delta.deadLettered;
  for (const [reason, n] of Object.entries(delta.byReason)) into.byReason[reason] = (into.byReason[reason] ?? 0) + n;
}

function answerOf(msg: Extract<ThreadReply, { ok: true }>): Answer {
  return { outputs: msg.outputs.map((o) => ({ topic: o.topic, messages: unpackMessages(o.batch) })), stats: msg.stats };
}

/** How long `process` waits for a replacement thread while it isolates a batch's culprit. */
const replacementWaitMs = 60_000;

/**
 * Gate worker threads. Each batch goes to the least busy running thread as one transferred buffer
 * and comes back the same way; the caller (the transactional processor) keeps the offsets and the
 * transaction. A thread that dies or hangs fails its batches (they are not committed, so they
 * are read again) and is replaced, with backoff if replacements keep failing to start.
 */
export class GateThreads {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly restarts: number[] = [];
  private nextId = 1;
  private closing = false;
  /** Set once the first threads all started: from then on a dead thread is replaced. */
  private startedAll = false;
  private readonly batchTimeoutMs: number;
  private readonly threadUrl: URL;

  constructor(
    count: number,
    private readonly wiring: GateWiring,
    private readonly stats: GateStats,
    private readonly log: Logger,
    opts: GateThreadOptions = {},
  ) {
    this.batchTimeoutMs = opts.batchTimeoutMs ?? 60_000;
    this.threadUrl = opts.threadUrl ?? new URL('./gate-thread.ts', import.meta.url);
    for (let i = 0; i < count; i++) {
      this.restarts.push(0);
      this.slots.push(this.spawn(i));
    }
  }

  private spawn(index: number): Slot {
    const worker = startThread(this.threadUrl, { ...this.wiring }, `gate-${index}`);
    let readyResolve!: () => void;
    let readyReject!: (err: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      readyResolve = resolve;
      readyReject = reject;
    });
    // Awaited by ready() at start; a replacement's failure is handled (logged, retried) in fail.
    ready.catch(() => undefined);
    const slot: Slot = { index, worker, inFlight: 0, dead: false, started: false, ready };
    worker.on('message', (msg: ThreadReply | { ready: true }) => {
      if (!('id' in msg)) {
        slot.started = true;
        this.restarts[index] = 0;
        readyResolve();
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      slot.inFlight--;
      if (msg.ok) {
        p.resolve(answerOf(msg));
      } else {
        const err = new Error(msg.error.message);
        err.name = msg.error.name;
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
        clearTimeout(p.timer);
        p.reject(new ThreadLostError(`gate thread ${index} stopped with the batch in hand: ${err.message}`, err));
      }
      if (this.closing) return;
      // The first threads failing to start is the gate's start failing (createGate rejects);
      // a replacement failing is retried with backoff, so a passing cause (memory pressure)
      // does not leave the gate without threads for good.
      if (!this.startedAll) return;
      const attempt = this.restarts[index]!++;
      const delay = attempt === 0 ? 0 : backoffDelay(attempt - 1, 500, 30_000);
      this.log.error({ err, thread: index, attempt: attempt + 1, delayMs: delay }, 'gate thread died; starting a new one (its batches are read again)');
      setTimeout(() => {
        if (!this.closing) this.slots[index] = this.spawn(index);
      }, delay).unref();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    return slot;
  }

  /** Resolves once every thread has started (policy, keys and contracts loaded, warmed up). */
  async ready(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.ready));
    this.startedAll = true;
  }

  private merge(delta: GateStats): void {
    addStats(this.stats, delta);
  }

  /** A batch through the least busy thread; its counts are added to the gate's stats. */
  async run(messages: KafkaMessage[], ctx: BatchContext): Promise<OutputRecord[]> {
    const answer = await this.answer(messages, ctx);
    this.merge(answer.stats);
    return answer.outputs;
  }

  private answer(messages: KafkaMessage[], ctx: BatchContext): Promise<Answer> {
    // Running threads first: a replacement still warming up would hold the batch back.
    const live = this.slots.filter((s) => !s.dead);
    const running = live.filter((s) => s.started);
    const candidates = running.length > 0 ? running : live;
    const where = `${ctx.topic}[${ctx.partition}] offsets ${messages[0]?.offset ?? '-'}..${messages[messages.length - 1]?.offset ?? '-'}`;
    if (candidates.length === 0) return Promise.reject(new Error(`no gate thread is running for ${where} (they are being restarted; see the log)`));
    let slot = candidates[0]!;
    for (const s of candidates) if (s.inFlight < slot.inFlight) slot = s;
    const id = this.nextId++;
    const req: ThreadRequest = { id, ctx, batch: packMessages(messages) };
    return new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.log.error({ thread: slot.index, batch: where, timeoutMs: this.batchTimeoutMs }, 'gate thread did not answer in time; replacing it');
        void slot.worker.terminate();
      }, this.batchTimeoutMs);
      timer.unref();
      this.pending.set(id, {
        resolve,
        reject: (err) => {
          const message = `gate batch ${where} on thread ${slot.index}: ${err.message}`;
          reject(err instanceof ThreadLostError ? new ThreadLostError(message, err) : new Error(message, { cause: err }));
        },
        thread: slot,
        timer,
      });
      slot.inFlight++;
      slot.worker.postMessage(req, transferables(req.batch));
    });
  }

  /**
   * A batch through the threads, as the gate's transactional loop runs it. A thread that dies or
   * hangs with the batch in hand fails it, and the loop reads it again; were one message the cause
   * (no input found so far does it: processBatch dead-letters what throws, but a thread can still
   * run out of memory or loop), every new thread would die on the same batch and the partition
   * would stop for good. So a lost batch is tried again in halves, down to single messages; a
   * single message is tried on a thread of its own, started for it, so that no other batch shares
   * the blame, and one that stops such a thread twice goes to the dead-letter topic
   * (`gate_thread_failed`) with its bytes, the rest as usual, all in the one transaction. A thread
   * lost for a cause of its own (or another batch's) costs a split batch, nothing else. The counts
   * are added once the whole batch is through: a split that fails midway is read again whole.
   */
  async process(messages: KafkaMessage[], ctx: BatchContext): Promise<OutputRecord[]> {
    const answer = await this.isolating(messages, ctx);
    this.merge(answer.stats);
    return answer.outputs;
  }

  private async isolating(messages: KafkaMessage[], ctx: BatchContext): Promise<Answer> {
    if (!this.slots.some(running)) await this.replacement();
    try {
      return await this.answer(messages, ctx);
    } catch (err) {
      if (!(err instanceof ThreadLostError) || this.closing) throw err;
      if (messages.length === 1) return this.quarantine(messages[0]!, ctx);
      this.log.warn({ batch: `${ctx.topic}[${ctx.partition}]`, messages: messages.length, err: err.message }, 'a gate thread stopped with this batch in hand: trying it again in halves');
      const mid = messages.length >>> 1;
      const halves = [await this.isolating(messages.slice(0, mid), ctx), await this.isolating(messages.slice(mid), ctx)];
      // One output per topic, in order, as a whole batch gives.
      const byTopic = new Map<string, OutputRecord>();
      const stats: GateStats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} };
      for (const half of halves) {
        addStats(stats, half.stats);
        for (const o of half.outputs) {
          const seen = byTopic.get(o.topic);
          if (seen) seen.messages.push(...o.messages);
          else byTopic.set(o.topic, { topic: o.topic, messages: [...o.messages] });
        }
      }
      return { outputs: [...byTopic.values()], stats };
    }
  }

  /** One message on threads started for it alone: dead-lettered if it stops two of them. */
  private async quarantine(m: KafkaMessage, ctx: BatchContext): Promise<Answer> {
    const losses: string[] = [];
    while (losses.length < 2) {
      if (this.closing) throw new Error('the gate is closing');
      const answer = await this.alone(m, ctx);
      if ('outputs' in answer) return answer;
      losses.push(answer.lost);
    }
    // Not the input's content: nothing of it is logged or put in the letter's reason.
    this.log.error({ batch: `${ctx.topic}[${ctx.partition}]`, offset: m.offset, losses }, 'a message stopped a gate thread of its own twice: dead-lettered');
    const failure = { reason: 'gate_thread_failed', message: `a gate thread processing this message alone stopped, twice (${losses.join('; ')})`, step: 'gate' };
    return {
      outputs: [{ topic: this.wiring.topics.deadLetters, messages: [deadLetterMessage(m, ctx, failure, 'gate')] }],
      stats: { kept: 0, dropped: 0, deadLettered: 1, byReason: { gate_thread_failed: 1 } },
    };
  }

  /** One message on a new thread that takes nothing else; `lost` says how that thread ended. */
  private alone(m: KafkaMessage, ctx: BatchContext): Promise<Answer | { lost: string }> {
    return new Promise((resolve, reject) => {
      const worker = startThread(this.threadUrl, { ...this.wiring }, 'gate-quarantine');
      let ready = false;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (then: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        void worker.terminate();
        then();
      };
      // Ended before it was ready: the thread could not start (the gate's own trouble, not the
      // message's); the batch fails and is read again.
      const ended = (why: string) => settle(() => (ready ? resolve({ lost: why }) : reject(new Error(`a gate thread to try one message alone did not start: ${why}`))));
      timer = setTimeout(() => ended(`not ready within ${replacementWaitMs / 1000} s`), replacementWaitMs);
      worker.on('message', (msg: ThreadReply | { ready: true }) => {
        if (!('id' in msg)) {
          ready = true;
          clearTimeout(timer);
          timer = setTimeout(() => ended(`no answer within ${this.batchTimeoutMs / 1000} s`), this.batchTimeoutMs);
          const req: ThreadRequest = { id: 0, ctx, batch: packMessages([m]) };
          worker.postMessage(req, transferables(req.batch));
          return;
        }
        if (msg.ok) settle(() => resolve(answerOf(msg)));
        else settle(() => reject(Object.assign(new Error(msg.error.message), { name: msg.error.name })));
      });
      worker.on('error', (err) => ended(err.message));
      worker.on('exit', (code) => ended(`exit code ${code}`));
    });
  }

  /**
   * Until some thread runs: a lost one is replaced on the next turn of the loop, or after a backoff.
   * Running, not only started: one that stopped before it was ready counts towards the backoff
   * between replacements, which is there for threads that cannot start.
   */
  private async replacement(): Promise<void> {
    const deadline = Date.now() + replacementWaitMs;
    while (!this.closing && !this.slots.some(running)) {
      if (Date.now() > deadline) throw new Error(`no gate thread came back within ${replacementWaitMs / 1000} s (see the log)`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const p of this.pending.values()) clearTimeout(p.timer);
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
