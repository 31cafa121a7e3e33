import type { IHeaders, KafkaMessage, Message } from 'kafkajs';
import type * as RdKafka from 'node-rdkafka';
import type { Logger } from 'pino';
import type { NativeKafka } from './native.js';
import type { BatchContext, OutputRecord, TransactionalProcessor, TransactionalProcessorOptions } from './transactional-processor.js';

export interface NativeProcessorOptions extends Omit<TransactionalProcessorOptions, 'kafka' | 'native'> {
  native: NativeKafka;
  brokers: string[];
  clientId: string;
}

/** Messages taken per poll, at most; one transaction covers them (one per partition at concurrency 1). */
const maxMessages = 10_000;

/** librdkafka's "local queue full": the producer has more buffered than it may hold. */
const QUEUE_FULL = -184;

/** One produce() call: false when librdkafka's queue is full, any other error thrown. */
function tryProduce(
  p: RdKafka.Producer,
  topic: string,
  partition: number | null,
  value: Buffer | null,
  key: Message['key'],
  ts: number,
  headers: RdKafka.MessageHeader[] | undefined,
): boolean {
  try {
    p.produce(topic, partition, value, key ?? null, ts, undefined, headers);
    return true;
  } catch (err) {
    if ((err as { code?: number }).code !== QUEUE_FULL) throw err;
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A librdkafka call as a promise. Each call also gets a deadline of our own, a little past the
 * timeout librdkafka was given: a callback that never comes (seen while a broker was fenced and
 * came back) must not hold the loop forever; the loop then drops the client and starts over.
 */
export function nativeCall<T = void>(fn: (cb: (err: RdKafka.LibrdKafkaError | null | undefined, value?: T) => void) => void, what: string, deadlineMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      reject(Object.assign(new Error(`${what}: no answer from librdkafka within ${deadlineMs} ms`), { code: 'DEADLINE' }));
    }, deadlineMs);
    fn((err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(Object.assign(new Error(`${what}: ${err.message}`), { code: err.code, isFatal: err.isFatal, isRetriable: err.isRetriable, cause: err }));
      else resolve(value as T);
    });
  });
}

/**
 * One poll: up to `max` messages, returned as soon as none came for a moment or `maxMs` passed.
 * node-rdkafka's consume(n) alone waits until n messages or a pause in arrivals; under a steady
 * trickle that is never, and each hop held up to n messages' worth of time (at 5,000/s and
 * n = 10,000, two seconds), so messages are taken in small chunks against a deadline.
 */
export async function pollMessages(c: RdKafka.KafkaConsumer, max: number, maxMs = 100, chunk = 500): Promise<RdKafka.Message[]> {
  const start = Date.now();
  let out: RdKafka.Message[] = [];
  for (;;) {
    const want = Math.min(chunk, max - out.length);
    let got: RdKafka.Message[];
    try {
      got = await nativeCall<RdKafka.Message[]>((cb) => c.consume(want, cb), 'consume', 30_000);
    } catch (err) {
      // librdkafka's position is already past what earlier chunks returned: hand those out (an
      // error that persists comes back on the next poll, before any message).
      if (out.length > 0) return out;
      throw err;
    }
    if (out.length === 0) out = got;
    else for (const m of got) out.push(m);
    if (got.length < want || out.length >= max || Date.now() - start >= maxMs) return out;
  }
}

/**
 * librdkafka prefetches into a local queue; once the queue passes its limit
 * (queued.max.messages.kbytes, 64 MiB) it postpones the next fetch by fetch.queue.backoff.ms,
 * 1 s by default. A consumer that drains 64 MiB in under a second so waits out the rest of it:
 * bare consumption of 1.3 KB decisions capped at ~56k msg/s, with the process half idle. At 10 ms
 * the same consumer read 103-120k msg/s (scratch measurement, same broker, same run).
 */
export const nativeFetchSettings = { 'fetch.queue.backoff.ms': 10 } as const;

