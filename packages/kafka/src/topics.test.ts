import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ensureTopics, type TopicAdmin, type TopicDefinition } from './topics.js';

const defs: TopicDefinition[] = [
  { name: 'a', partitions: 2, doc: 'a', config: {} },
  { name: 'b', partitions: 1, doc: 'b', config: { 'cleanup.policy': 'compact', 'min.compaction.lag.ms': '1000' } },
];

interface Existing {
  partitions: number;
  policy: string;
}

/**
 * A broker as ensureTopics sees it: `existing` topics, and its answers, in order, to the metadata
 * wait for topics it creates (then every partition has a leader), and errors its first offset
 * requests meet.
 */
function admin(existing: Record<string, Existing>, metadataAnswers: (Error | 'leaderless')[] = [], offsetAnswers: Error[] = []) {
  const topics = new Map(Object.entries(existing));
  const calls = { created: [] as string[][], factors: [] as number[], grown: [] as { topic: string; count: number }[], altered: [] as { name: string; entries: string[] }[], metadataWaits: 0, offsetAsks: 0 };
  const a = {
    listTopics: async () => [...topics.keys()],
    createTopics: async (o: { topics: { topic: string; numPartitions: number; replicationFactor?: number; configEntries?: { name: string; value: string }[] }[] }) => {
      calls.created.push(o.topics.map((t) => t.topic));
      calls.factors.push(...o.topics.map((t) => t.replicationFactor ?? Number.NaN));
      for (const t of o.topics) topics.set(t.topic, { partitions: t.numPartitions, policy: t.configEntries?.find((e) => e.name === 'cleanup.policy')?.value ?? 'delete' });
      return true;
    },
    fetchTopicMetadata: async (o?: { topics: string[] }) => {
      const names = o?.topics ?? [];
      // Only the wait for created topics meets the scripted answers.
      const waiting = names.some((n) => calls.created.flat().includes(n));
      const answer = waiting ? metadataAnswers[calls.metadataWaits++] : undefined;
      if (answer instanceof Error) throw answer;
      const leader = answer === 'leaderless' ? -1 : 1;
      return {
        topics: names.map((name) => ({
          name,
          partitions: Array.from({ length: topics.get(name)?.partitions ?? 1 }, (_, partitionId) => ({ partitionId, leader, replicas: [1], isr: [1], partitionErrorCode: 0, offlineReplicas: [] })),
        })),
      };
    },
    fetchTopicOffsets: async (topic: string) => {
      calls.offsetAsks++;
      const answer = offsetAnswers.shift();
      if (answer) throw answer;
      return Array.from({ length: topics.get(topic)?.partitions ?? 1 }, (_, partition) => ({ partition, offset: '0', high: '0', low: '0' }));
    },
    createPartitions: async (o: { topicPartitions: { topic: string; count: number }[] }) => {
      for (const tp of o.topicPartitions) {
        calls.grown.push(tp);
        topics.get(tp.topic)!.partitions = tp.count;
      }
      return true;
    },
    describeConfigs: async (o: { resources: { name: string }[] }) => ({
      resources: o.resources.map((r) => ({
        resourceName: r.name,
        configEntries: [
          { configName: 'cleanup.policy', configValue: topics.get(r.name)?.policy ?? 'delete', configSource: 5, isDefault: true },
          // An operator's own retention on the topic, and a broker-wide setting.
          { configName: 'retention.ms', configValue: '31536000000', configSource: 1, isDefault: false },
          { configName: 'segment.bytes', configValue: '1073741824', configSource: 5, isDefault: true },
        ],
      })),
    }),
    alterConfigs: async (o: { resources: { name: string; configEntries: { name: string; value: string }[] }[] }) => {
      for (const r of o.resources) {
        calls.altered.push({ name: r.name, entries: r.configEntries.map((e) => `${e.name}=${e.value}`) });
        topics.get(r.name)!.policy = r.configEntries.find((e) => e.name === 'cleanup.policy')?.value ?? 'delete';
      }
    },
  };
  return { admin: a as unknown as TopicAdmin, calls };
}

const unknownTopic = () => Object.assign(new Error('This server does not host this topic-partition'), { type: 'UNKNOWN_TOPIC_OR_PARTITION', retriable: true });

