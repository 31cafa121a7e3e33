import { randomUUID } from 'node:crypto';
import kafkajs, { type IHeaders, type Kafka, type KafkaMessage, type Message } from 'kafkajs';
import type { Logger } from 'pino';
import { chunkMessages } from './transactional-processor.js';
import { originalHeaders } from './dead-letter.js';

/**
 * Replays dead letters to the topic they came from, each at most once.
 *
 * Most dead letters are for good: malformed bytes, personal data in an id. Some are not: a
 * producer that registered its schema after sending (`unknown_schema_id`), a gate older than its
 * producers (`incompatible_schema`), a policy limit raised since. Those events are lost to the
 * audit trail unless they go through the pipeline again, once; a decision replayed twice would be
 * stored twice and counted twice.
 *
 * Once is kept by a replay log: a compacted topic with one record per replayed letter
 * (`<dead-letter topic>/<partition>/<offset>@<time>`), written in the same transaction as the
 * replayed records. Every replay of a pipeline uses one transactional id; a run first commits a
 * record of its own to the log, which fences any run still going, then reads the log up to that
 * record, so it knows every letter any run replayed.
 * Letters are read up to the end the topic had when the replay started: one the replayed event
 * earns again (it still fails) waits for the next replay instead of going round in a loop.
 */

export interface ReplayOptions {
  kafka: Kafka;
  log: Logger;
  /** The dead-letter topic, full name (with its prefix). */
  topic: string;
  /** The replay log topic, full name (see infra/kafka/topics.yaml: dlq.replays). */
  replayLog: string;
  /** Only letters with these reasons (`dlog.reason`); all when empty. */
  reasons?: string[];
  /** Count what would be replayed; write nothing. */
  dryRun?: boolean;
  /** A topic read that has had nothing new for this long is read to its end. */
  idleMs?: number;
}

export interface ReplayReport {
  /** Letters written back to their source topic (or, in a dry run, that would be), by reason. */
  replayed: Record<string, number>;
  /** Replayed by an earlier run: left alone. */
  alreadyReplayed: number;
  /** Of another reason than asked for. */
  otherReason: number;
  /** Written without their value (too large for a record): the original is at its source offset. */
  withoutValue: { reason: string; source: string }[];
  /** Without the headers that say where they came from: not ours to replay. */
  unknownSource: number;
  /** Partitions whose read stopped before the end they had at the start (nothing new came for a while): run again. */
  stoppedShort: number[];
  /**
   * Letters not replayed because their original time is so old that their source topic's
   * retention would delete them, written back with it, before a worker read them (see pastRetention).
   */
  pastRetention: { source: string; letters: number; oldest: number; retentionMs: number }[];
}

// kafkajs is CommonJS: its enums come through the default export.
const { ConfigResourceTypes } = kafkajs;

/**
 * How long a replayed record must survive its source topic's retention: the time a stopped or
 * lagging worker may take to read it. A letter is written back with its original record time (the
 * gate checks an event's ts against it); a letter older than the topic's retention was deleted by
 * the broker's next retention check, often before the gate was back to read it, while the replay
 * log already marked it replayed: lost for good.
 */
const retentionMarginMs = 3_600_000;

/** The retention.ms of each topic, or undefined where records are not deleted by time. */
async function timeRetention(kafka: Kafka, topics: string[], log: Logger): Promise<Map<string, number | undefined>> {
  const out = new Map<string, number | undefined>();
  if (topics.length === 0) return out;
  const admin = kafka.admin();
  await admin.connect();
  try {
    // One topic at a time: a source topic deleted since, or a user without DescribeConfigs on it,
    // fails only its own letters' check (then unknown: replayed as before), not the whole replay.
    for (const name of topics) {
      try {
        const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name }] });
        const entries = described.resources[0]?.configEntries ?? [];
        const entry = (key: string) => entries.find((e) => e.configName === key)?.configValue;
        const deletes = (entry('cleanup.policy') ?? 'delete').split(',').map((x) => x.trim()).includes('delete');
        const ms = Number(entry('retention.ms'));
        out.set(name, deletes && Number.isFinite(ms) && ms > 0 ? ms : undefined);
      } catch (err) {
        log.warn({ source: name, err: (err as Error).message }, "source topic's retention unknown: its letters are replayed without the retention check");
        out.set(name, undefined);
      }
    }
  } finally {
    await admin.disconnect();
  }
  return out;
}

