import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Admin } from 'kafkajs';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import { config, log, unique, waitFor } from './helpers.js';

describe('local Kafka broker', () => {
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-kafka', log });
  let admin: Admin;

  before(async () => {
    admin = kafka.admin();
    await admin.connect();
  });
  after(async () => {
    await admin.disconnect();
  });

  it('delivers a produced message to a consumer group, with key and headers', async () => {
    const topic = unique('t-roundtrip');
    const created = await ensureTopics(admin, [{ name: topic, partitions: 2, doc: 'test', config: {} }]);
    assert.deepEqual(created, [topic]);

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({ topic, messages: [{ key: 'k1', value: 'hello decision-log', headers: { h: 'v' } }] });
    await producer.disconnect();

    const consumer = kafka.consumer({ groupId: unique('g') });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const received: { key: string; value: string; header: string }[] = [];
    await consumer.run({
      eachMessage: async ({ message }) => {
        received.push({
          key: message.key?.toString() ?? '',
          value: message.value?.toString() ?? '',
          header: message.headers?.h?.toString() ?? '',
        });
      },
    });
    try {
      await waitFor(() => received.length > 0, { timeoutMs: 30_000, what: 'the message to arrive' });
    } finally {
      await consumer.disconnect();
    }
    assert.deepEqual(received, [{ key: 'k1', value: 'hello decision-log', header: 'v' }]);
  });

  it('has the pipeline topics from infra/kafka/topics.yaml, compaction where declared', async () => {
    const defs = loadTopicDefinitions();
    const existing = new Set(await admin.listTopics());
    for (const d of defs) assert.ok(existing.has(d.name), `topic ${d.name} missing`);
    const meta = await admin.fetchTopicMetadata({ topics: ['inference.raw'] });
    assert.equal(meta.topics[0]?.partitions.length, defs.find((d) => d.name === 'inference.raw')?.partitions);
    const { resources } = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2, name: 'registry.artifacts', configNames: ['cleanup.policy'] }],
    });
    assert.equal(resources[0]?.configEntries[0]?.configValue, 'compact');
  });

  it('commits a transaction (exactly-once building block) on the single node', async () => {
    const topic = unique('t-tx');
    await ensureTopics(admin, [{ name: topic, partitions: 1, doc: 'test', config: {} }]);
    const producer = kafka.producer({ transactionalId: unique('tx'), idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const tx = await producer.transaction();
    await tx.send({ topic, messages: [{ value: 'committed' }] });
    await tx.commit();
    const aborted = await producer.transaction();
    await aborted.send({ topic, messages: [{ value: 'aborted' }] });
    await aborted.abort();
    await producer.disconnect();

    const consumer = kafka.consumer({ groupId: unique('g'), readUncommitted: false });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const values: string[] = [];
    await consumer.run({ eachMessage: async ({ message }) => void values.push(message.value?.toString() ?? '') });
    try {
      await waitFor(() => values.length > 0, { timeoutMs: 30_000, what: 'the committed message' });
      // Give an aborted record the chance to (wrongly) show up behind the committed one.
      const end = await admin.fetchTopicOffsets(topic);
      assert.ok(Number(end[0]?.high) >= 2);
    } finally {
      await consumer.disconnect();
    }
    assert.deepEqual(values, ['committed']);
  });
});
