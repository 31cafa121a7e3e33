import type { Kafka, KafkaMessage, Message } from 'kafkajs';
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
import { CommittedState, uncounted } from './committed-state.js';
import { observationReaderType, toDeadLetterObservation, toDecisionObservation, type ObservedDecision } from './decode.js';
import { cloneState, createEngine, type AlerterState } from './engine.js';
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
}

export interface Alerter {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly stats: AlerterStats;
}

/**
 * The alerter runs as one instance per pipeline: a rule compares versions across all partitions
 * of the input, so every partition must reach the same state. Its volume is the sampled decision
 * stream and the work per record is a few additions, which one process keeps up with.
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
  let processor: TransactionalProcessor | undefined;

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
   * Reads the baselines topic from its start to its last committed record into the state. The
   * end offsets are read_committed (kafkajs lists offsets so), so a transaction a crashed
   * instance left open is not waited for: its input is processed again anyway.
   */
  async function restoreBaselines(state: AlerterState): Promise<void> {
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
  }

  return {
    stats,
    async start() {
      // Rebuild windows and suppression from input already processed before a restart. Alerts
      // those windows raise went out then; here they only re-arm suppression.
      const inputs = [topics.decisions, topics.deadLetters];
      const rebuilt = engine.newState();
      // Baselines first: the input replay below only reaches back the longest window and
      // suppression, and its windows then update the baselines as they did before the restart.
      await restoreBaselines(rebuilt);
      const ranges = await replayRanges(kafka, groupId, inputs, engine.lookbackMs);
      const result = await replay({
        kafka,
        log,
        groupId,
        ranges,
        timeoutMs: config.alerterReplayTimeoutMs,
        // Sums do not depend on the order partitions are read in; closing windows does. So the
        // whole range is read first and its windows closed once, in event-time order.
        onBatch: async (topic, partition, messages) => {
          await observe(rebuilt, topic, partition, messages);
        },
      });
      engine.advance(rebuilt, Date.now());
      replayed = result.messages;
      if (!result.complete) log.warn({ replayed, timeoutMs: config.alerterReplayTimeoutMs }, 'replay incomplete: windows open before the restart start partly empty');
      else if (ranges.length > 0) log.info({ replayed, ranges: ranges.length }, 'windows rebuilt from input');
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
          const next = cloneState(await tracked.current((topic, partition) => waitingFor.delete(`${topic}:${partition}`)));
          const fresh = uncounted(next.counted, `${ctx.topic}:${ctx.partition}`, messages);
          undecodable += await observe(next, ctx.topic, ctx.partition, fresh);
          if (waitingFor.size > 0 && Date.now() >= waitUntil) {
            // Routine when the only unread record of a partition was a transaction marker.
            log.info({ partitions: [...waitingFor] }, 'startup wait over: closing windows without partitions that delivered nothing');
            waitingFor.clear();
          }
          const waiting = [...waitingFor].some((k) => k !== `${ctx.topic}:${ctx.partition}`);
          const alerts = waiting ? [] : engine.advance(next, Date.now());
          // Baselines this batch changed (and any a restart left unwritten) go in its transaction.
          const baselines: Message[] = [];
          for (const [k, entry] of next.baselineChanges) {
            const record = encodeBaseline(k, entry);
            if (record) baselines.push(record);
            else if (oversizeBaselines++ === 0) log.warn({ key: k.replaceAll('\u0000', ' '), maxBytes: maxRecordBytes }, 'baseline too large to keep on the topic; it is lost at the next restart');
          }
          next.baselineChanges.clear();
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
    },
  };
}