/**
 * How often a group consumer asks for its topics' metadata, in ms. Both clients default to 5
 * minutes, and only on such a refresh does a consumer see partitions added to a topic it reads
 * (or a topic it subscribed to before it existed): after `inference.raw` was given more
 * partitions, producers wrote to them at once and the gate read nothing from them for up to 5
 * minutes (test/processor.test.ts, on librdkafka and kafkajs alike: read in about 10.5 s with
 * this, not within 60 s without). A metadata request for a few topics every 10 s costs the broker
 * nothing.
 */
export const metadataRefreshMs = 10_000;

/** The librdkafka settings every long-lived group consumer here shares. */
export const nativeConsumerSettings = { ...nativeFetchSettings, 'topic.metadata.refresh.interval.ms': metadataRefreshMs } as const;

const ASSIGN = -175; // librdkafka ERR__ASSIGN_PARTITIONS

/**
 * Applies the group's rebalances between batches, never during one. librdkafka hands a
 * rebalance to the application and waits until it calls assign() or unassign(); holding that
 * call until the batch in hand has committed (or failed) means no other member can take a
 * partition whose messages this one is still processing, and this member never reads a
 * partition again from its committed offset while it still holds uncommitted work from it.
 */
export class RebalanceBarrier {
  private busy = false;
  private readonly queued: (() => void)[] = [];

  constructor(
    private readonly log: Logger,
    private readonly consumer: () => RdKafka.KafkaConsumer | undefined,
    private readonly onApplied?: (assigned: { topic: string; partition: number }[] | undefined) => void,
    /**
     * Awaited before partitions are given up: work on them that outlives the batch (the sink's
     * insert in flight) ends first, so the next owner never checks for rows still on their way.
     */
    private readonly beforeRevoke?: () => Promise<void>,
  ) {}

  /** The consumer's `rebalance_cb`. */
  readonly callback = (err: RdKafka.LibrdKafkaError | undefined, tps: RdKafka.Assignment[]): void => {
    const assign = err?.code === ASSIGN;
    const apply = () => {
      const c = this.consumer();
      if (!c) return;
      try {
        if (assign) c.assign(tps);
        else c.unassign();
        this.onApplied?.(assign ? tps.map((t) => ({ topic: t.topic, partition: t.partition })) : undefined);
      } catch (e) {
        this.log.warn({ err: e, assign }, 'applying a rebalance failed');
      }
    };
    const run = () => {
      if (assign || !this.beforeRevoke) return apply();
      // librdkafka waits for unassign(); no other member gets these partitions until then. Polls
      // go on meanwhile: they deliver the answers to commits the awaited work may be waiting for.
      // The unassign itself still waits for the batch in hand, as every rebalance does: done in
      // the middle of one, it made that batch's seeks fail on partitions no longer fetched.
      const applyBetweenBatches = () => {
        if (this.busy) this.queued.push(apply);
        else apply();
      };
      this.beforeRevoke().then(applyBetweenBatches, (e: unknown) => {
        this.log.warn({ err: e }, 'waiting out work on revoked partitions failed; giving them up anyway');
        applyBetweenBatches();
      });
    };
    if (this.busy) this.queued.push(run);
    else run();
  };

  /** Runs one batch (poll to commit) with rebalances held until it is over. */
  async around<T>(fn: () => Promise<T>): Promise<T> {
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
      for (const apply of this.queued.splice(0)) apply();
    }
  }
}

/**
 * A handler for a librdkafka client's 'event.error'. librdkafka reports every broker connection it
 * loses, so each kind of error is logged once per 30 s.
 */
export function clientErrorLog(log: Logger): (err: RdKafka.LibrdKafkaError) => void {
  const lastReported = new Map<string, number>();
  return (err) => {
    const now = Date.now();
    if (now - (lastReported.get(err.message) ?? 0) < 30_000) return;
    lastReported.set(err.message, now);
    log.warn({ err: { message: err.message, code: err.code } }, 'librdkafka reported an error (repeats within 30 s not logged)');
  };
}

