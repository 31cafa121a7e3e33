import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Admin, Kafka } from 'kafkajs';
import { createRegistry, inputHash } from '@dlog/contracts';
import { createKafka, ensureTopics } from '@dlog/kafka';
import { createDecisionLogger, type DecisionLogger } from '@dlog/sdk';
import { config, ensureTopicsSoon, log, startPrivateKafka, tempDir, unique, waitFor, type PrivateKafka } from './helpers.js';

interface Consumed {
  topic: string;
  partition: number;
  offset: string;
  key: string;
  value: Buffer;
}

/** Reads a topic from the beginning until `until` holds for what arrived. */
async function consume(kafka: Kafka, topics: string[], until: (got: Consumed[]) => boolean, timeoutMs = 60_000): Promise<Consumed[]> {
  const consumer = kafka.consumer({ groupId: unique('g-sdk') });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  const got: Consumed[] = [];
  // A consumer group may deliver a message again after a rebalance; what is in the log is what
  // counts, so each (topic, partition, offset) is kept once.
  const seen = new Set<string>();
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const at = `${topic}/${partition}/${message.offset}`;
      if (seen.has(at)) return;
      seen.add(at);
      got.push({ topic, partition, offset: message.offset, key: message.key?.toString() ?? '', value: message.value ?? Buffer.alloc(0) });
    },
  });
  try {
    await waitFor(() => until(got), { timeoutMs, what: `messages on ${topics.join(', ')}` });
  } finally {
    await consumer.disconnect();
  }
  return got;
}

const model = { name: 'loan-approver', version: '2.4.1', digest: 'sha256:1111' };

