import type { Consumer, Kafka, KafkaMessage } from 'kafkajs';
import type * as RdKafka from 'node-rdkafka';
import type { Logger } from 'pino';
import { byPartition, clientErrorLog, metadataRefreshMs, nativeCall, nativeClientFor, nativeConsumerSettings, pollMessages, RebalanceBarrier, type KafkaClientKind, type NativeKafka } from '@dlog/kafka';

/** What the sink does with one partition's messages; it resolves each message it takes. */
export interface BatchHandler {
  (
    batch: { topic: string; partition: number; messages: KafkaMessage[] },
    ctl: { resolveOffset(offset: string): void; isRunning(): boolean; isStale(): boolean },
  ): Promise<void>;
}

/**
 * Where the sink's messages come from: a consumer group whose offsets are committed only after
 * the rows they carry are written. A message not resolved by the handler (the table was full)
 * is delivered again once its topic is resumed.
 */
export interface SinkSource {
  start(topics: string[], handle: BatchHandler): Promise<void>;
  commit(topic: string, offsets: { partition: number; offset: string }[]): Promise<void>;
  pause(topic: string): void;
  resume(topic: string): void;
  /** Stop handing out messages (what is in hand is not committed and comes again later). */
  pauseAll(): void;
  disconnect(): Promise<void>;
}

export interface SourceEvents {
  /** The group gave this member a new assignment: buffered, uncommitted rows will come again. */
  onAssigned(assignment: Record<string, number[]>): void;
  /**
   * Partitions are about to be given up (librdkafka only; kafkajs has no such hook): resolves once
   * no insert of theirs is in flight.
   */
  onRevoking?(): Promise<void>;
  /** The consumer failed for good. */
  onCrash(err: Error): void;
}

export interface SourceSettings {
  groupId: string;
  maxFetchBytes: number;
  maxBytesPerPartition: number;
}

/**
 * The librdkafka client the sink consumes with, or undefined for kafkajs. Unlike the other
 * workers, `auto` means kafkajs here; only `native` asks for librdkafka. The sink holds every
 * message of a batch until ClickHouse has it: kafkajs hands messages out as views into one fetch
 * buffer, where node-rdkafka copies each into a Buffer of its own, and those 50k buffers a batch
 * cost allocation and garbage collection. Interleaved on a 2-core machine, with kafkajs the sink
 * used 24-31 µs of CPU a row against 30-41 with librdkafka (bench:sink, 5 pairs: steady median 61k
 * against 54k rows/s), and draining a 150k backlog through the pipeline 4.4-5.2 s of sink CPU
 * against 5.2-5.8 s (3 pairs); the live and latency figures did not move.
 *
 * A view keeps its whole fetch response in memory, also the part of it a full table did not take
 * (fetched again later), so on kafkajs the sink can hold about one fetch (a quarter of
 * DLOG_SINK_MAX_BUFFERED_BYTES, 16 MiB at most) more than that limit.
 */
export function sinkNativeClient(kind: KafkaClientKind, brokers: string[], clientId: string, log?: Logger): Parameters<typeof nativeSource>[0] | undefined {
  return kind === 'native' ? nativeClientFor(kind, brokers, clientId, log) : undefined;
}

export function kafkajsSource(kafka: Kafka, s: SourceSettings, events: SourceEvents): SinkSource {
  let topics: string[] = [];
  // Set false by pauseAll (stopping): from then on nothing is handed out and nothing resumes,
  // whatever the tables ask, so a drain does not keep taking new messages.
  let handing = true;
  // Topics the tables asked to pause. kafkajs builds a new consumer group when it restarts after a
  // crash, which starts with nothing paused (and refuses pause and resume until it exists): the
  // pauses are applied again at every join.
  const paused = new Set<string>();
  const consumer: Consumer = kafka.consumer({
    groupId: s.groupId,
    maxBytes: s.maxFetchBytes,
    maxBytesPerPartition: s.maxBytesPerPartition,
    maxWaitTimeInMs: 250,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
    metadataMaxAge: metadataRefreshMs,
  });
  /** pause/resume, unless kafkajs is between groups: the next join applies `paused` then. */
  const apply = (fn: (tps: { topic: string }[]) => void, ts: Iterable<string>) => {
    const tps = [...ts].map((topic) => ({ topic }));
    if (tps.length === 0) return;
    try {
      fn(tps);
    } catch (err) {
      if (!/not initialized/.test((err as Error).message)) throw err;
    }
  };
  return {
    async start(ts, handle) {
      topics = ts;
      await consumer.connect();
      consumer.on(consumer.events.GROUP_JOIN, (e) => {
        apply((tps) => consumer.pause(tps), handing ? paused : topics);
        events.onAssigned(e.payload.memberAssignment);
      });
      consumer.on(consumer.events.CRASH, (e) => {
        if (!e.payload.restart) events.onCrash(e.payload.error);
      });
      await consumer.subscribe({ topics, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 1,
        eachBatch: ({ batch, resolveOffset, isRunning, isStale }) =>
          handle(batch, { resolveOffset, isRunning: () => handing && isRunning(), isStale }),
      });
    },
    commit: (topic, offsets) => consumer.commitOffsets(offsets.map((o) => ({ topic, ...o }))),
    pause(topic) {
      paused.add(topic);
      apply((tps) => consumer.pause(tps), [topic]);
    },
    resume(topic) {
      paused.delete(topic);
      if (handing) apply((tps) => consumer.resume(tps), [topic]);
    },
    pauseAll() {
      handing = false;
      apply((tps) => consumer.pause(tps), topics);
    },
    disconnect: () => consumer.disconnect(),
  };
}

