import type { Admin, Kafka, KafkaMessage, Message } from 'kafkajs';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import {
  avroType,
  AvroDecoder,
  createRegistry,
  encodeFramed,
  loadSchema,
  registerAvro,
  registryFetcher,
  valueSubject,
  type AlertRecord,
} from '@dlog/contracts';
import { createTransactionalProcessor, nativeClientFor, ensureWorkerTopics, prefixedTopics, type TransactionalProcessor } from '@dlog/kafka';
import { applyBaseline, decodeBaseline, encodeBaseline, maxRecordBytes } from './baselines.js';
import { checkpointKey, decodeCheckpoint, encodeCheckpoint } from './checkpoint.js';
import { CommittedState, uncounted } from './committed-state.js';
import { observationReaderType, toDeadLetterObservation, toDecisionObservation, type ObservedDecision } from './decode.js';
import { cloneState, createEngine, type AlerterState, type Checkpoint } from './engine.js';
import { parseSubjectKey, splitKey } from './evaluate.js';
import { soleOwner, type Ownership } from './ownership.js';
import { replay, replayRanges, unreadPartitions } from './replay.js';
import { loadRules, type RulesDocument } from './rules.js';

export const defaultAlerterTopics = {
  decisions: 'decisions.enriched.v1',
  deadLetters: 'inference.dlq',
  output: 'alerts.v1',
  baselines: 'alerter.baselines',
};

/** Counts over the state in hand: input replayed at start included, alerts and suppressions since start. */
export interface AlerterStats {
  decisions: number;
  deadLetters: number;
  /** Input that arrived after every window it belongs to had closed. */
  late: number;
  undecodable: number;
  windows: number;
  alerts: number;
  suppressed: number;
  /** Records read again at start to rebuild windows and suppression. */
  replayed: number;
  /** Predecessor baselines read back from the baselines topic at start. */
  baselinesRestored: number;
  /** Records of the baselines topic that could not be read at start (skipped). */
  baselinesUnreadable: number;
  /** Windows were closed up to this event time before the start (from the checkpoint); undefined when none had been. */
  restoredClosedUpTo: number | undefined;
}

export interface Alerter {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly stats: AlerterStats;
}

/**
 * The alerter runs as one instance per pipeline: a rule compares versions across all partitions
 * of the input, so every partition must reach the same state. Its volume is the sampled decision
 * stream and the work per record is a few additions, which one process keeps up with. A second
 * instance in the group would split the input: each closes windows only while it holds every
 * input partition (see `soleOwner`), and says so while it does not.
 */