/** The kafkajs message shape the workers were written against, from a librdkafka message. */
export function fromNative(m: RdKafka.Message): KafkaMessage {
  let headers: IHeaders | undefined;
  if (m.headers && m.headers.length > 0) {
    headers = {};
    for (const h of m.headers) {
      for (const k in h) {
        // A repeated header name gives an array, as kafkajs does.
        const prior = headers[k];
        const v = h[k] as Buffer | string;
        headers[k] = prior === undefined ? v : Array.isArray(prior) ? [...prior, v] : [prior as Buffer | string, v];
      }
    }
  }
  return {
    key: (m.key as Buffer | null | undefined) ?? null,
    value: m.value ?? null,
    // librdkafka reports -1 (or nothing) when a record carries no timestamp.
    timestamp: m.timestamp !== undefined && m.timestamp >= 0 ? String(m.timestamp) : (undefined as unknown as string),
    attributes: 0,
    offset: String(m.offset),
    headers: headers ?? {},
  };
}

function toNativeHeaders(headers: IHeaders | undefined): RdKafka.MessageHeader[] | undefined {
  if (!headers) return undefined;
  const out: RdKafka.MessageHeader[] = [];
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push({ [k]: x });
    else out.push({ [k]: v });
  }
  return out.length > 0 ? out : undefined;
}

interface Group {
  ctx: BatchContext;
  messages: KafkaMessage[];
  last: number;
}