// Both Kafka clients the SDK can send with: librdkafka (the default when installed) and kafkajs.
for (const kafkaClient of ['native', 'kafkajs'] as const) {
  describe(`SDK against the real broker and registry (${kafkaClient})`, () => {
    const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-sdk', log });
    const registry = createRegistry(config.schemaRegistryUrl);
    let admin: Admin;
    before(async () => {
      admin = kafka.admin();
      await admin.connect();
    });
    after(async () => {
      await admin.disconnect();
    });

    it('records arrive in the topic, decode with the registered schema and carry every field', async () => {
      const topic = unique('t-sdk-raw');
      const artifactTopic = unique('t-sdk-artifacts');
      await ensureTopics(admin, [
        { name: topic, partitions: 6, doc: 'test', config: {} },
        { name: artifactTopic, partitions: 1, doc: 'test', config: {} },
      ]);
      const logger = createDecisionLogger({
        kafkaClient,
        service: 'loan-api',
        brokers: config.kafkaBrokers,
        registryUrl: config.schemaRegistryUrl,
        topic,
        artifactTopic,
        log,
        endpoint: 'loan-approver',
        decisionType: 'loan_approval',
        tenant: 'bank-a',
        model,
        image: { ref: 'registry.example/inference-loan:2.4.1', digest: 'sha256:2222' },
        config: { ref: 'configs/prod/loan-params:v3', params: { temperature: 0.2, topP: 0.9, maxTokens: 256, thresholds: { approve: 0.7 }, extra: { mode: 'strict' } } },
        preprocessing: { ref: 'registry://preprocessing/loan-features:v7', digest: 'sha256:3333' },
        attributes: { region: 'eu' },
        environment: { libraries: { onnxruntime: '1.20.0' } },
      });
      const input = { income: 52000, applicant: { age: 41, name: 'Jane Doe' } };
      const plainId = logger.record({
        requestId: 'req-plain',
        input,
        output: { decision: 'approved', confidence: 0.87, scores: { approved: 0.87, declined: 0.13 }, tokenLogprobs: [-0.1, -0.2], detail: { reason: 'income' } },
        attributes: { channel: 'web' },
      });
      const trace = logger.trace();
      const stepIds: string[] = [];
      for (let i = 0; i < 5; i++) {
        stepIds.push(
          trace.record({
            requestId: `req-step-${i}`,
            input: { step: i },
            output: { decision: i < 4 ? 'call_tool' : 'answer' },
            toolName: i < 4 ? 'lookup' : null,
            toolArgs: i < 4 ? { account: `acc-${i}` } : undefined,
          }),
        );
      }
      assert.equal((await logger.flush(30_000)).ok, true);
      await waitFor(() => logger.stats().ready.environment, { timeoutMs: 30_000, what: 'the environment snapshot' });
      const stats = await logger.close();
      assert.equal(stats.sent, 6);
      assert.equal(stats.invalid + stats.dropped + stats.failed, 0);
      assert.ok(stats.sendLatencyMs.count >= 1);

      const got = await consume(kafka, [topic, artifactTopic], (g) => g.filter((m) => m.topic === topic).length >= 6 && g.some((m) => m.topic === artifactTopic));
      const events = await Promise.all(
        got.filter((m) => m.topic === topic).map(async (m) => ({ ...m, event: JSON.parse(JSON.stringify(await registry.decode(m.value))) as Record<string, any> })),
      );
      assert.equal(events.length, 6);
      const plain = events.find((e) => e.event.event_id === plainId);
      assert.ok(plain);
      assert.equal(plain.key, 'req-plain');
      assert.equal(plain.value[0], 0, 'Confluent framing');
      assert.deepEqual(plain.event, {
        event_id: plainId,
        request_id: 'req-plain',
        ts: plain.event.ts,
        endpoint: 'loan-approver',
        decision_type: 'loan_approval',
        tenant: 'bank-a',
        model,
        image: { ref: 'registry.example/inference-loan:2.4.1', digest: 'sha256:2222' },
        config: { ref: 'configs/prod/loan-params:v3', params: { temperature: 0.2, top_p: 0.9, max_tokens: 256, thresholds: { approve: 0.7 }, extra: { mode: 'strict' } } },
        preprocessing: { ref: 'registry://preprocessing/loan-features:v7', digest: 'sha256:3333' },
        environment_digest: logger.environment.digest,
        input_json: '{"applicant":{"age":41,"name":"Jane Doe"},"income":52000}',
        input_hash: inputHash(input),
        output: { decision: 'approved', confidence: 0.87, scores: { approved: 0.87, declined: 0.13 }, token_logprobs: [-0.1, -0.2], output_json: '{"reason":"income"}' },
        trajectory: null,
        producer: { service: 'loan-api', sdk: '@dlog/sdk@0.1.0', host: plain.event.producer.host },
        attributes: { region: 'eu', channel: 'web' },
      });
      assert.ok(Math.abs(plain.event.ts - Date.now()) < 120_000);

      // A trajectory: one key, so one partition, steps chained by parent_event_id.
      const steps = events.filter((e) => e.event.trajectory !== null).sort((a, b) => a.event.trajectory.step - b.event.trajectory.step);
      assert.deepEqual(steps.map((s) => s.event.event_id), stepIds);
      assert.equal(new Set(steps.map((s) => s.partition)).size, 1);
      assert.ok(steps.every((s) => s.key === trace.traceId));
      steps.forEach((s, i) => {
        assert.deepEqual(s.event.trajectory, {
          trace_id: trace.traceId,
          step: i + 1,
          parent_event_id: i === 0 ? null : stepIds[i - 1],
          tool_name: i < 4 ? 'lookup' : null,
          tool_args_hash: i < 4 ? inputHash({ account: `acc-${i}` }) : null,
        });
      });

      // The environment snapshot, registered once as an artifact keyed by its ref.
      const artifacts = got.filter((m) => m.topic === artifactTopic);
      assert.equal(artifacts.length, 1);
      assert.equal(artifacts[0]!.key, logger.environment.ref);
      const artifact = (await registry.decode(artifacts[0]!.value)) as Record<string, any>;
      assert.equal(artifact.kind, 'environment');
      assert.equal(artifact.digest, logger.environment.digest);
      assert.equal(artifact.metadata['libraries.onnxruntime'], '1.20.0');
      assert.equal(artifact.metadata.snapshot_json, logger.environment.canonical);
    });

    describe('broker stopped mid-stream, spill policy', () => {
      let pk: PrivateKafka | undefined;
      let logger: DecisionLogger | undefined;
      after(async () => {
        await logger?.close(1_000);
        await pk?.stop();
      });

      it('after the restart every event arrives, in order per trajectory, none twice', async () => {
        pk = await startPrivateKafka();
        const pkafka = createKafka({ brokers: pk.brokers, clientId: 'test-sdk-private', log });
        const topic = unique('t-sdk-outage');
        const artifactTopic = unique('t-sdk-outage-art');
        await ensureTopicsSoon(pkafka, [
          { name: topic, partitions: 3, doc: 'test', config: {} },
          { name: artifactTopic, partitions: 1, doc: 'test', config: {} },
        ]);

        const errors: string[] = [];
        logger = createDecisionLogger({
          kafkaClient,
          service: 'agent-api',
          brokers: pk.brokers,
          registryUrl: config.schemaRegistryUrl,
          topic,
          artifactTopic,
          log,
          model,
          requestTimeoutMs: 3_000,
          buffer: { policy: 'spill', spillDir: tempDir('sdk-spill'), maxEvents: 200 },
          batch: { maxEvents: 100 },
          onError: (e) => void errors.push(e.kind),
        });
        const traces = Array.from({ length: 8 }, () => logger!.trace());
        let recorded = 0;
        const recordRound = () => {
          for (const t of traces) {
            t.record({ input: { n: recorded }, output: { decision: 'step' }, toolName: 'tool', toolArgs: { n: recorded } });
            recorded++;
          }
        };
        // Record steadily while the broker goes away and comes back, as a live service would.
        let recording = true;
        const recorder = (async () => {
          while (recording) {
            recordRound();
            // ~400 events/s: the 200-event buffer spills within half a second of the outage, and an
            // outage that lasts long on a loaded machine leaves a backlog that drains in time.
            await new Promise((r) => setTimeout(r, 20));
          }
        })();

        await waitFor(() => logger!.stats().sent >= 200, { timeoutMs: 30_000, what: 'events flowing before the outage' });
        await pk.stop();
        await waitFor(() => logger!.stats().spilled > 0 && logger!.stats().sendErrors > 0, { timeoutMs: 60_000, what: 'spilling during the outage' });
        const duringOutage = recorded;
        await pk.start();
        await waitFor(() => logger!.stats().sent > duringOutage, { timeoutMs: 90_000, what: 'sending to resume' });
        recording = false;
        await recorder;
        const flushed = await logger.flush(60_000);
        const stats = await logger.close();
        logger = undefined;
        assert.equal(flushed.ok, true, JSON.stringify(stats));
        assert.equal(stats.queued, recorded, JSON.stringify(stats));
        assert.equal(stats.sent, recorded, JSON.stringify(stats));
        assert.equal(stats.dropped + stats.invalid + stats.failed, 0);
        assert.ok(stats.spilled > 0);
        assert.ok(errors.includes('send'));

        const got = await consume(pkafka, [topic], (g) => g.length >= recorded, 90_000);
        const decoded = await Promise.all(got.map(async (m) => ({ ...m, event: (await registry.decode(m.value)) as Record<string, any> })));
        if (decoded.length !== recorded) {
          const byId = new Map<string, string[]>();
          for (const d of decoded) byId.set(d.event.event_id, [...(byId.get(d.event.event_id) ?? []), `${d.partition}@${d.offset}`]);
          const dups = [...byId.values()].filter((v) => v.length > 1);
          console.error('DIAG duplicates', dups.length, JSON.stringify(dups.slice(0, 3)), JSON.stringify(dups.slice(-2)));
        }
        assert.equal(decoded.length, recorded, 'every event arrived');
        assert.equal(new Set(decoded.map((d) => d.event.event_id)).size, recorded, 'none twice');
        for (const t of traces) {
          // Within a partition the consumer sees the log order: steps must come 1, 2, 3 ...
          const mine = decoded.filter((d) => d.key === t.traceId);
          assert.equal(new Set(mine.map((d) => d.partition)).size, 1);
          assert.deepEqual(mine.map((d) => d.event.trajectory.step), Array.from({ length: mine.length }, (_, i) => i + 1));
        }
      });
    });
  });
}

