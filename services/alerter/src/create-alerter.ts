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
import { maxAlertBytes, toAlertMessage } from './alert-message.js';
import { applyBaseline, decodeBaseline, encodeBaseline, maxRecordBytes } from './baselines.js';
import { CheckpointPicker, checkpointKey, encodeCheckpoint, type LatestCheckpoint } from './checkpoint.js';
import { CommittedState, uncounted } from './committed-state.js';
import { countsReaderType, observationReaderType, toDeadLetterObservation, toDecisionObservation, type GateCountsObservation, type ObservedDecision } from './decode.js';
import { cloneState, createEngine, type AlerterState } from './engine.js';
import { parseSubjectKey, splitKey } from './evaluate.js';
import { soleOwner, type Ownership } from './ownership.js';
import { groupHasCommitted, replay, replayRanges, startTopicAt, unreadPartitions, type ReplayRange } from './replay.js';
import { loadRules, type RulesDocument } from './rules.js';

export const defaultAlerterTopics = {
  decisions: 'decisions.enriched.v1',
  deadLetters: 'inference.dlq',
  /** The gate's exact counts, written with its dead letters: see observeGateCounts. */
  counts: 'decision.counts.v1',
  output: 'alerts.v1',
  baselines: 'alerter.baselines',
};

/** Counts over the state in hand: input replayed at start included, alerts and suppressions since start. */
export interface AlerterStats {
  decisions: number;
  deadLetters: number;
  /** Input that arrived after every window it belongs to had closed. */
  late: number;
  /** Decisions judged by no rule: their pane already held as many versions as it keeps (see `maxSubjectsPerPane`). */
  overflow: number;
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
  /**
   * How the start took up the state: from the checkpoint, by closing the windows due without
   * alerting (a restart with no checkpoint to trust: an upgrade, an unreadable record, a read
   * that ran out of time), or as the group's first start.
   */
  resumed: 'restored' | 'closed silently' | 'first start' | undefined;
  /** Checkpoints another instance of the group wrote that this one took over on becoming sole owner. */
  checkpointsTakenOver: number;
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
  const engine = createEngine(rules, { log });

  await ensureWorkerTopics(kafka, defaultAlerterTopics, topics);
  const url = config.schemaRegistryUrl;
  const outputId = await registerAvro(createRegistry(url), url, valueSubject(topics.output), loadSchema('alert'));
  const outputType = avroType('alert');
  const decoder = new AvroDecoder<ObservedDecision>(observationReaderType(), registryFetcher(url));
  const countsDecoder = new AvroDecoder<GateCountsObservation>(countsReaderType(), registryFetcher(url));

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
  let resumed: AlerterStats['resumed'];
  let checkpointsTakenOver = 0;
  let truncatedCheckpoints = 0;
  let processor: TransactionalProcessor | undefined;
  /** Kept connected for the ownership check, which runs about once a hop. */
  let groupAdmin: Admin | undefined;

  /**
   * Decodes a batch and hands each readable record to `use`; returns how many could not be read.
   * Our own workers wrote them: one we cannot read is skipped and counted, never fatal.
   */
  async function decodeEach<T>(d: AvroDecoder<T>, what: string, topic: string, partition: number, messages: KafkaMessage[], use: (value: T) => void): Promise<number> {
    await d.prepare(messages.map((m) => m.value));
    let bad = 0;
    for (const m of messages) {
      const r = d.decode(m.value);
      if (!r.ok) {
        if (bad++ === 0) log.warn({ reason: r.reason, message: r.message, topic, partition, offset: m.offset }, `undecodable ${what} skipped`);
        continue;
      }
      use(r.value);
    }
    return bad;
  }

  /** Feeds a batch into the state; returns how many records could not be read. */
  async function observe(state: AlerterState, topic: string, partition: number, messages: KafkaMessage[]): Promise<number> {
    const now = Date.now();
    if (topic === topics.deadLetters) {
      for (const m of messages) engine.observeDeadLetter(state, `${topic}:${partition}`, toDeadLetterObservation(m), now);
      return 0;
    }
    if (topic === topics.counts) return decodeEach(countsDecoder, 'gate counts', topic, partition, messages, (c) => engine.observeGateCounts(state, c));
    return decodeEach(decoder, 'enriched decision', topic, partition, messages, (d) => engine.observeDecision(state, `${topic}:${partition}`, toDecisionObservation(d), now));
  }