const NO_OFFSET = -168; // ERR__NO_OFFSET: nothing to commit

/**
 * The same source on librdkafka. One loop polls; each poll's messages go to the handler one
 * partition at a time. Partitions whose messages were not all taken are paused or not, as the
 * handler decided, and sought back to the first message not taken. Rebalances are applied
 * between polls (see RebalanceBarrier), so a poll's messages all belong to the assignment they
 * are handled under. Commits are asynchronous; librdkafka answers each on a later poll, so the
 * loop keeps polling (paused partitions deliver nothing) until disconnect, also after a crash.
 */
export function nativeSource(
  native: { kafka: NativeKafka; brokers: string[]; clientId: string },
  s: SourceSettings,
  events: SourceEvents,
  log: Logger,
): SinkSource {
  const K = native.kafka;
  let consumer: RdKafka.KafkaConsumer | undefined;
  let polling = false;
  let handing = true;
  let loop: Promise<void> | undefined;
  let assignment: { topic: string; partition: number }[] = [];
  const paused = new Set<string>();
  const pendingCommits: { key: string; resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout }[] = [];

  const barrier = new RebalanceBarrier(
    log,
    () => consumer,
    (assigned) => {
      assignment = assigned ?? [];
      if (!assigned) return;
      const byTopic: Record<string, number[]> = {};
      for (const t of assigned) (byTopic[t.topic] ??= []).push(t.partition);
      events.onAssigned(byTopic);
      for (const topic of paused) pausePartitions(topic);
    },
    events.onRevoking,
  );

  const commitKey = (tps: { topic: string; partition: number; offset?: number }[]) =>
    tps
      .map((t) => `${t.topic}:${t.partition}@${t.offset}`)
      .sort()
      .join(',');

  const pausePartitions = (topic: string) => {
    const tps = assignment.filter((a) => a.topic === topic);
    if (tps.length > 0 && consumer) consumer.pause(tps);
  };

  const crash = (err: Error) => {
    handing = false;
    events.onCrash(err);
  };

  /** One poll, handed out partition by partition; what a partition did not take is read again. */
  async function once(c: RdKafka.KafkaConsumer, handle: BatchHandler): Promise<void> {
    const raw = await pollMessages(c, 10_000);
    if (raw.length === 0 || !handing) return;
    for (const { ctx, messages } of byPartition(raw)) {
      const g = { ...ctx, messages };
      let resolved = -1;
      try {
        await handle(g, {
          resolveOffset: (o) => {
            resolved = Number(o);
          },
          isRunning: () => polling && handing,
          // Rebalances wait for the poll to be handled (RebalanceBarrier): never stale here.
          isStale: () => false,
        });
      } catch (err) {
        crash(err as Error);
        return;
      }
      const first = Number(g.messages[0]!.offset);
      const last = Number(g.messages[g.messages.length - 1]!.offset);
      if (resolved < last) {
        // Not all taken (the table is full, or stopping): read the rest again later. If that
        // cannot be arranged, fetching would go on past them: stop instead (nothing past the
        // last insert is committed, so a restart reads them again).
        const offset = resolved >= first ? resolved + 1 : first;
        try {
          await nativeCall((cb) => c.seek({ topic: g.topic, partition: g.partition, offset }, 5_000, cb), 'seek', 10_000);
        } catch (err) {
          crash(Object.assign(new Error(`could not seek ${g.topic}[${g.partition}] back to ${offset} for messages a full table did not take: ${(err as Error).message}`), { cause: err }));
          return;
        }
      }
    }
  }

  async function run(c: RdKafka.KafkaConsumer, handle: BatchHandler): Promise<void> {
    let backoff = 200;
    while (polling) {
      try {
        await barrier.around(() => once(c, handle));
        backoff = 200;
      } catch (err) {
        if ((err as { isFatal?: boolean }).isFatal) {
          // The sink is failing for good; polling goes on only so pending commits get answers.
          if (handing) crash(err as Error);
        } else {
          log.warn({ err, retryInMs: backoff }, 'sink consume failed; polling again');
        }
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }

  return {
    async start(topics, handle) {
      const c = new K.KafkaConsumer(
        {
          'metadata.broker.list': native.brokers.join(','),
          'client.id': native.clientId,
          'group.id': s.groupId,
          'enable.auto.commit': false,
          'enable.auto.offset.store': false,
          'fetch.max.bytes': s.maxFetchBytes,
          'max.partition.fetch.bytes': s.maxBytesPerPartition,
          // librdkafka prefetches up to queued.max.messages.kbytes (64 MiB by default) on top of
          // what the tables hold; past that it waits fetch.queue.backoff.ms (see nativeFetchSettings).
          'fetch.wait.max.ms': 100,
          ...nativeConsumerSettings,
          'session.timeout.ms': 30_000,
          'heartbeat.interval.ms': 3_000,
          rebalance_cb: barrier.callback,
          offset_commit_cb: (err: RdKafka.LibrdKafkaError | null, tps: RdKafka.TopicPartitionOffset[]) => {
            const i = pendingCommits.findIndex((p) => p.key === commitKey(tps));
            if (i < 0) return;
            const [p] = pendingCommits.splice(i, 1);
            clearTimeout(p!.timer);
            if (err && err.code !== NO_OFFSET) p!.reject(Object.assign(new Error(`offset commit failed: ${err.message}`), { code: err.code, cause: err }));
            else p!.resolve();
          },
        },
        { 'auto.offset.reset': 'earliest' },
      );
      c.on('event.error', clientErrorLog(log));
      consumer = c;
      await nativeCall((cb) => c.connect({ timeout: 30_000 }, (err) => cb(err as RdKafka.LibrdKafkaError | null)), 'sink consumer connect', 40_000);
      c.setDefaultConsumeTimeout(20);
      c.subscribe(topics);
      polling = true;
      loop = run(c, handle);
      log.info({ librdkafka: K.librdkafkaVersion }, 'sink consuming on librdkafka');
    },
    commit(topic, offsets) {
      const c = consumer;
      if (!c) return Promise.reject(new Error('sink consumer is not connected'));
      const tps = offsets.map((o) => ({ topic, partition: o.partition, offset: Number(o.offset) }));
      return new Promise<void>((resolve, reject) => {
        const key = commitKey(tps);
        const timer = setTimeout(() => {
          const i = pendingCommits.findIndex((p) => p.key === key && p.timer === timer);
          if (i >= 0) pendingCommits.splice(i, 1);
          reject(new Error(`offset commit for ${key}: no answer within 30 s`));
        }, 30_000);
        pendingCommits.push({ key, resolve, reject, timer });
        try {
          c.commit(tps);
        } catch (err) {
          clearTimeout(timer);
          pendingCommits.pop();
          reject(err as Error);
        }
      });
    },
    pause(topic) {
      paused.add(topic);
      pausePartitions(topic);
    },
    resume(topic) {
      paused.delete(topic);
      const tps = assignment.filter((a) => a.topic === topic);
      if (tps.length > 0) consumer?.resume(tps);
    },
    pauseAll() {
      handing = false;
      if (assignment.length > 0) consumer?.pause(assignment);
    },
    async disconnect() {
      polling = false;
      await loop;
      const c = consumer;
      for (const p of pendingCommits.splice(0)) {
        clearTimeout(p.timer);
        p.reject(new Error('sink consumer disconnected before the commit was answered'));
      }
      // `consumer` stays set while leaving the group: that is a rebalance too, and librdkafka
      // waits for the barrier's unassign().
      if (c?.isConnected()) {
        await nativeCall((cb) => c.disconnect((err) => cb(err as RdKafka.LibrdKafkaError | null)), 'sink consumer disconnect', 15_000).catch((err: unknown) =>
          log.warn({ err }, 'sink consumer disconnect failed'),
        );
      }
      consumer = undefined;
    },
  };
}
