import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { Partitioners, type Kafka, type PartitionerArgs } from 'kafkajs';
import { createLogger } from '@dlog/runtime';
import { createDecisionLogger } from './decision-logger.js';
import { kafkaTransport, leadingString, PartlyWrittenError } from './kafka-transport.js';
import type { OutMessage, Transport } from './transport.js';

// kafkajs's own producer (its sendMessages and sequence-number bookkeeping), over a fake cluster:
// the partial failure needs brokers that fail independently, which one local broker cannot do.
const require = createRequire(import.meta.url);
const createProducer = require('kafkajs/src/producer') as (opts: Record<string, unknown>) => unknown;
const { KafkaJSConnectionError, KafkaJSProtocolError } = require('kafkajs/src/errors') as Record<'KafkaJSConnectionError' | 'KafkaJSProtocolError', new (...args: unknown[]) => Error>;

const log = createLogger({ name: 'test', level: process.env.LOG_LEVEL ?? 'error' });
const quiet = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => quiet, setLogLevel() {} };

interface Appended {
  broker: number;
  partition: number;
  value: Buffer;
}

/**
 * Two brokers, partition p led by broker p + 1. Each keeps, per producer id and partition, the
 * next sequence number, as a broker does: a batch that starts there is appended, one that starts
 * before it is a duplicate (dropped, answered as written), one after it is refused.
 */
function twoBrokers() {
  const appended: Appended[] = [];
  const down = new Set<number>();
  let producerIds = 0;
  const next = new Map<string, number>();
  const broker = (nodeId: number) => ({
    nodeId,
    async initProducerId() {
      return { producerId: ++producerIds, producerEpoch: 0 };
    },
    async produce({ producerId, topicData }: { producerId: number; topicData: { topic: string; partitions: { partition: number; firstSequence: number; messages: { value: Buffer }[] }[] }[] }) {
      await new Promise((r) => setImmediate(r));
      if (down.has(nodeId)) throw new KafkaJSConnectionError(`Connection error: broker ${nodeId} is down`, { broker: `b${nodeId}:9092` });
      for (const t of topicData) {
        for (const p of t.partitions) {
          const k = `${producerId}/${p.partition}`;
          const expected = next.get(k) ?? 0;
          if (p.firstSequence > expected) throw new KafkaJSProtocolError({ message: 'out of order', type: 'OUT_OF_ORDER_SEQUENCE_NUMBER', code: 45, retriable: false });
          if (p.firstSequence < expected) continue; // a resend the broker already has
          for (const m of p.messages) appended.push({ broker: nodeId, partition: p.partition, value: m.value });
          next.set(k, expected + p.messages.length);
        }
      }
      return { topics: topicData.map((t) => ({ topicName: t.topic, partitions: t.partitions.map((p) => ({ partition: p.partition, errorCode: 0, baseOffset: '0', logAppendTime: '-1', logStartOffset: '0' })) })) };
    },
  });
  const brokers = new Map([1, 2].map((id) => [id, broker(id)]));
  const partitionMetadata = [0, 1].map((p) => ({ partitionErrorCode: 0, partitionId: p, leader: p + 1, replicas: [p + 1], isr: [p + 1] }));
  const cluster = {
    retry: { retries: 0 },
    async connect() {},
    async disconnect() {},
    isConnected: () => true,
    async refreshMetadataIfNecessary() {},
    async refreshMetadata() {},
    async addMultipleTargetTopics() {},
    removeBroker() {},
    findTopicPartitionMetadata: () => partitionMetadata,
    findLeaderForPartitions: (_t: string, partitions: (string | number)[]) => {
      const out: Record<number, number[]> = {};
      for (const p of partitions.map(Number)) (out[p + 1] ??= []).push(p);
      return out;
    },
    async findBroker({ nodeId }: { nodeId: number }) {
      return brokers.get(Number(nodeId));
    },
    async findControllerBroker() {
      return brokers.get(1);
    },
  };
  const kafka = { producer: (cfg: Record<string, unknown>) => createProducer({ ...cfg, cluster, logger: quiet }) } as unknown as Kafka;
  return { kafka, appended, down };
}

/** Keys that kafkajs's default partitioner puts on partition 0 and 1 of a two-partition topic. */
const partitioner = Partitioners.DefaultPartitioner();
const meta = [0, 1].map((p) => ({ partitionErrorCode: 0, partitionId: p, leader: p + 1, replicas: [], isr: [] }));
const partitionOf = (key: string) => partitioner({ topic: 't', partitionMetadata: meta, message: { key, value: null } } as PartitionerArgs);
function keysFor(partition: number, n: number, prefix = 'k'): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < n; i++) if (partitionOf(`${prefix}${i}`) === partition) keys.push(`${prefix}${i}`);
  return keys;
}

const transportOver = (kafka: Kafka) => kafkaTransport({ brokers: ['fake:9092'], registryUrl: 'http://127.0.0.1:1/none', clientId: 'test', log, compression: 'none', requestTimeoutMs: 1_000, kafka });
const message = (key: string, n: number): OutMessage => ({ key, value: Buffer.from(`${key}-${n}`) });
const counts = (appended: Appended[]) => {
  const c = new Map<string, number>();
  for (const a of appended) c.set(a.value.toString(), (c.get(a.value.toString()) ?? 0) + 1);
  return c;
};