  const encodeAlert = (a: AlertRecord): Buffer => encodeFramed(outputType, outputId, a);
  const toMessage = (a: AlertRecord): Message => {
    const { message, shrunkFrom } = toAlertMessage(a, encodeAlert);
    if (shrunkFrom !== undefined) log.warn({ rule: a.rule, alertId: a.alert_id, bytes: shrunkFrom, maxBytes: maxAlertBytes }, 'alert record too large for the broker: sent with its core fields only');
    return message;
  };

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
    get overflow() {
      return tracked.committed.counters.overflow;
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
    get resumed() {
      return resumed;
    },
    get checkpointsTakenOver() {
      return checkpointsTakenOver;
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

  /** The baselines topic's end offsets (read_committed: kafkajs lists offsets so). */
  async function baselinesEnds(): Promise<{ partition: number; low: number; high: number }[]> {
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(topics.baselines).finally(() => admin.disconnect());
    return ends.map((e) => ({ partition: e.partition, low: Number(e.low), high: Number(e.high) }));
  }

  /**
   * Reads the baselines topic from `from` (partition → offset; its start where absent) to its
   * last committed record, and returns the checkpoint it may trust (see `CheckpointPicker`) and
   * the offsets it read to. Baselines go into `state` when given. A transaction a crashed
   * instance left open is not waited for: its input is processed again anyway.
   */
  async function readBaselines(from: ReadonlyMap<number, number>, state?: AlerterState) {
    const ends = await baselinesEnds();
    const ranges: ReplayRange[] = ends
      .map((e) => ({ topic: topics.baselines, partition: e.partition, start: Math.max(e.low, from.get(e.partition) ?? 0), end: e.high }))
      .filter((r) => r.end > r.start);
    const names = new Set(rules.rules.map((r) => r.name));
    const picker = new CheckpointPicker();
    const result = await replay({
      kafka,
      log,
      groupId,
      ranges,
      timeoutMs: config.alerterReplayTimeoutMs,
      onBatch: async (_topic, partition, messages) => {
        for (const m of messages) {
          if (m.key?.toString() === checkpointKey) {
            picker.add({ partition, offset: Number(m.offset), timestamp: Number(m.timestamp), value: m.value });
            continue;
          }
          if (!state) continue;
          const b = decodeBaseline(m.key, m.value);
          if (!b.ok) {
            if (baselinesUnreadable++ === 0) log.warn({ topic: topics.baselines, partition, offset: m.offset, reason: b.reason }, 'unreadable baseline skipped');
            continue;
          }
          applyBaseline(state, names, b);
        }
      },
    });
    return { latest: picker.result(result.complete), complete: result.complete, read: ranges.length > 0, readTo: new Map(ends.map((e) => [e.partition, e.high])) };
  }

  /** Reads the baselines topic from its start into the state, and returns the checkpoint it holds. */
  async function restoreBaselines(state: AlerterState): Promise<LatestCheckpoint> {
    const { latest, complete, read, readTo } = await readBaselines(new Map(), state);
    baselinesReadTo = readTo;
    for (const h of state.history.values()) baselinesRestored += h.size;
    state.baselinesComplete = complete;
    if (!complete) log.warn({ restored: baselinesRestored, timeoutMs: config.alerterReplayTimeoutMs }, 'baselines incomplete: some versions may have no predecessor or an older one, and none are let go until a restart reads them all');
    else if (read) log.info({ restored: baselinesRestored, unreadable: baselinesUnreadable }, 'predecessor baselines restored');
    return latest;
  }

  const inputs = [topics.decisions, topics.deadLetters, topics.counts];
  // While the group's input is split, checked again at most this often rather than on every batch.
  const splitRecheckMs = 5_000;
  let split: { since: number; checkedAt: number; reason: string | undefined } | undefined;
  /** This instance held every input partition at its last check, and had taken over the checkpoint then. */
  let sole = false;
  /** Baselines topic partition → offset read up to: where the next look for another instance's checkpoints starts. */
  let baselinesReadTo = new Map<number, number>();
  /**
   * The state as another instance left it, taken on becoming sole owner: applied to every batch
   * until one has committed past it, so a batch whose transaction aborts does not lose it.
   */
  let takenOver: AlerterState['written'];

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
      processor?.memberId(),
    );
  }

  /**
   * On becoming sole owner (at the first check, and after any split): the checkpoints another
   * instance of the group wrote since this one last read the topic. In a rolling update the new
   * instance reads the checkpoint at its start while the old one goes on alerting until the new
   * one joins; closing windows from the checkpoint read at start would send those alerts again.
   * Throws when the topic cannot be read to its end in time: windows stay held and it is tried
   * again at the next check.
   */
  async function takeOver(state: AlerterState, now: number): Promise<void> {
    const { latest, complete, readTo } = await readBaselines(baselinesReadTo);
    if (!complete) throw new Error(`alerter.baselines not read to its end within ${config.alerterReplayTimeoutMs} ms`);
    baselinesReadTo = readTo;
    if (latest.kind === 'found') {
      state.written = latest.checkpoint;
      if (engine.restore(state, latest.checkpoint)) {
        checkpointsTakenOver++;
        takenOver = engine.checkpoint(state);
        log.warn({ groupId, closedUpTo: new Date(latest.checkpoint.closedUpTo!).toISOString() }, 'took over the checkpoint another alerter of the group wrote: windows it closed are not closed again');
      }
    } else if (latest.kind === 'unreadable') {
      // Another instance wrote what this one cannot read (a newer format): as at a start without
      // a checkpoint, the windows due now close without alerting rather than alert a second time.
      const withheld = engine.closeSilently(state, now);
      takenOver = engine.checkpoint(state);
      log.warn({ groupId, reason: latest.reason, withheld }, 'checkpoint another alerter wrote is unreadable: windows due now closed without alerting');
    }
  }

