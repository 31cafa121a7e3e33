import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ensureTopics, type TopicAdmin, type TopicDefinition } from './topics.js';

const defs: TopicDefinition[] = [
  { name: 'a', partitions: 2, doc: 'a', config: {} },
  { name: 'b', partitions: 1, doc: 'b', config: { 'retention.ms': '1000' } },
];

/** The broker's answers, in order, to the metadata wait; then every partition has a leader. */
function admin(existing: string[], metadataAnswers: (Error | 'leaderless')[]): TopicAdmin & { created: string[][]; metadataCalls: number } {
  const topics = new Set(existing);
  const a = {
    created: [] as string[][],
    metadataCalls: 0,
    listTopics: async () => [...topics],
    createTopics: async (o: { topics: { topic: string }[] }) => {
      a.created.push(o.topics.map((t) => t.topic));
      for (const t of o.topics) topics.add(t.topic);
      return true;
    },
    fetchTopicMetadata: async (o?: { topics: string[] }) => {
      const answer = metadataAnswers[a.metadataCalls++];
      if (answer instanceof Error) throw answer;
      const leader = answer === 'leaderless' ? -1 : 1;
      return { topics: (o?.topics ?? []).map((name) => ({ name, partitions: [{ partitionId: 0, leader, replicas: [1], isr: [1], partitionErrorCode: 0, offlineReplicas: [] }] })) };
    },
  };
  return a as unknown as TopicAdmin & { created: string[][]; metadataCalls: number };
}

const unknownTopic = () => Object.assign(new Error('This server does not host this topic-partition'), { type: 'UNKNOWN_TOPIC_OR_PARTITION', retriable: true });

test('waits out a just-started broker that does not know the topics it has just created', async () => {
  // kafkajs's own wait threw on the first such answer, and the worker starting with it died.
  const a = admin([], [unknownTopic(), 'leaderless', 'ok' as never]);
  assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), ['a', 'b']);
  assert.deepEqual(a.created, [['a', 'b']], 'created once, not again on each retry');
  assert.equal(a.metadataCalls, 3);
});

test('leaves existing topics alone and asks nothing more', async () => {
  const a = admin(['a', 'b'], []);
  assert.deepEqual(await ensureTopics(a, defs, 1, { delayMs: 1 }), []);
  assert.equal(a.metadataCalls, 0);
});

test('gives up on an error that is not transient, and after its attempts', async () => {
  await assert.rejects(ensureTopics(admin([], [new Error('authorization failed')]), defs, 1, { delayMs: 1 }), /authorization failed/);
  await assert.rejects(ensureTopics(admin([], Array.from({ length: 5 }, unknownTopic)), defs, 1, { attempts: 3, delayMs: 1 }), /does not host/);
});