describe('kafkaTransport over several brokers', () => {
  it('a retried batch is written once when one broker of two was down: what the healthy broker took is not sent again', async () => {
    // kafkajs keeps the sequence numbers it advanced for the partitions of the broker that took
    // its part; resent whole on the same session, those were written a second time.
    const { kafka, appended, down } = twoBrokers();
    const t = transportOver(kafka);
    const [a0, a1] = [keysFor(0, 1, 'a')[0]!, keysFor(1, 1, 'a')[0]!];
    await t.send('t', [message(a0, 0), message(a1, 0)]); // kafkajs learns the leaders
    down.add(2);
    const batch = [...keysFor(0, 3), ...keysFor(1, 3)].map((k) => message(k, 1));
    await assert.rejects(t.send('t', batch), (err: Error & { sessionLost?: boolean }) => err.sessionLost !== true, 'the failed call touched one broker: retried in this session');
    assert.deepEqual(batch.map((m) => t.delivered!(m.value)), [true, true, true, false, false, false], 'partition 0 landed, partition 1 did not');
    down.delete(2);
    await t.send('t', batch);
    const c = counts(appended);
    for (const m of batch) assert.equal(c.get(m.value.toString()), 1, `${m.value.toString()} written once`);
    assert.deepEqual(
      appended.filter((a) => a.partition === 1).map((a) => a.value.toString()),
      [`${a1}-0`, ...keysFor(1, 3).map((k) => `${k}-1`)],
      'in order on the partition that waited',
    );
    await t.disconnect();
  });

  it('a failed send that spanned brokers (leaders not known yet) is of unknown outcome: the logger gets a new session and reads back', async () => {
    const { kafka, down } = twoBrokers();
    const t = transportOver(kafka);
    down.add(2);
    const batch = [...keysFor(0, 2), ...keysFor(1, 2)].map((k) => message(k, 1));
    await assert.rejects(t.send('t', batch), (err: Error & { sessionLost?: boolean }) => err instanceof PartlyWrittenError && err.sessionLost === true);
    await t.disconnect();
  });

  it('the logger on kafkajs with one broker of two down writes every event once', async () => {
    const { kafka, appended, down } = twoBrokers();
    const t = transportOver(kafka);
    // Whichever way a batch fails (spanning both brokers before kafkajs knows the leaders: a new
    // session and a read-back; or one call per leader: the healthy broker's part kept out of the
    // retry), every event must be written once.
    const transport: Transport = {
      ...t,
      register: async (subject) => (subject.includes('artifact') ? 2 : 1),
      // The read-back, from what the brokers appended.
      written: async (_topic, _since, ids) => {
        return new Set(appended.map((a) => leadingString(a.value) ?? '').filter((id) => ids.has(id)));
      },
    };
    down.add(2);
    const logger = createDecisionLogger({ service: 'svc', transport, model: 'registry://models/m:1', log, topic: 't', artifactTopic: 'artifacts' });
    const [p0, p1] = [keysFor(0, 20, 'r'), keysFor(1, 20, 'r')];
    const keys = p0.flatMap((k, i) => [k, p1[i]!]);
    for (const k of keys) logger.record({ requestId: k, input: { k }, output: { decision: 'ok' } });
    await new Promise((r) => setTimeout(r, 3_000));
    down.delete(2);
    for (const k of keys) logger.record({ requestId: `${k}`, input: { k, again: true }, output: { decision: 'ok' } });
    assert.deepEqual(await logger.flush(30_000), { ok: true, unsent: 0 });
    const stats = await logger.close();
    const ids = appended.filter((a) => a.value[0] === 0 && a.value.readInt32BE(1) === 1).map((a) => leadingString(a.value));
    assert.equal(stats.sent, 80);
    assert.equal(ids.length, 80, `each event once (${ids.length - new Set(ids).size} twice)`);
    assert.equal(new Set(ids).size, 80);
  });
});

describe('kafkaTransport after disconnect', () => {
  it('ends a read-back under way and refuses sends and read-backs, instead of opening a new producer', async () => {
    // A read-back whose consumer never gets to the end (a slow broker): disconnect() must not wait for its 10 request timeouts.
    let consumerDisconnected = false;
    const kafka = {
      admin: () => ({
        connect: async () => undefined,
        disconnect: async () => undefined,
        fetchTopicOffsetsByTimestamp: async () => [{ partition: 0, offset: '0' }],
        fetchTopicOffsets: async () => [{ partition: 0, offset: '5', high: '5', low: '0' }],
      }),
      consumer: () => ({
        connect: async () => undefined,
        subscribe: async () => undefined,
        run: async () => undefined,
        seek: () => undefined,
        disconnect: async () => void (consumerDisconnected = true),
      }),
      producer: () => {
        throw new Error('no producer may be made after disconnect');
      },
    } as unknown as Kafka;
    const t = kafkaTransport({ brokers: ['fake:9092'], registryUrl: 'http://127.0.0.1:1/none', clientId: 'test', log, compression: 'none', requestTimeoutMs: 60_000, kafka });
    const reading = t.written!('t', 0, new Set(['a']));
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await t.disconnect();
    await assert.rejects(reading, /abandoned/);
    assert.ok(Date.now() - t0 < 1_000, `ended after ${Date.now() - t0} ms`);
    assert.ok(consumerDisconnected, 'its consumer is closed');
    await assert.rejects(t.send('t', [message('k', 1)]), /closed/);
    await assert.rejects(t.connect(), /closed/);
    await assert.rejects(t.written!('t', 0, new Set(['a'])), /closed/);
  });
});