describe('SDK transport: reading the topic back before a resend', () => {
  it('finds exactly the events already in the topic since a time, and nothing else', async () => {
    const { kafkaTransport } = await import('../packages/sdk/src/kafka-transport.js');
    const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-sdk-readback', log });
    const admin = kafka.admin();
    await admin.connect();
    const topic = unique('t-sdk-readback');
    await ensureTopics(admin, [{ name: topic, partitions: 3, doc: 'test', config: {} }]);
    await admin.disconnect();
    const transport = kafkaTransport({ brokers: config.kafkaBrokers, registryUrl: config.schemaRegistryUrl, clientId: 'test-sdk-readback', log, compression: 'none', requestTimeoutMs: 5_000 });
    // Framed records whose first Avro field is the event id (a zigzag length, then the bytes).
    const framed = (id: string) => {
      const body = Buffer.from(id);
      return Buffer.concat([Buffer.from([0, 0, 0, 0, 1, body.length * 2]), body, Buffer.from([0])]);
    };
    try {
      await transport.send(topic, [0, 1, 2].map((i) => ({ key: `old-${i}`, value: framed(`old-${i}`) })));
      await new Promise((r) => setTimeout(r, 1_500));
      const since = Date.now();
      const fresh = Array.from({ length: 30 }, (_, i) => `ev-${i}`);
      await transport.send(topic, fresh.slice(0, 20).map((id) => ({ key: id, value: framed(id) })));
      const found = await transport.written!(topic, since, new Set([...fresh, 'old-0', 'never-sent']));
      assert.deepEqual([...found].sort(), fresh.slice(0, 20).sort(), 'the 20 sent since then, not the older ones or the unsent');
    } finally {
      await transport.disconnect();
    }
  });
});

