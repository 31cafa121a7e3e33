import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Admin, Kafka, Message } from 'kafkajs';
import { createKafka, createTransactionalProcessor, loadNativeKafka, type KafkaClientKind } from '@dlog/kafka';
import { collect, config, ensureTopicsSoon, log, startPrivateKafka, unique, waitFor, type PrivateKafka } from './helpers.js';

/** Input and output topics of 3 partitions. */
async function createTopics(kafka: Kafka, input: string, output: string): Promise<void> {
  await ensureTopicsSoon(kafka, [
    { name: input, partitions: 3, doc: 'test', config: {} },
    { name: output, partitions: 3, doc: 'test', config: {} },
  ]);
}

/** n messages v0 … v(n-1), keyed over a few keys, in sends of 5,000. */
async function produceNumbered(kafka: Kafka, topic: string, n: number): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let i = 0; i < n; i += 5_000) {
    const count = Math.min(5_000, n - i);
    await producer.send({ topic, acks: -1, messages: Array.from({ length: count }, (_, j) => ({ key: `k${(i + j) % 11}`, value: `v${i + j}` })) });
  }
  await producer.disconnect();
}

/** Reads `topic` (read_committed) until n messages came, then waits for any doubles: they would arrive right behind. */
async function readOutputs(topic: string, n: number, timeoutMs: number, brokers?: string[]) {
  const seen = await collect(topic, brokers);
  try {
    await waitFor(() => seen.messages.length >= n, { timeoutMs, what: `${n} outputs (have ${seen.messages.length})` });
    await new Promise((r) => setTimeout(r, 1_500));
  } finally {
    await seen.stop();
  }
  return seen.messages;
}

/** `topic` holds each of n distinct values exactly once. */
async function expectEachOnce(topic: string, brokers: string[], n: number, timeoutMs: number): Promise<void> {
  const messages = await readOutputs(topic, n, timeoutMs, brokers);
  const values = new Set(messages.map((m) => m.value!.toString()));
  assert.equal(values.size, n, 'every input is in the output');
  assert.equal(messages.length, n, 'and none twice');
}

/** `topic` holds exactly n outputs (inputs that repeat a value, each once). */
async function expectCount(topic: string, n: number): Promise<void> {
  assert.equal((await readOutputs(topic, n, 30_000)).length, n, 'each input once');
}

/**
 * A kafkajs loop copying `input` to `output` (keys and values), counting what it commits in
 * `counter.committed`; `before` runs ahead of each batch's copy (to fail or slow one down).
 */
function copyLoop(
  kafka: Kafka,
  name: string,
  input: string,
  output: string,
  counter: { committed: number },
  opts: { transactionalId?: string; before?: () => Promise<void> } = {},
) {
  return createTransactionalProcessor({
    kafka,
    log,
    groupId: unique(`${name}-g`),
    topics: [input],
    transactionalId: opts.transactionalId ?? unique(`${name}-tx`),
    process: async (batch) => {
      await opts.before?.();
      return [{ topic: output, messages: batch.map((m) => ({ key: m.key, value: m.value })) }];
    },
    onCommitted: (info) => (counter.committed += info.count),
  });
}

/**
 * The transactional loop on both clients, on the real broker: every input becomes exactly one
 * committed output, keys, headers and timestamps survive, and a batch whose processing fails is
 * done again without leaving anything twice for a read_committed reader.
 */
