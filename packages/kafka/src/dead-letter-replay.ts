import { randomUUID } from 'node:crypto';
import type { IHeaders, Kafka, KafkaMessage, Message } from 'kafkajs';
import type { Logger } from 'pino';

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
 * (`<dead-letter topic>/<partition>/<offset>`), written in the same transaction as the replayed
 * records. Every replay of a dead-letter topic uses one transactional id, so starting one fences
 * any still running, and the log is read only after that, with everything committed before it.
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
}

const letterKey = (topic: string, partition: number, offset: string) => `${topic}/${partition}/${offset}`;

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
async function readToEnd(kafka: Kafka, topic: string, idleMs: number, onBatch: (partition: number, messages: KafkaMessage[]) => Promise<void>): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  let ends: Map<number, bigint>;
  try {
    ends = new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, BigInt(p.high)]));
  } finally {
    await admin.disconnect();
  }
  const pending = new Set([...ends].filter(([, high]) => high > 0n).map(([p]) => p));
  if (pending.size === 0) return;
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
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        last = Date.now();
        if (failed !== undefined) return;
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
    while (failed === undefined && pending.size > 0 && !(joined && Date.now() - last > idleMs)) await new Promise((r) => setTimeout(r, 100));
  } finally {
    await consumer.disconnect();
  }
  if (failed !== undefined) throw failed;
}

export async function replayDeadLetters(opts: ReplayOptions): Promise<ReplayReport> {
  const idleMs = opts.idleMs ?? 3_000;
  const reasons = new Set(opts.reasons ?? []);
  const report: ReplayReport = { replayed: {}, alreadyReplayed: 0, otherReason: 0, withoutValue: [], unknownSource: 0 };
  const log = opts.log.child({ component: 'dlq-replay', topic: opts.topic });
  const producer = opts.dryRun
    ? undefined
    : opts.kafka.producer({ transactionalId: `dlog-dlq-replay.${opts.topic}`, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 60_000 });
  // Connecting a transactional producer fences an earlier one with the same id and settles its
  // open transaction: from here the replay log holds every letter any run replayed.
  await producer?.connect();
  try {
    const done = new Set<string>();
    await readToEnd(opts.kafka, opts.replayLog, idleMs, async (_p, messages) => {
      for (const m of messages) if (m.key) done.add(m.key.toString());
    });
    log.info({ replayedBefore: [...done].filter((k) => k.startsWith(`${opts.topic}/`)).length }, 'replay log read');

    await readToEnd(opts.kafka, opts.topic, idleMs, async (partition, messages) => {
      const out = new Map<string, Message[]>();
      const marks: Message[] = [];
      const counted: string[] = [];
      for (const m of messages) {
        const reason = header(m.headers, 'dlog.reason') ?? '';
        const source = header(m.headers, 'dlog.source.topic');
        const id = letterKey(opts.topic, partition, m.offset);
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
        const headers: IHeaders = {};
        for (const [k, v] of Object.entries(m.headers ?? {})) if (!k.startsWith('dlog.') && v !== undefined) headers[k] = v;
        headers['dlog.replay.of'] = id;
        const timestamp = header(m.headers, 'dlog.source.timestamp') ?? m.timestamp;
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
          for (const [topic, msgs] of out) await tx.send({ topic, messages: msgs, acks: -1 });
          await tx.send({ topic: opts.replayLog, messages: marks, acks: -1 });
          await tx.commit();
        } catch (err) {
          await tx.abort().catch((abortErr: unknown) => log.warn({ err: abortErr }, 'replay transaction abort failed'));
          throw err;
        }
      }
      for (const r of counted) report.replayed[r] = (report.replayed[r] ?? 0) + 1;
      for (const mk of marks) done.add(String(mk.key));
    });
  } finally {
    await producer?.disconnect();
  }
  return report;
}