test('waits until a created topic\'s leader answers for its offsets, which the metadata announces a moment early', async () => {
  const notLeader = () => Object.assign(new Error('This server is not the leader for that topic-partition'), { type: 'NOT_LEADER_FOR_PARTITION', retriable: true });
  const { admin: a, calls } = admin({}, [], [notLeader(), notLeader()]);
  assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), ['a', 'b']);
  assert.ok(calls.offsetAsks >= 4, `${calls.offsetAsks} offset requests`);
  await assert.rejects(ensureTopics(admin({}, [], [new Error('authorization failed')]).admin, defs, 1, { delayMs: 1 }), /authorization failed/);
});

test('waits out a just-started broker that does not know the topics it has just created', async () => {
  // kafkajs's own wait threw on the first such answer, and the worker starting with it died.
  const { admin: a, calls } = admin({}, [unknownTopic(), 'leaderless']);
  assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), ['a', 'b']);
  assert.deepEqual(calls.created, [['a', 'b']], 'created once, not again on each retry');
  assert.equal(calls.metadataWaits, 3);
});

test("creates topics with the cluster's own replication factor, not 1", async () => {
  // With 1, every pipeline topic on a three-broker cluster had one copy: one lost disk lost
  // committed decisions. -1 asks the broker for its default.replication.factor.
  const { admin: a, calls } = admin({});
  await ensureTopics(a, defs, undefined, { delayMs: 1 });
  assert.deepEqual(calls.factors, [-1, -1]);
});

test('leaves topics as defined alone', async () => {
  const { admin: a, calls } = admin({ a: { partitions: 2, policy: 'delete' }, b: { partitions: 1, policy: 'compact' } });
  assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), []);
  assert.deepEqual(calls.created, []);
  assert.deepEqual(calls.grown, []);
  assert.deepEqual(calls.altered, []);
});

test('a topic the broker made on its own grows to its partitions, and a compacted one gets its config', async () => {
  // Auto-created: one partition, the broker's delete policy; the registry would lose its
  // registrations after the broker's retention.
  const { admin: a, calls } = admin({ a: { partitions: 1, policy: 'delete' }, b: { partitions: 1, policy: 'delete' } });
  await ensureTopics(a, defs, 1, { delayMs: 1 });
  assert.deepEqual(calls.grown, [{ topic: 'a', count: 2 }]);
  // The definition over the topic's own overrides, which stay; broker-wide settings are not copied.
  assert.deepEqual(calls.altered, [{ name: 'b', entries: ['retention.ms=31536000000', 'cleanup.policy=compact', 'min.compaction.lag.ms=1000'] }]);
});

test('a topic with more partitions than defined is left as it is: partitions only ever grow', async () => {
  const { admin: a, calls } = admin({ a: { partitions: 12, policy: 'delete' }, b: { partitions: 1, policy: 'compact,delete' } });
  await ensureTopics(a, defs, 1, { delayMs: 1 });
  assert.deepEqual(calls.grown, []);
  assert.deepEqual(calls.altered, []);
});

test('gives up on an error that is not transient, and after its attempts', async () => {
  await assert.rejects(ensureTopics(admin({}, [new Error('authorization failed')]).admin, defs, 1, { delayMs: 1 }), /authorization failed/);
  await assert.rejects(ensureTopics(admin({}, Array.from({ length: 5 }, unknownTopic)).admin, defs, 1, { attempts: 3, delayMs: 1 }), /does not host/);
});

test('two workers growing one topic at once: the one told the count is invalid checks again and goes on', async () => {
  const { admin: a } = admin({ a: { partitions: 1, policy: 'delete' }, b: { partitions: 1, policy: 'compact' } });
  const raced = a as unknown as { createPartitions: (o: { topicPartitions: { topic: string; count: number }[] }) => Promise<boolean>; fetchTopicMetadata: TopicAdmin['fetchTopicMetadata'] };
  const grow = raced.createPartitions;
  raced.createPartitions = async (o) => {
    await grow(o); // the other worker got there first
    throw Object.assign(new Error('Number of partitions is invalid'), { type: 'INVALID_PARTITIONS', retriable: false });
  };
  assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), []);
});

test('a repair that fails (no permission) warns and lets the worker start', async () => {
  const { admin: a } = admin({ a: { partitions: 2, policy: 'delete' }, b: { partitions: 1, policy: 'delete' } });
  (a as unknown as { alterConfigs: () => Promise<void> }).alterConfigs = async () => {
    throw Object.assign(new Error('Topic authorization failed'), { type: 'TOPIC_AUTHORIZATION_FAILED', retriable: false });
  };
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on('warning', onWarning);
  try {
    assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), []);
    await new Promise((r) => setImmediate(r));
    assert.ok(warnings.some((w) => /authorization failed/.test(w)), warnings.join('; '));
  } finally {
    process.off('warning', onWarning);
  }
});