export async function createAlerter(opts: {
  kafka: Kafka;
  config: Config;
  log: Logger;
  topics?: Partial<typeof defaultAlerterTopics>;
  groupId?: string;
  /** Rules already loaded; default: the file named by DLOG_ALERTER_RULES_FILE. */
  rules?: RulesDocument;
}): Promise<Alerter> {
  const { config, log, kafka } = opts;
  const p = config.topicPrefix;
  const topics = prefixedTopics(defaultAlerterTopics, p, opts.topics);
  const groupId = opts.groupId ?? `${p}dlog-alerter`;
  const rules = opts.rules ?? loadRules(config.alerterRulesFile);
  const engine = createEngine(rules);

  await ensureWorkerTopics(kafka, defaultAlerterTopics, topics);
  const url = config.schemaRegistryUrl;
  const outputId = await registerAvro(createRegistry(url), url, valueSubject(topics.output), loadSchema('alert'));
  const outputType = avroType('alert');
  const decoder = new AvroDecoder<ObservedDecision>(observationReaderType(), registryFetcher(url));

  // The state covering exactly the input whose offsets are committed. A batch works on a copy;
  // the copy replaces it only once the batch's transaction has committed, so an aborted
  // transaction (the batch is fetched again) counts nothing twice, and one whose outcome was
  // never learned is settled from the group's offsets.
  const tracked = new CommittedState<AlerterState>(engine.newState(), committedOffset, log);
  let undecodable = 0;
  let replayed = 0;
  let baselinesRestored = 0;
  let baselinesUnreadable = 0;
  let oversizeBaselines = 0;
  let restoredClosedUpTo: number | undefined;
  let truncatedCheckpoints = 0;
  let processor: TransactionalProcessor | undefined;
  /** Kept connected for the ownership check, which runs about once a hop. */
  let groupAdmin: Admin | undefined;

  /** Feeds a batch into the state; returns how many records could not be read. */
  async function observe(state: AlerterState, topic: string, partition: number, messages: KafkaMessage[]): Promise<number> {
    const now = Date.now();
    if (topic === topics.deadLetters) {
      for (const m of messages) engine.observeDeadLetter(state, `${topic}:${partition}`, toDeadLetterObservation(m), now);
      return 0;
    }
    await decoder.prepare(messages.map((m) => m.value));
    let bad = 0;
    for (const m of messages) {
      const r = decoder.decode(m.value);
      if (!r.ok) {
        // The enricher wrote it; a record we cannot read is skipped and counted, never fatal.
        if (bad++ === 0) log.warn({ reason: r.reason, message: r.message, topic, partition, offset: m.offset }, 'undecodable enriched decision skipped');
        continue;
      }
      engine.observeDecision(state, `${topic}:${partition}`, toDecisionObservation(r.value), now);
    }
    return bad;
  }

  const toMessage = (a: AlertRecord): Message => ({
    key: a.model_name !== null ? `${a.model_name}:${a.model_version ?? ''}` : a.rule,
    value: encodeFramed(outputType, outputId, a),
  });

  const stats: AlerterStats = {
    get decisions() {
      return tracked.committed.counters.decisions;
    },
    get deadLetters() {
      return tracked.committed.counters.deadLetters;
    },
    get late() {
      return tracked.committed.counters.late;
    },
    get undecodable() {
      return undecodable;
    },
    get windows() {
      return tracked.committed.counters.windows;
    },
    get alerts() {
      return tracked.committed.counters.fired;
    },
    get suppressed() {
      return tracked.committed.counters.suppressed;
    },
    get replayed() {
      return replayed;
    },
    get baselinesRestored() {
      return baselinesRestored;
    },
    get baselinesUnreadable() {
      return baselinesUnreadable;
    },
    get restoredClosedUpTo() {
      return restoredClosedUpTo;
    },
  };

  async function committedOffset(topic: string, partition: number): Promise<bigint | undefined> {
    const admin = kafka.admin();
    await admin.connect();
    try {
      const [t] = await admin.fetchOffsets({ groupId, topics: [topic] });
      const o = t?.partitions.find((x) => x.partition === partition)?.offset;
      return o === undefined || Number(o) < 0 ? undefined : BigInt(o);
    } finally {
      await admin.disconnect();
    }
  }

  /**
   * Reads the baselines topic from its start to its last committed record into the state, and
   * returns the checkpoint it holds. The end offsets are read_committed (kafkajs lists offsets
   * so), so a transaction a crashed instance left open is not waited for: its input is processed
   * again anyway.
   */
  async function restoreBaselines(state: AlerterState): Promise<Checkpoint | undefined> {
    let checkpoint: Checkpoint | undefined;
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(topics.baselines).finally(() => admin.disconnect());
    const ranges = ends.filter((e) => Number(e.high) > Number(e.low)).map((e) => ({ topic: topics.baselines, partition: e.partition, start: Number(e.low), end: Number(e.high) }));
    const names = new Set(rules.rules.map((r) => r.name));
    const result = await replay({
      kafka,
      log,
      groupId,
      ranges,
      timeoutMs: config.alerterReplayTimeoutMs,
      onBatch: async (_topic, partition, messages) => {
        for (const m of messages) {
          if (m.key?.toString() === checkpointKey) {
            // Compacted, one key: the last one read is the last one committed.
            const c = decodeCheckpoint(m.value);
            if (c.ok) checkpoint = c.checkpoint;
            else log.warn({ topic: topics.baselines, partition, offset: m.offset, reason: c.reason }, 'unreadable checkpoint skipped');
            continue;
          }
          const b = decodeBaseline(m.key, m.value);
          if (!b.ok) {
            if (baselinesUnreadable++ === 0) log.warn({ topic: topics.baselines, partition, offset: m.offset, reason: b.reason }, 'unreadable baseline skipped');
            continue;
          }
          applyBaseline(state, names, b);
        }
      },
    });
    for (const h of state.history.values()) baselinesRestored += h.size;
    state.baselinesComplete = result.complete;
    if (!result.complete) log.warn({ restored: baselinesRestored, timeoutMs: config.alerterReplayTimeoutMs }, 'baselines incomplete: some versions may have no predecessor or an older one, and none are let go until a restart reads them all');
    else if (ranges.length > 0) log.info({ restored: baselinesRestored, unreadable: baselinesUnreadable }, 'predecessor baselines restored');
    return checkpoint;
  }

  const inputs = [topics.decisions, topics.deadLetters];
  // While the group's input is split, checked again at most this often rather than on every batch.
  const splitRecheckMs = 5_000;
  let split: { since: number; checkedAt: number; reason: string | undefined } | undefined;

  async function ownership(): Promise<Ownership> {
    if (!groupAdmin) {
      const a = kafka.admin();
      await a.connect();
      groupAdmin = a;
    }
    const [{ groups }, meta] = await Promise.all([groupAdmin.describeGroups([groupId]), groupAdmin.fetchTopicMetadata({ topics: inputs })]);
    return soleOwner(
      groups.find((g) => g.groupId === groupId),
      new Map(meta.topics.map((t) => [t.name, t.partitions.length])),
    );
  }

  /**
   * Whether this instance may close windows now: only while it reads every input partition.
   * Asked only when a window is due (about once a hop), so it costs one admin round trip then.
   * Input keeps being counted while the group is split; what another instance read meanwhile is
   * missing from these windows, which is why the docs say one alerter per pipeline.
   */
  async function whole(now: number): Promise<boolean> {
    if (split && now - split.checkedAt < splitRecheckMs) return false;
    let o: Ownership;
    try {
      o = await ownership();
    } catch (err) {
      // Windows stay open until the group can be read: closing them on a guess could split them.
      o = { whole: false, holders: 0, reason: `group not readable: ${(err as Error).message}` };
    }
    if (o.whole) {
      if (split) log.warn({ groupId, splitForMs: now - split.since }, 'this alerter reads every input partition again: closing windows; those open during the split lack what another instance read');
      split = undefined;
      return true;
    }
    if (!split) log.warn({ groupId, holders: o.holders, reason: o.reason }, 'windows held: this alerter does not read every input partition (another alerter in the group? run one per pipeline); input is still counted');
    else if (o.reason !== split.reason) log.info({ groupId, holders: o.holders, reason: o.reason }, 'windows still held');
    split = { since: split?.since ?? now, checkedAt: now, reason: o.reason };
    return false;
  }

  return {
    stats,
    async start() {
      // Rebuild the open windows from input already processed before a restart. Windows up to
      // the checkpoint were closed then, in the transactions that sent their alerts: they are let
      // go unevaluated. No other window closes here: the re-read input can lack some partitions'
      // share of them (a crash while waiting for every partition at start, or input older than
      // the re-read reaches), and a partition quiet before the restart would count as just heard
      // from and close windows the checkpoint has passed a second time.
      const rebuilt = engine.newState();
      const checkpoint = await restoreBaselines(rebuilt);
      // Back to the first window still open at the checkpoint, however long ago that was (a
      // crash while catching up); the lookback when no window had closed yet.
      const since = Math.min(Date.now() - engine.lookbackMs, checkpoint ? checkpoint.closedUpTo - engine.reopenMs : Infinity);
      const ranges = await replayRanges(kafka, groupId, inputs, since);
      const result = await replay({
        kafka,
        log,
        groupId,
        ranges,
        timeoutMs: config.alerterReplayTimeoutMs,
        // Closed windows are let go only after the whole range is read: the input of one counts
        // as a decision, not as late.
        onBatch: async (topic, partition, messages) => {
          await observe(rebuilt, topic, partition, messages);
        },
      });
      if (checkpoint) engine.restore(rebuilt, checkpoint);
      restoredClosedUpTo = checkpoint?.closedUpTo;
      replayed = result.messages;
      const closedUpTo = checkpoint ? new Date(checkpoint.closedUpTo).toISOString() : null;
      if (!result.complete) log.warn({ replayed, closedUpTo, timeoutMs: config.alerterReplayTimeoutMs }, 'replay incomplete: windows open before the restart start partly empty');
      else if (ranges.length > 0 || checkpoint) log.info({ replayed, ranges: ranges.length, closedUpTo, suppressing: checkpoint?.lastFired.size ?? 0 }, 'windows rebuilt from input');
      rebuilt.counters.fired = 0;
      rebuilt.counters.suppressed = 0;
      tracked.committed = rebuilt;

      // Input partitions holding unread records: no window closes before each has delivered a
      // batch (or startup_wait has passed), else the first partition read would close windows
      // the others still hold records for, and those would count as late. Decision partitions
      // that replay already placed in event time are safe. A partition whose only unread record
      // is a transaction marker delivers nothing and is waited for until startup_wait.
      const waitingFor = new Set<string>();
      for (const topic of inputs) {
        for (const partition of await unreadPartitions(kafka, groupId, topic)) {
          const k = `${topic}:${partition}`;
          if (!rebuilt.newest.has(k)) waitingFor.add(k);
        }
      }
      const waitUntil = Date.now() + rules.watermark.startup_wait;

      processor = createTransactionalProcessor({
        kafka,
        log,
        groupId,
        topics: inputs,
        transactionalId: `${p}dlog-alerter-${config.instanceId}`,
        native: nativeClientFor(config.kafkaClient, config.kafkaBrokers, `${config.kafkaClientId}-alerter`, log),
        process: async (messages, ctx) => {
          const prev = await tracked.current((topic, partition) => waitingFor.delete(`${topic}:${partition}`));
          const next = cloneState(prev);
          const fresh = uncounted(next.counted, `${ctx.topic}:${ctx.partition}`, messages);
          undecodable += await observe(next, ctx.topic, ctx.partition, fresh);
          if (waitingFor.size > 0 && Date.now() >= waitUntil) {
            // Routine when the only unread record of a partition was a transaction marker.
            log.info({ partitions: [...waitingFor] }, 'startup wait over: closing windows without partitions that delivered nothing');
            waitingFor.clear();
          }
          const waiting = [...waitingFor].some((k) => k !== `${ctx.topic}:${ctx.partition}`);
          const now = Date.now();
          const held = waiting || (engine.closing(next, now) && !(await whole(now)));
          const alerts = held ? [] : engine.advance(next, now);
          // Baselines this batch changed (and any a restart left unwritten) go in its transaction.
          const baselines: Message[] = [];
          for (const [k, entry] of next.baselineChanges) {
            const record = encodeBaseline(k, entry);
            if (record) baselines.push(record);
            else if (oversizeBaselines++ === 0) {
              const [rule, subject = ''] = splitKey(k);
              log.warn({ rule, ...parseSubjectKey(subject), maxBytes: maxRecordBytes }, 'baseline too large to keep on the topic; it is lost at the next restart');
            }
          }
          next.baselineChanges.clear();
          // So do how far windows are closed and the suppression they left: what a restart
          // takes as sent (see checkpoint.ts). Only advance changes either.
          const checkpoint = next.closedUpTo !== prev.closedUpTo ? engine.checkpoint(next) : undefined;
          if (checkpoint) {
            const { key, value, dropped } = encodeCheckpoint(checkpoint);
            baselines.push({ key, value });
            if (dropped > 0 && truncatedCheckpoints++ === 0) log.warn({ dropped, kept: checkpoint.lastFired.size - dropped }, 'suppression too large for the checkpoint: the oldest entries are not kept across a restart');
          }
          tracked.stage(next, ctx.topic, ctx.partition, messages[messages.length - 1]!.offset);
          for (const a of alerts) log.info({ rule: a.rule, model: a.model_name, version: a.model_version, alertId: a.alert_id }, a.summary);
          return [
            { topic: topics.output, messages: alerts.map(toMessage) },
            { topic: topics.baselines, messages: baselines },
          ];
        },
        onCommitted: (info) => {
          tracked.commit();
          // Only committed reads count: a partition whose batch was aborted is still awaited.
          waitingFor.delete(`${info.topic}:${info.partition}`);
        },
      });
      await processor.start();
    },
    async stop() {
      await processor?.stop();
      await groupAdmin?.disconnect();
      groupAdmin = undefined;
    },
  };
}