/**
 * A letter's mark in the replay log. Its time is part of it: a dead-letter topic deleted and made
 * again (it holds raw personal data) starts its offsets at 0, and its new letters matched old
 * marks and were never replayed.
 */
const letterKey = (topic: string, partition: number, m: KafkaMessage) => `${topic}/${partition}/${m.offset}@${m.timestamp}`;

/** The replay log's record a run writes, and then reads up to, before anything else. */
const fenceKey = '__fence__';

function header(h: IHeaders | undefined, name: string): string | undefined {
  const v = h?.[name];
  if (v === undefined) return undefined;
  const one = Array.isArray(v) ? v[0] : v;
  return one === undefined ? undefined : one.toString();
}

/**
 * Reads a topic from its start up to the end offsets it had when called, batch by batch. kafkajs
 * reads only in a group: a fresh one, never committed. The read ends at those ends, or, since a
 * transactional writer leaves a commit marker after its last record (the consumer never sees it),
 * once nothing new came for `idleMs` after joining.
 */
async function readToEnd(
  kafka: Kafka,
  topic: string,
  idleMs: number,
  onBatch: (partition: number, messages: KafkaMessage[]) => Promise<void>,
  until?: (m: KafkaMessage) => boolean,
): Promise<{ short: number[] }> {
  const admin = kafka.admin();
  await admin.connect();
  let ends: Map<number, bigint>;
  try {
    ends = new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, BigInt(p.high)]));
  } finally {
    await admin.disconnect();
  }
  const pending = new Set([...ends].filter(([, high]) => high > 0n).map(([p]) => p));
  if (pending.size === 0 && !until) return { short: [] };
  let found = false;
  // Each partition's last offset seen, to tell a read that reached its end from one cut short.
  const seen = new Map<number, bigint>();
  const consumer = kafka.consumer({ groupId: `dlog-read-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 200 });
  await consumer.connect();
  let failed: unknown;
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let last = Date.now();
    let joined = false;
    consumer.on(consumer.events.GROUP_JOIN, () => {
      joined = true;
      last = Date.now();
    });
    // kafkajs reports every fetched batch here, with the offset of its last record of any kind,
    // including one that held only an aborted transaction's records or commit markers, which
    // never reach eachBatch: a partition ending in an aborted transaction is read to its end too.
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (until || payload.topic !== topic) return;
      const lastOffset = BigInt(payload.lastOffset);
      if (lastOffset > (seen.get(payload.partition) ?? -1n)) seen.set(payload.partition, lastOffset);
      if (lastOffset >= (ends.get(payload.partition) ?? 0n) - 1n) pending.delete(payload.partition);
    });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        last = Date.now();
        if (failed !== undefined) return;
        if (until) {
          const hit = batch.messages.findIndex(until);
          const upTo = hit < 0 ? batch.messages : batch.messages.slice(0, hit);
          try {
            if (upTo.length > 0) await onBatch(batch.partition, upTo);
          } catch (err) {
            failed ??= err;
          }
          if (hit >= 0) found = true;
          return;
        }
        const end = ends.get(batch.partition) ?? 0n;
        const within = batch.messages.filter((m) => BigInt(m.offset) < end);
        try {
          if (within.length > 0) await onBatch(batch.partition, within);
        } catch (err) {
          failed ??= err;
        }
        const lastSeen = batch.messages.at(-1);
        if (lastSeen && BigInt(lastSeen.offset) >= end - 1n) pending.delete(batch.partition);
        if (within.length < batch.messages.length) pending.delete(batch.partition);
      },
    });
    if (until) {
      // Read up to a record this run wrote: everything committed before it is before it.
      const deadline = Date.now() + 120_000;
      while (failed === undefined && !found) {
        if (Date.now() > deadline) throw new Error(`${topic} was not read up to this run's own record within 120 s: the broker is slow or unreachable; nothing was replayed`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } else {
      while (failed === undefined && pending.size > 0 && !(joined && Date.now() - last > idleMs)) await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await consumer.disconnect();
  }
  if (failed !== undefined) throw failed;
  // A partition still pending went quiet before its end: the read stopped short there.
  const short = [...pending].filter((p) => (seen.get(p) ?? -1n) < (ends.get(p) ?? 0n) - 1n);
  return { short };
}