  /**
   * Whether this instance may close windows, and write the checkpoint, now: only while it reads
   * every input partition, and once it has taken over what another instance checkpointed.
   * Asked only when a window is due or a checkpoint is (about once a hop), so it costs one admin
   * round trip then. Input keeps being counted while the group is split; what another instance
   * read meanwhile is missing from these windows, which is why the docs say one alerter per pipeline.
   */
  async function whole(state: AlerterState, now: number): Promise<boolean> {
    if (split && now - split.checkedAt < splitRecheckMs) return false;
    let o: Ownership;
    try {
      o = await ownership();
      if (o.whole && !sole) {
        await takeOver(state, now);
        sole = true;
      }
    } catch (err) {
      // Windows stay open until the group can be read: closing them on a guess could split them.
      o = { whole: false, holders: 0, reason: `group or checkpoint not readable: ${(err as Error).message}` };
    }
    if (o.whole) {
      if (split) log.warn({ groupId, splitForMs: now - split.since }, 'this alerter reads every input partition again: closing windows; those open during the split lack what another instance read');
      split = undefined;
      return true;
    }
    if (sole) {
      // From here another instance may write checkpoints: the next take-over reads from here,
      // not from this instance's own records since the last one.
      sole = false;
      await baselinesEnds()
        .then((ends) => (baselinesReadTo = new Map(ends.map((e) => [e.partition, e.high]))))
        .catch((err: unknown) => log.debug({ err }, 'baselines end offsets not read'));
    }
    // A configuration error, not a passing state: said at every check, as an error.
    if (o.protocol) log.error({ groupId, protocol: o.protocol, reason: o.reason }, `windows held: the group runs the "${o.protocol}" consumer protocol, whose assignments this alerter cannot see; run it on the classic protocol`);
    else if (!split) log.warn({ groupId, holders: o.holders, reason: o.reason }, 'windows held: this alerter does not read every input partition (another alerter in the group? run one per pipeline); input is still counted');
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
      const latest = await restoreBaselines(rebuilt);
      const restart = await groupHasCommitted(kafka, groupId, inputs);
      const closedUpTo = latest.kind === 'found' ? latest.checkpoint.closedUpTo : undefined;
      const since = engine.replaySince(latest, Date.now());
      // The first start after an upgrade that added the gate's counts: they start where the
      // replay does, instead of at the beginning of their retention (days of rows, each let go).
      if (restart) await startTopicAt(kafka, log, groupId, topics.counts, since);
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
      const windowsBefore = rebuilt.counters.windows;
      resumed = engine.resume(rebuilt, latest, restart, Date.now());
      if (resumed === 'closed silently') {
        const reason = latest.kind === 'unreadable' ? latest.reason : 'no checkpoint on the topic (an upgrade from an alerter that wrote none?)';
        log.warn({ reason, closedUpTo: rebuilt.closedUpTo === undefined ? null : new Date(rebuilt.closedUpTo).toISOString(), windows: rebuilt.counters.windows - windowsBefore }, 'no checkpoint to trust: windows due now closed without alerting, as before checkpoints (an alert of one not sent before the restart is lost; none is sent twice)');
      }
      restoredClosedUpTo = closedUpTo;
      replayed = result.messages;
      const closed = closedUpTo !== undefined ? new Date(closedUpTo).toISOString() : null;
      if (!result.complete) log.warn({ replayed, closedUpTo: closed, timeoutMs: config.alerterReplayTimeoutMs }, 'replay incomplete: windows open before the restart start partly empty');
      else if (ranges.length > 0 || latest.kind === 'found') log.info({ replayed, ranges: ranges.length, closedUpTo: closed, suppressing: rebuilt.lastFired.size, resumed }, 'windows rebuilt from input');
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
        // Counts that come after their window closed only leave its dead-letter rate to the
        // decisions' weight; and a counts partition of retired versions ends in a transaction
        // marker at nearly every restart, which would hold windows for startup_wait.
        if (topic === topics.counts) continue;
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
          // Again for every batch until one commits past it: one whose transaction aborted lost it.
          if (takenOver) engine.restore(next, takenOver);
          // Asked at most once a batch, and only when it matters.
          let owner: boolean | undefined;
          const held = waiting || (engine.closing(next, now) && !(owner = await whole(next, now)));
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
          // takes as sent (see checkpoint.ts). Only the sole owner writes it, once it has taken
          // over any later one another instance wrote: on a compacted topic the last record is
          // the one that stays. Even during the startup wait, so a first start that crashes
          // before closing a window leaves "nothing closed", not "no checkpoint" (an upgrade).
          let checkpoint = engine.checkpointDue(next);
          if (checkpoint && (owner ?? (await whole(next, now)))) checkpoint = engine.checkpointDue(next);
          else checkpoint = undefined;
          if (checkpoint) {
            const { key, value, dropped } = encodeCheckpoint(checkpoint);
            baselines.push({ key, value });
            next.written = checkpoint;
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