describe('SDK kafkajs transport after disconnect (what close() does)', () => {
  it('refuses to send instead of opening a new producer, so nothing reaches the topic after close()', async () => {
    // Before, send() after disconnect() connected a new producer and wrote: a logger's sender
    // still busy after close() returned wrote events a successor had taken over.
    const { kafkaTransport } = await import('../packages/sdk/src/kafka-transport.js');
    const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-sdk-closed', log });
    const admin = kafka.admin();
    await admin.connect();
    const topic = unique('t-sdk-closed');
    await ensureTopics(admin, [{ name: topic, partitions: 1, doc: 'test', config: {} }]);
    const transport = kafkaTransport({ brokers: config.kafkaBrokers, registryUrl: config.schemaRegistryUrl, clientId: 'test-sdk-closed', log, compression: 'none', requestTimeoutMs: 5_000 });
    try {
      await transport.send(topic, [{ key: 'a', value: Buffer.from('before') }]);
      await transport.disconnect();
      await assert.rejects(transport.send(topic, [{ key: 'a', value: Buffer.from('after') }]), /closed/);
      await assert.rejects(transport.connect(), /closed/);
      await new Promise((r) => setTimeout(r, 500));
      const [offsets] = await admin.fetchTopicOffsets(topic);
      assert.equal(offsets!.high, '1', 'only the message sent before disconnect()');
    } finally {
      await transport.disconnect().catch(() => undefined);
      await admin.disconnect();
    }
  });
});