export async function replayDeadLetters(opts: ReplayOptions): Promise<ReplayReport> {
  const idleMs = opts.idleMs ?? 3_000;
  const reasons = new Set(opts.reasons ?? []);
  const report: ReplayReport = { replayed: {}, alreadyReplayed: 0, otherReason: 0, withoutValue: [], unknownSource: 0, stoppedShort: [], pastRetention: [] };
  const retention = new Map<string, number | undefined>();
  const tooOld = new Map<string, { letters: number; oldest: number; retentionMs: number }>();
  const log = opts.log.child({ component: 'dlq-replay', topic: opts.topic });
  // One transactional id for every replay of the pipeline (its replay log's name), whichever
  // dead-letter topic: a replay of another topic killed mid-transaction held the log's end back
  // for a minute, and a run under another id could not settle it, read a log that ended before
  // it, and replayed everything again.
  const producer = opts.dryRun
    ? undefined
    : opts.kafka.producer({ transactionalId: `dlog-dlq-replay.${opts.replayLog}`, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 60_000 });
  await producer?.connect();
  const nonce = randomUUID();
  // The log is read up to this run's own record, which is complete only on one partition: with
  // more, marks on the others were missed and their letters went twice.
  const admin = opts.kafka.admin();
  await admin.connect();
  try {
    const parts = (await admin.fetchTopicOffsets(opts.replayLog)).length;
    if (parts !== 1) throw new Error(`${opts.replayLog} has ${parts} partitions; the replay log must have exactly 1 (recreate it with one, keeping its records) or a replay could send letters twice`);
  } catch (err) {
    await producer?.disconnect();
    throw err;
  } finally {
    await admin.disconnect();
  }
  try {
    if (producer) {
      // kafkajs fences an earlier producer with this id (and settles its open transaction) only
      // at the first transaction, not at connect: one running meanwhile kept committing while
      // this one read the log, and letters went twice. So: fence first, leaving a record this run
      // then reads up to, which makes the read of the log complete by construction.
      // The broker answers CONCURRENT_TRANSACTIONS while it settles the earlier run's open
      // transaction, longer than kafkajs's own retries when that run was mid-batch on a busy
      // broker: asked again until the transaction timeout would have settled it anyway.
      const deadline = Date.now() + 75_000;
      for (let attempt = 1; ; attempt++) {
        let fence: Awaited<ReturnType<typeof producer.transaction>> | undefined;
        try {
          fence = await producer.transaction();
          await fence.send({ topic: opts.replayLog, messages: [{ key: fenceKey, value: nonce }], acks: -1 });
          await fence.commit();
          break;
        } catch (err) {
          await fence?.abort().catch(() => undefined);
          if (!concurrentTransactions(err) || Date.now() > deadline) throw err;
          if (attempt === 1) log.info('an earlier replay\'s transaction is being settled; waiting for it');
          await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * attempt)));
        }
      }
    }
    const done = new Set<string>();
    const logRead = async (_p: number, messages: KafkaMessage[]) => {
      for (const m of messages) if (m.key && m.key.toString() !== fenceKey) done.add(m.key.toString());
    };
    if (producer) await readToEnd(opts.kafka, opts.replayLog, idleMs, logRead, (m) => m.key?.toString() === fenceKey && m.value?.toString() === nonce);
    else await readToEnd(opts.kafka, opts.replayLog, idleMs, logRead);
    log.info({ replayedBefore: [...done].filter((k) => k.startsWith(`${opts.topic}/`)).length }, 'replay log read');

    const read = await readToEnd(opts.kafka, opts.topic, idleMs, async (partition, messages) => {
      const sources = new Set<string>();
      for (const m of messages) {
        const source = header(m.headers, 'dlog.source.topic');
        if (source && !retention.has(source)) sources.add(source);
      }
      for (const [topic, ms] of await timeRetention(opts.kafka, [...sources], log)) retention.set(topic, ms);
      const now = Date.now();
      const out = new Map<string, Message[]>();
      const marks: Message[] = [];
      const counted: string[] = [];
      for (const m of messages) {
        const reason = header(m.headers, 'dlog.reason') ?? '';
        const source = header(m.headers, 'dlog.source.topic');
        const id = letterKey(opts.topic, partition, m);
        if (done.has(id)) {
          report.alreadyReplayed++;
          continue;
        }
        if (reasons.size > 0 && !reasons.has(reason)) {
          report.otherReason++;
          continue;
        }
        if (!source) {
          report.unknownSource++;
          continue;
        }
        if (header(m.headers, 'dlog.value_dropped') !== undefined) {
          report.withoutValue.push({ reason, source: `${source}/${header(m.headers, 'dlog.source.partition') ?? '?'}/${header(m.headers, 'dlog.source.offset') ?? '?'}` });
          continue;
        }
        // The original key, bytes and headers; our own headers stay behind, but one says this is
        // a replay, of which letter.
        const headers = originalHeaders(m.headers);
        headers['dlog.replay.of'] = id;
        const timestamp = header(m.headers, 'dlog.source.timestamp') ?? m.timestamp;
        const keptFor = retention.get(source);
        // Half the retention at most as the margin: a topic that keeps records under an hour would
        // otherwise have every letter held back.
        if (keptFor !== undefined && Number(timestamp) < now - keptFor + Math.min(retentionMarginMs, keptFor / 2)) {
          const t = tooOld.get(source) ?? { letters: 0, oldest: Number(timestamp), retentionMs: keptFor };
          t.letters++;
          t.oldest = Math.min(t.oldest, Number(timestamp));
          tooOld.set(source, t);
          continue;
        }
        const list = out.get(source) ?? [];
        list.push({ key: m.key, value: m.value, headers, timestamp });
        out.set(source, list);
        marks.push({ key: id, value: JSON.stringify({ reason, source, at: new Date().toISOString() }) });
        counted.push(reason);
      }
      if (marks.length === 0) return;
      if (producer) {
        const tx = await producer.transaction();
        try {
          // In chunks: one fetch of a partition holds up to a megabyte of letters, and their marks
          // alone in one batch passed the broker's limit for a record batch.
          for (const [topic, msgs] of out) for (const part of chunkMessages(msgs)) await tx.send({ topic, messages: part, acks: -1 });
          for (const part of chunkMessages(marks)) await tx.send({ topic: opts.replayLog, messages: part, acks: -1 });
          await tx.commit();
        } catch (err) {
          await tx.abort().catch((abortErr: unknown) => log.warn({ err: abortErr }, 'replay transaction abort failed'));
          // Fenced, or (while a newer run's start settles this one's transaction) told of a
          // concurrent operation on it: either way another run has this transactional id now.
          const fenced = /epoch|fenced/i.test(String((err as { type?: string }).type ?? '') + (err as Error).message) || concurrentTransactions(err);
          if (fenced) {
            const so = Object.values(report.replayed).reduce((a, b) => a + b, 0);
            throw new Error(`another dlog dlq replay of this pipeline started and took over; this one stopped after replaying ${so} letter(s). Nothing is replayed twice: run it again once the other is done.`, { cause: err });
          }
          throw err;
        }
      }
      for (const r of counted) report.replayed[r] = (report.replayed[r] ?? 0) + 1;
      for (const mk of marks) done.add(String(mk.key));
    });
    report.stoppedShort = read.short;
    report.pastRetention = [...tooOld].map(([source, t]) => ({ source, ...t }));
  } finally {
    await producer?.disconnect();
  }
  return report;
}

/** CONCURRENT_TRANSACTIONS, as kafkajs reports it (itself, or as the cause of its retries' end). */
function concurrentTransactions(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; depth++) {
    const x = e as { type?: string; message?: string; originalError?: unknown; cause?: unknown };
    if (x.type === 'CONCURRENT_TRANSACTIONS' || /concurrent operation on the same transaction/i.test(x.message ?? '')) return true;
    e = x.originalError ?? x.cause;
  }
  return false;
}