/** A poll's messages by partition, in the order they came, in the kafkajs shape. */
export function byPartition(raw: RdKafka.Message[]): Group[] {
  const groups = new Map<string, Group>();
  for (const m of raw) {
    const id = `${m.topic}\u0000${m.partition}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { ctx: { topic: m.topic, partition: m.partition }, messages: [], last: m.offset }));
    g.messages.push(fromNative(m));
    g.last = m.offset;
  }
  return [...groups.values()];
}

/**
 * Splits a poll into work units: one per partition, and a big partition's batch into a few
 * pieces when `concurrency` asks for more units than there are partitions (process() may run
 * them side by side on worker threads). Pieces keep their order; outputs are joined in order.
 */
export function workUnits(groups: Group[], concurrency: number, minPiece = 500): { ctx: BatchContext; messages: KafkaMessage[] }[] {
  const total = groups.reduce((s, g) => s + g.messages.length, 0);
  const units: { ctx: BatchContext; messages: KafkaMessage[] }[] = [];
  for (const g of groups) {
    const want = concurrency > groups.length ? Math.ceil((concurrency * g.messages.length) / total) : 1;
    const pieces = Math.max(1, Math.min(want, Math.floor(g.messages.length / minPiece)));
    const size = Math.ceil(g.messages.length / pieces);
    for (let i = 0; i < g.messages.length; i += size) units.push({ ctx: g.ctx, messages: g.messages.slice(i, i + size) });
  }
  return units;
}

/**
 * The transactional consume → transform → produce loop on librdkafka, with the contract of the
 * kafkajs one: a poll's outputs and the offsets that cover it commit in one transaction, or
 * none of it does. On any failure the loop drops both clients and starts over from the
 * committed offsets (a new producer with the same transactional id fences and aborts whatever
 * was left open), so there is no seek bookkeeping to get wrong.
 */
export function createNativeProcessor(opts: NativeProcessorOptions): TransactionalProcessor {
  const log: Logger = opts.log.child({ component: 'processor', groupId: opts.groupId, client: 'librdkafka' });
  const K = opts.native;
  const brokers = opts.brokers.join(',');
  const concurrency = opts.concurrency ?? 1;
  let running = false;
  let loop: Promise<void> | undefined;
  let consumer: RdKafka.KafkaConsumer | undefined;
  let producer: RdKafka.Producer | undefined;
  let rebalance: RebalanceBarrier | undefined;

  const onClientError = clientErrorLog(log);

  async function open(): Promise<void> {
    const p = new K.Producer({
      'metadata.broker.list': brokers,
      'client.id': opts.clientId,
      'transactional.id': opts.transactionalId,
      'transaction.timeout.ms': 60_000,
      'linger.ms': 5,
      'batch.num.messages': 10_000,
      'queue.buffering.max.messages': 1_000_000,
      'queue.buffering.max.kbytes': 1_048_576,
      dr_cb: false,
    }, {
      // Java's partitioner, as kafkajs's default: a key lands on the same partition either way.
      partitioner: 'murmur2_random',
      // A record that cannot be delivered (say, its topic does not exist) fails the transaction
      // after 30 s instead of librdkafka's default 5 minutes; the batch is then done again.
      'message.timeout.ms': 30_000,
    });
    p.on('event.error', onClientError);
    producer = p;
    await nativeCall((cb) => p.connect({ timeout: 30_000 }, (err) => cb(err as RdKafka.LibrdKafkaError | null)), 'producer connect', 40_000);
    await nativeCall((cb) => p.initTransactions(30_000, cb), 'initTransactions', 40_000);
    // The barrier reaches this consumer even while close() disconnects it: leaving the group is a
    // rebalance too, and librdkafka waits for its unassign().
    let self: RdKafka.KafkaConsumer | undefined;
    const barrier = new RebalanceBarrier(log, () => self);
    rebalance = barrier;
    const c = new K.KafkaConsumer(
      {
        'metadata.broker.list': brokers,
        'client.id': opts.clientId,
        'group.id': opts.groupId,
        rebalance_cb: barrier.callback,
        'enable.auto.commit': false,
        'enable.auto.offset.store': false,
        'isolation.level': 'read_committed',
        'max.partition.fetch.bytes': opts.maxBytesPerPartition ?? 8 * 1024 * 1024,
        'fetch.max.bytes': 32 * 1024 * 1024,
        'fetch.wait.max.ms': 100,
        ...nativeConsumerSettings,
        'session.timeout.ms': 30_000,
        'heartbeat.interval.ms': 3_000,
      },
      { 'auto.offset.reset': (opts.fromBeginning ?? true) ? 'earliest' : 'latest' },
    );
    c.on('event.error', onClientError);
    self = c;
    consumer = c;
    await nativeCall((cb) => c.connect({ timeout: 30_000 }, (err) => cb(err as RdKafka.LibrdKafkaError | null)), 'consumer connect', 40_000);
    // A poll's chunk ends once no message arrived for this long (see pollMessages).
    c.setDefaultConsumeTimeout(20);
    c.subscribe(opts.topics);
  }

  async function close(): Promise<void> {
    const c = consumer;
    const p = producer;
    consumer = undefined;
    producer = undefined;
    // The consumer leaves the group first, so its partitions move on while the producer goes.
    if (c?.isConnected()) await nativeCall((cb) => c.disconnect((err) => cb(err as RdKafka.LibrdKafkaError | null)), 'consumer disconnect', 15_000).catch((err) => log.warn({ err }, 'consumer disconnect failed'));
    if (p?.isConnected()) await nativeCall((cb) => p.disconnect((err) => cb(err as RdKafka.LibrdKafkaError | null)), 'producer disconnect', 15_000).catch((err) => log.warn({ err }, 'producer disconnect failed'));
  }

  /**
   * Queues one record; when librdkafka's queue is full, waits for it to drain into the broker.
   * No closure on the common path: tsx names every function it creates (Object.defineProperty),
   * and one per record was 1-2% of a worker's CPU (perf).
   */
  function produce(p: RdKafka.Producer, topic: string, m: Message): Promise<void> | undefined {
    const value = m.value === null || m.value === undefined ? null : typeof m.value === 'string' ? Buffer.from(m.value) : m.value;
    const ts = m.timestamp !== undefined ? Number(m.timestamp) : Date.now();
    const headers = toNativeHeaders(m.headers);
    if (tryProduce(p, topic, m.partition ?? null, value, m.key ?? null, ts, headers)) return undefined;
    return (async () => {
      do {
        p.poll();
        await sleep(5);
      } while (!tryProduce(p, topic, m.partition ?? null, value, m.key ?? null, ts, headers));
    })();
  }

  /**
   * The batch in hand, for the line that says it failed: input topic, partition and offsets only,
   * never the payloads (they hold personal data).
   */
  let inHand: { topic: string; partition: number; firstOffset: string; lastOffset: string; count: number }[] = [];

  /** One poll and its transactions; returns how many batches committed. */
  async function cycle(c: RdKafka.KafkaConsumer, p: RdKafka.Producer): Promise<number> {
    inHand = [];
    const raw = await pollMessages(c, maxMessages);
    if (raw.length === 0) return 0;
    const t0 = Date.now();
    const groups = byPartition(raw);
    const describe = (g: Group) => ({ ...g.ctx, firstOffset: g.messages[0]?.offset ?? String(g.last), lastOffset: String(g.last), count: g.messages.length });
    if (concurrency <= 1) {
      // One batch at a time, as with kafkajs: a stateful process() (the alerter's) sees each
      // batch only after the one before it committed.
      for (const g of groups) {
        inHand = [describe(g)];
        await transact(c, p, [g], [await opts.process(g.messages, g.ctx)], t0);
      }
      return groups.length;
    }
    inHand = groups.map(describe);
    const units = workUnits(groups, concurrency);
    await transact(c, p, groups, await Promise.all(units.map((u) => opts.process(u.messages, u.ctx))), t0);
    return groups.length;
  }

  async function transact(c: RdKafka.KafkaConsumer, p: RdKafka.Producer, groups: Group[], outputs: OutputRecord[][], t0: number): Promise<void> {
    await nativeCall((cb) => p.beginTransaction(cb), 'beginTransaction', 30_000);
    try {
      for (const out of outputs) {
        for (const { topic, messages } of out) {
          for (const m of messages) {
            const waiting = produce(p, topic, m);
            if (waiting) await waiting;
          }
        }
      }
      const offsets = groups.map((g) => ({ topic: g.ctx.topic, partition: g.ctx.partition, offset: g.last + 1 }));
      await nativeCall((cb) => p.sendOffsetsToTransaction(offsets, c, 30_000, cb), 'sendOffsetsToTransaction', 40_000);
      await nativeCall((cb) => p.commitTransaction(60_000, cb), 'commitTransaction', 70_000);
    } catch (err) {
      await nativeCall((cb) => p.abortTransaction(30_000, cb), 'abortTransaction', 40_000).catch((abortErr: unknown) => log.warn({ err: abortErr }, 'transaction abort failed'));
      throw err;
    }
    const ms = Date.now() - t0;
    for (const g of groups) opts.onCommitted?.({ ...g.ctx, count: g.messages.length, lastOffset: String(g.last), ms });
  }

  async function run(): Promise<void> {
    let backoff = 200;
    while (running) {
      try {
        if (!consumer || !producer) await open();
        const c = consumer!;
        const p = producer!;
        // Only a commit shows the failure is over: the empty poll right after reconnecting
        // completes too, and resetting on it retried a batch that always fails every 0.8 s, with
        // a full reconnect each time.
        if ((await rebalance!.around(() => cycle(c, p))) > 0) backoff = 200;
      } catch (err) {
        if (!running) break;
        // Fatal: e.g. fenced by another instance with the same DLOG_INSTANCE_ID. Starting over
        // is still right (it fences that one in turn), but someone should look.
        const fatal = (err as { isFatal?: boolean }).isFatal === true;
        log[fatal ? 'error' : 'warn']({ err, retryInMs: backoff, batches: inHand }, 'batch failed; reconnecting and resuming from the committed offsets');
        inHand = [];
        await close();
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
    await close();
  }

  return {
    // node-rdkafka does not expose it; the broker fences this member's commits instead.
    memberId: () => undefined,
    async start() {
      running = true;
      await open();
      log.info({ librdkafka: K.librdkafkaVersion, topics: opts.topics }, 'transactional loop started on librdkafka');
      loop = run();
    },
    async stop() {
      running = false;
      await loop;
      await close();
    },
  };
}