describe('transactional processor on the real broker', () => {
  let kafka: Kafka;
  let admin: Admin;

  before(async () => {
    kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-processor', log });
    admin = kafka.admin();
    await admin.connect();
  });
  after(async () => {
    await admin.disconnect();
  });

  const kinds: KafkaClientKind[] = ['kafkajs', 'native'];
  for (const kind of kinds) {
    it(`${kind}: exactly one output per input across a failed batch, keys, headers and timestamps kept`, async () => {
      if (kind === 'native') assert.ok(loadNativeKafka(), 'node-rdkafka must be installed where the tests run (.ci/run builds it)');
      const input = unique(`proc-in-${kind}`);
      const output = unique(`proc-out-${kind}`);
      await createTopics(kafka, input, output);
      const n = 3_000;
      const stamp = Date.UTC(2026, 0, 2, 3, 4, 5);
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      const messages: Message[] = [];
      for (let i = 0; i < n; i++) messages.push({ key: `k${i % 17}`, value: `v${i}`, headers: { 'x-i': String(i) }, timestamp: String(stamp + i) });
      await producer.send({ topic: input, messages, acks: -1 });
      await producer.disconnect();

      let failures = 0;
      let processed = 0;
      const processor = createTransactionalProcessor({
        kafka,
        log,
        groupId: unique(`proc-g-${kind}`),
        topics: [input],
        transactionalId: unique(`proc-tx-${kind}`),
        native: kind === 'native' ? { kafka: loadNativeKafka()!, brokers: config.kafkaBrokers, clientId: 'test-processor' } : undefined,
        concurrency: 2,
        process: async (batch) => {
          processed += batch.length;
          // One batch fails once, after earlier batches committed: it is read again and done once.
          if (failures === 0 && processed > 100) {
            failures++;
            throw new Error('injected failure');
          }
          return [
            {
              topic: output,
              messages: batch.map((m) => ({
                key: m.key,
                value: Buffer.concat([Buffer.from('out:'), m.value!]),
                headers: { 'x-i': m.headers!['x-i']!, 'x-kind': kind },
                timestamp: m.timestamp,
              })),
            },
          ];
        },
      });
      await processor.start();
      const seen = await collect(output);
      try {
        await waitFor(() => seen.messages.length >= n, { timeoutMs: 60_000, what: `${n} outputs` });
        // Anything doubled would arrive right behind: give it time to show.
        await new Promise((r) => setTimeout(r, 1_000));
      } finally {
        await processor.stop();
        await seen.stop();
      }
      assert.equal(failures, 1, 'the injected failure happened');
      assert.ok(processed > n, 'the failed batch was processed again');
      assert.equal(seen.messages.length, n, 'each input exactly once in the output');
      const values = new Set(seen.messages.map((m) => m.value!.toString()));
      assert.equal(values.size, n);
      for (const m of seen.messages) {
        const i = Number(m.value!.toString().slice('out:v'.length));
        assert.equal(m.key!.toString(), `k${i % 17}`);
        assert.equal(m.headers!['x-i']!.toString(), String(i));
        assert.equal(m.headers!['x-kind']!.toString(), kind);
        assert.equal(Number(m.timestamp), stamp + i, 'the producer-side timestamp is carried through');
      }
    });
  }

  for (const kind of kinds) {
    it(`${kind}: reads partitions added to its input while it runs, within seconds, not the clients' 5 minutes`, async () => {
      const input = unique(`proc-grow-in-${kind}`);
      const output = unique(`proc-grow-out-${kind}`);
      await ensureTopicsSoon(kafka, [
        { name: input, partitions: 1, doc: 'test', config: {} },
        { name: output, partitions: 1, doc: 'test', config: {} },
      ]);
      const got: number[] = [];
      const processor = createTransactionalProcessor({
        kafka,
        log,
        groupId: unique(`proc-grow-g-${kind}`),
        topics: [input],
        transactionalId: unique(`proc-grow-tx-${kind}`),
        native: kind === 'native' ? { kafka: loadNativeKafka()!, brokers: config.kafkaBrokers, clientId: 'test-processor' } : undefined,
        process: async (batch, ctx) => {
          got.push(...batch.map(() => ctx.partition));
          return [{ topic: output, messages: batch.map((m) => ({ key: m.key, value: m.value })) }];
        },
      });
      await processor.start();
      const send = async (partition: number) => {
        // A fresh producer: kafkajs drops (without an error) a message for a partition its
        // metadata does not know yet.
        const producer = kafka.producer();
        await producer.connect();
        try {
          const [r] = await producer.send({ topic: input, messages: [{ value: `on ${partition}`, partition }] });
          assert.equal(r?.partition, partition, 'the broker took the message');
        } finally {
          await producer.disconnect();
        }
      };
      try {
        await send(0);
        await waitFor(() => got.includes(0), { timeoutMs: 60_000, what: 'the message on the first partition' });
        await admin.createPartitions({ topicPartitions: [{ topic: input, count: 3 }] });
        await waitFor(
          async () => {
            const [t] = (await admin.fetchTopicMetadata({ topics: [input] })).topics;
            return t?.partitions.length === 3 && t.partitions.every((p) => p.leader >= 0);
          },
          { timeoutMs: 30_000, what: 'the added partitions to have leaders' },
        );
        await send(2);
        // With either client's default metadata age this took 5 minutes; the refresh is now 10 s.
        await waitFor(() => got.includes(2), { timeoutMs: 60_000, what: 'the message on an added partition' });
      } finally {
        await processor.stop();
      }
      assert.deepEqual(got, [0, 2]);
    });
  }

  it('native: the broker stopped mid-stream and started again: every input exactly once', { timeout: 240_000 }, async () => {
    let pk: PrivateKafka | undefined;
    let processor: ReturnType<typeof createTransactionalProcessor> | undefined;
    try {
      pk = await startPrivateKafka();
      const pkafka = createKafka({ brokers: pk.brokers, clientId: 'test-processor-outage', log });
      const input = unique('outage-in');
      const output = unique('outage-out');
      await createTopics(pkafka, input, output);
      const n = 30_000;
      await produceNumbered(pkafka, input, n);

      let commits = 0;
      let committed = 0;
      processor = createTransactionalProcessor({
        kafka: pkafka,
        log,
        groupId: unique('outage-g'),
        topics: [input],
        transactionalId: unique('outage-tx'),
        native: { kafka: loadNativeKafka()!, brokers: pk.brokers, clientId: 'test-processor-outage' },
        concurrency: 2,
        // Slow enough that the outage falls in the middle of the stream: a millisecond a message,
        // since the processor runs a poll's partitions side by side.
        process: async (batch) => {
          await new Promise((r) => setTimeout(r, Math.max(100, batch.length)));
          return [{ topic: output, messages: batch.map((m) => ({ key: m.key, value: m.value })) }];
        },
        onCommitted: (info) => {
          commits++;
          committed += info.count;
        },
      });
      await processor.start();
      await waitFor(() => commits >= 1, { timeoutMs: 60_000, what: 'a first committed batch' });
      // Judged when the outage begins: a broker keeps serving while it shuts down.
      const beforeOutage = committed;
      await pk.stop();
      assert.ok(beforeOutage < n, `the outage came mid-stream (${beforeOutage} of ${n} committed before it)`);
      await new Promise((r) => setTimeout(r, 3_000));
      await pk.start();
      await expectEachOnce(output, pk.brokers, n, 150_000);
    } finally {
      await processor?.stop();
      await pk?.stop();
    }
  });

  it('native: two instances in one group, partitions moving between them mid-stream: every input exactly once', { timeout: 180_000 }, async () => {
    const input = unique('rebal-in');
    const output = unique('rebal-out');
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: input, numPartitions: 6 }, { topic: output, numPartitions: 3 }] });
    const n = 24_000;
    await produceNumbered(kafka, input, n);
    const groupId = unique('rebal-g');
    let committed = 0;
    const instance = (id: string) =>
      createTransactionalProcessor({
        kafka,
        log,
        groupId,
        topics: [input],
        transactionalId: `${groupId}-${id}`,
        native: { kafka: loadNativeKafka()!, brokers: config.kafkaBrokers, clientId: `test-rebal-${id}` },
        concurrency: 2,
        // Slow batches (a millisecond a message; a poll's partitions run side by side, so the input
        // takes about 10 s), so rebalances land while batches are in hand and the input outlasts
        // the second rebalance even on a loaded machine.
        process: async (batch) => {
          await new Promise((r) => setTimeout(r, Math.max(100, batch.length)));
          return [{ topic: output, messages: batch.map((m) => ({ key: m.key, value: m.value })) }];
        },
        onCommitted: (info) => {
          committed += info.count;
        },
      });
    const a = instance('a');
    const b = instance('b');
    try {
      await a.start();
      await waitFor(() => committed > 0, { timeoutMs: 60_000, what: 'a first commit by instance a' });
      await b.start(); // the group rebalances: partitions move from a to b
      await waitFor(() => committed > n / 3, { timeoutMs: 60_000, what: 'a third of the input committed' });
      // Judged when the stop begins: stopping drains what a holds in hand, which takes a while.
      const beforeStop = committed;
      await a.stop(); // and back to b alone
      assert.ok(beforeStop < n, `the second rebalance came mid-stream (${beforeStop} of ${n} committed before it)`);
      await expectEachOnce(output, config.kafkaBrokers, n, 120_000);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('kafkajs: a batch worked on for longer than the session, while another member joins: every input exactly once', { timeout: 120_000 }, async () => {
    // kafkajs heartbeats only between batches and its transactional offset commits name no
    // member or generation: a batch that outlived its session was committed by the member the
    // partitions moved to and then by this one too (reviewer repro: every input of it twice).
    const input = unique('proc-slow-in');
    const output = unique('proc-slow-out');
    await createTopics(kafka, input, output);
    const n = 600;
    await produceNumbered(kafka, input, n);
    const groupId = unique('proc-slow-g');
    let slowStarted = false;
    let slowDone = false;
    const instance = (id: string, slow: boolean) =>
      createTransactionalProcessor({
        kafka,
        log,
        groupId,
        topics: [input],
        transactionalId: unique(`proc-slow-tx-${id}`),
        sessionTimeoutMs: 6_000,
        heartbeatIntervalMs: 1_000,
        process: async (batch) => {
          if (slow && !slowStarted) {
            slowStarted = true;
            // Past the 6 s session: the broker's smallest allowed by default.
            await new Promise((r) => setTimeout(r, 10_000));
            slowDone = true;
          }
          return [{ topic: output, messages: batch.map((m) => ({ key: m.key, value: m.value })) }];
        },
      });
    const a = instance('a', true);
    const b = instance('b', false);
    try {
      await a.start();
      await waitFor(() => slowStarted, { timeoutMs: 60_000, what: 'the slow batch to begin' });
      await b.start();
      await waitFor(() => slowDone, { timeoutMs: 30_000, what: 'the slow batch to end' });
      await expectEachOnce(output, config.kafkaBrokers, n, 90_000);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  // A failed EndTxn, injected into the client's call (the broker is real), once: before the
  // request went (kafkajs then left its transaction "committing" for good: abort refused, every
  // later transaction() threw, the worker held its partitions and committed nothing until
  // restarted), or after the broker committed, with the answer lost (read again from kafkajs's own
  // position, the batch was written and committed twice).
  for (const when of ['before the broker had it', 'after the broker committed'] as const) {
    it(`kafkajs: a commit that fails on the wire ${when}: the worker goes on, each input once`, { timeout: 120_000 }, async () => {
      const { createRequire } = await import('node:module');
      const require = createRequire(import.meta.resolve('kafkajs'));
      const Broker = require('./src/broker/index.js') as { prototype: { endTxn(args: { transactionResult: boolean }): Promise<unknown> } };
      const { KafkaJSConnectionError } = require('./src/errors.js') as { KafkaJSConnectionError: new (m: string) => Error };
      const realEndTxn = Broker.prototype.endTxn;
      let failNext = false;
      let injected = 0;
      Broker.prototype.endTxn = async function (this: unknown, args: { transactionResult: boolean }) {
        if (!(args.transactionResult && failNext)) return realEndTxn.call(this, args);
        failNext = false;
        if (when === 'after the broker committed') await realEndTxn.call(this, args);
        injected++;
        throw new KafkaJSConnectionError(`Connection error: read ECONNRESET (injected, ${when})`);
      };
      const input = unique('proc-endtxn-in');
      const output = unique('proc-endtxn-out');
      await createTopics(kafka, input, output);
      const counter = { committed: 0 };
      const processor = copyLoop(kafka, 'proc-endtxn', input, output, counter);
      try {
        await processor.start();
        failNext = true;
        await produceNumbered(kafka, input, 100);
        await waitFor(() => injected === 1, { timeoutMs: 60_000, what: 'the injected EndTxn failure' });
        await produceNumbered(kafka, input, 100);
        await waitFor(() => counter.committed >= 100, { timeoutMs: 60_000, what: 'commits to go on after the failed one' });
      } finally {
        Broker.prototype.endTxn = realEndTxn;
        await processor.stop();
      }
      // produceNumbered writes v0 … v99 each time: 200 outputs, each of the two sends once.
      await expectCount(output, 200);
    });
  }

  it('kafkajs: a consumer kafkajs gives up on is replaced, and reading goes on', { timeout: 120_000 }, async () => {
    // kafkajs stops a consumer for good on an error it deems not retriable, and then reads nothing
    // more, silently: the worker looked alive while its lag grew.
    const { createRequire } = await import('node:module');
    const require = createRequire(import.meta.resolve('kafkajs'));
    const { KafkaJSNonRetriableError } = require('./src/errors.js') as { KafkaJSNonRetriableError: new (m: string) => Error };
    const input = unique('proc-crash-in');
    const output = unique('proc-crash-out');
    await createTopics(kafka, input, output);
    let thrown = 0;
    const processor = copyLoop(kafka, 'proc-crash', input, output, { committed: 0 }, {
      before: async () => {
        if (thrown === 0) {
          thrown++;
          throw new KafkaJSNonRetriableError('injected: not retriable');
        }
      },
    });
    try {
      await processor.start();
      await produceNumbered(kafka, input, 300);
      await expectEachOnce(output, config.kafkaBrokers, 300, 60_000);
      assert.equal(thrown, 1);
    } finally {
      await processor.stop();
    }
  });

  it('kafkajs: fenced by another producer with its transactional id, it makes a new one and goes on', { timeout: 120_000 }, async () => {
    // A replica sharing DLOG_INSTANCE_ID started and went away: the fence showed on the next
    // transaction's first send, whose local abort passed, and the loop kept the fenced producer,
    // failing the same batch for good while consumer after consumer was started.
    const input = unique('proc-fenced-in');
    const output = unique('proc-fenced-out');
    const transactionalId = unique('proc-fenced-tx');
    await createTopics(kafka, input, output);
    const counter = { committed: 0 };
    const processor = copyLoop(kafka, 'proc-fenced', input, output, counter, { transactionalId });
    try {
      await processor.start();
      await produceNumbered(kafka, input, 100);
      await waitFor(() => counter.committed >= 100, { timeoutMs: 60_000, what: 'the first 100 committed' });
      const other = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
      await other.connect();
      // kafkajs registers the transactional id at the first transaction(), which fences.
      await (await other.transaction()).abort();
      await other.disconnect();
      await produceNumbered(kafka, input, 100);
      await waitFor(() => counter.committed >= 200, { timeoutMs: 60_000, what: `the next 100 committed (have ${counter.committed})` });
    } finally {
      await processor.stop();
    }
    await expectCount(output, 200);
  });

  it('kafkajs: a commit whose answer is lost and which lands late is not done again', { timeout: 120_000 }, async () => {
    // The new producer of recover() took its id without the transactional id (kafkajs registers
    // that at the first transaction), so nothing had fenced the old one when the group's offset
    // was read: the old commit, landing 1.5 s after the client gave up on it, came after that
    // read, and the batch read again was committed a second time.
    const { createRequire } = await import('node:module');
    const require = createRequire(import.meta.resolve('kafkajs'));
    type BrokerProto = { metadata(...a: unknown[]): Promise<unknown>; endTxn(args: { transactionResult: boolean }): Promise<unknown> };
    const Broker = require('./src/broker/index.js') as { prototype: BrokerProto };
    const { KafkaJSRequestTimeoutError } = require('./src/errors.js') as { KafkaJSRequestTimeoutError: new (m: string) => Error };
    const input = unique('proc-late-in');
    const output = unique('proc-late-out');
    await createTopics(kafka, input, output);
    // A connection of its own for the late EndTxn: recover() closes the old producer's.
    const spare = kafka.admin();
    let spareBroker: unknown;
    const realMetadata = Broker.prototype.metadata;
    Broker.prototype.metadata = async function (this: unknown, ...a: unknown[]) {
      spareBroker ??= this;
      return realMetadata.apply(this, a);
    };
    await spare.connect();
    await spare.fetchTopicMetadata({ topics: [input] });
    Broker.prototype.metadata = realMetadata;
    const realEndTxn = Broker.prototype.endTxn;
    let failNext = false;
    let late: Promise<unknown> | undefined;
    Broker.prototype.endTxn = async function (this: unknown, args: { transactionResult: boolean }) {
      if (!(args.transactionResult && failNext)) return realEndTxn.call(this, args);
      failNext = false;
      late = new Promise((r) => setTimeout(r, 1_500)).then(() => realEndTxn.call(spareBroker, args)).catch(() => undefined);
      throw new KafkaJSRequestTimeoutError('Request EndTxn timed out (injected: the broker answers late)');
    };
    let calls = 0;
    const processor = copyLoop(kafka, 'proc-late', input, output, { committed: 0 }, {
      // The batch read again takes 2 s, so a commit of it would come after the late one.
      before: async () => {
        if (++calls === 2) await new Promise((r) => setTimeout(r, 2_000));
      },
    });
    try {
      await processor.start();
      failNext = true;
      await produceNumbered(kafka, input, 100);
      await waitFor(() => late !== undefined, { timeoutMs: 60_000, what: 'the injected EndTxn timeout' });
      await late;
      await expectEachOnce(output, config.kafkaBrokers, 100, 60_000);
    } finally {
      Broker.prototype.endTxn = realEndTxn;
      await processor.stop();
      await spare.disconnect();
    }
  });
});

