import { randomBytes } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';

export interface ReplayRange {
  topic: string;
  partition: number;
  /** First offset to read (inclusive). */
  start: number;
  /** The group's committed offset: everything before it was processed already (exclusive). */
  end: number;
}

/**
 * The input ranges that rebuild the alerter's state: per partition, from the first record stamped
 * at or after `since` (record timestamp) up to the group's committed offset.
 * A group with nothing committed needs no replay: the processor reads from the beginning.
 */
export async function replayRanges(kafka: Kafka, groupId: string, topics: string[], since: number): Promise<ReplayRange[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const committed = await admin.fetchOffsets({ groupId, topics });
    const ranges: ReplayRange[] = [];
    for (const t of committed) {
      const wanted = t.partitions.filter((p) => Number(p.offset) > 0);
      if (wanted.length === 0) continue;
      const byTime = await admin.fetchTopicOffsetsByTimestamp(t.topic, since);
      const bounds = await admin.fetchTopicOffsets(t.topic);
      for (const p of wanted) {
        const fromTime = Number(byTime.find((x) => x.partition === p.partition)?.offset ?? p.offset);
        const low = Number(bounds.find((x) => x.partition === p.partition)?.low ?? 0);
        const start = Math.max(fromTime, low);
        const end = Number(p.offset);
        if (start < end) ranges.push({ topic: t.topic, partition: p.partition, start, end });
      }
    }
    return ranges;
  } finally {
    await admin.disconnect();
  }
}

/**
 * When the group has committed nothing on `topic` (an input added by an upgrade), commits the
 * offsets of its first records stamped at or after `since`, so it is read from there rather than
 * from the beginning. Best effort: a group with a member still in it refuses, and the topic is
 * then read from the beginning (what it reads of closed windows is let go).
 */
export async function startTopicAt(kafka: Kafka, log: Logger, groupId: string, topic: string, since: number): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    if (committed?.partitions.some((p) => Number(p.offset) >= 0)) return;
    const partitions = (await admin.fetchTopicOffsetsByTimestamp(topic, since)).map((p) => ({ partition: p.partition, offset: p.offset }));
    await admin.setOffsets({ groupId, topic, partitions });
    log.info({ topic, since: new Date(since).toISOString() }, 'new input read from where the replay starts');
  } catch (err) {
    log.warn({ err, topic }, 'could not start a new input where the replay starts: it is read from its beginning');
  } finally {
    await admin.disconnect();
  }
}

/** Whether the group has committed offsets on any of the topics: a restart, not its first start. */
export async function groupHasCommitted(kafka: Kafka, groupId: string, topics: string[]): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const committed = await admin.fetchOffsets({ groupId, topics });
    return committed.some((t) => t.partitions.some((p) => Number(p.offset) > 0));
  } finally {
    await admin.disconnect();
  }
}

/** Partitions of a topic whose log ends beyond the group's committed offset. */
export async function unreadPartitions(kafka: Kafka, groupId: string, topic: string): Promise<number[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    const ends = await admin.fetchTopicOffsets(topic);
    return ends
      .filter((e) => {
        const c = Number(committed?.partitions.find((p) => p.partition === e.partition)?.offset ?? -1);
        return Number(e.high) > Math.max(c, Number(e.low));
      })
      .map((e) => e.partition);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Reads the given ranges once, in offset order per partition, with a throwaway consumer group
 * (deleted afterwards) so the service's own committed offsets are never touched. read_committed,
 * like the processor, so the rebuilt state is exactly what the processor saw. Returns whether
 * every range was read before the deadline.
 */
export async function replay(opts: {
  kafka: Kafka;
  log: Logger;
  groupId: string;
  ranges: ReplayRange[];
  timeoutMs: number;
  onBatch: (topic: string, partition: number, messages: KafkaMessage[]) => Promise<void>;
}): Promise<{ complete: boolean; messages: number }> {
  const { kafka, ranges } = opts;
  if (ranges.length === 0) return { complete: true, messages: 0 };
  const key = (topic: string, partition: number) => `${topic}:${partition}`;
  const pending = new Map(ranges.map((r) => [key(r.topic, r.partition), r]));
  const groupId = `${opts.groupId}.replay.${randomBytes(4).toString('hex')}`;
  const consumer = kafka.consumer({ groupId, readUncommitted: false, maxWaitTimeInMs: 200, maxBytesPerPartition: 4 * 1024 * 1024 });
  let messages = 0;
  let failure: unknown;
  const done = (topic: string, partition: number, lastOffset: string | number) => {
    const r = pending.get(key(topic, partition));
    // A batch may end in transaction markers or aborted records that read_committed hides, so
    // "done" is judged on the fetched position, not on having seen the message at end − 1.
    if (r && Number(lastOffset) >= r.end - 1) pending.delete(key(topic, partition));
  };
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => done(payload.topic, payload.partition, payload.lastOffset));
  try {
    await consumer.connect();
    const topics = [...new Set(ranges.map((r) => r.topic))];
    for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, isStale }) => {
        if (isStale()) return;
        const r = pending.get(key(batch.topic, batch.partition));
        if (!r) return;
        const inRange = batch.messages.filter((m) => Number(m.offset) >= r.start && Number(m.offset) < r.end);
        try {
          if (inRange.length > 0) await opts.onBatch(batch.topic, batch.partition, inRange);
        } catch (err) {
          failure = err;
          pending.clear();
        }
        messages += inRange.length;
      },
    });
    for (const r of ranges) consumer.seek({ topic: r.topic, partition: r.partition, offset: String(r.start) });
    // Partitions with nothing to replay are not read at all.
    for (const topic of topics) {
      const admin = kafka.admin();
      await admin.connect();
      const all = await admin.fetchTopicOffsets(topic).finally(() => admin.disconnect());
      const idle = all.map((p) => p.partition).filter((p) => !pending.has(key(topic, p)));
      if (idle.length > 0) consumer.pause([{ topic, partitions: idle }]);
    }
    const deadline = Date.now() + opts.timeoutMs;
    while (pending.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (failure) throw failure;
    return { complete: pending.size === 0, messages };
  } finally {
    await consumer.disconnect();
    const admin = kafka.admin();
    await admin
      .connect()
      .then(() => admin.deleteGroups([groupId]))
      .catch((err: unknown) => opts.log.debug({ err, groupId }, 'replay group not deleted'))
      .finally(() => admin.disconnect());
  }
}
