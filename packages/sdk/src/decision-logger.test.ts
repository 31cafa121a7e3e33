import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import avro from 'avsc';
import { inputHash, loadSchema } from '@dlog/contracts';
import { createLogger, waitFor } from '@dlog/runtime';
import { createDecisionLogger, DecisionLoggerError, placeholderSchemaId, type DecisionLoggerOptions } from './decision-logger.js';
import { SessionLostError } from './native-transport.js';
import { SpillFile } from './spill-file.js';
import type { Decision } from './decision.js';
import type { OutMessage, Transport } from './transport.js';

const eventType = avro.Type.forSchema(loadSchema('inference-event'));

/** In-memory transport: records what was sent, and can be "down" for a while. */
function fakeTransport() {
  const sent: { topic: string; key: string; value: Buffer }[] = [];
  const state = { down: false, sendCalls: 0 };
  const transport: Transport = {
    async connect() {},
    async register(subject) {
      return subject.startsWith('registry') || subject.includes('artifact') ? 2 : 1;
    },
    async send(topic: string, messages: OutMessage[]) {
      state.sendCalls++;
      await new Promise((r) => setTimeout(r, 1));
      if (state.down) throw Object.assign(new Error('broker down'), { retriable: true });
      for (const m of messages) sent.push({ topic, key: m.key, value: Buffer.from(m.value) });
    },
    async reset() {},
    async disconnect() {},
  };
  const events = (topic = 'inference.raw') =>
    sent.filter((s) => s.topic === topic).map((s) => ({ key: s.key, schemaId: s.value.readInt32BE(1), event: eventType.fromBuffer(s.value.subarray(5)) as Record<string, any> }));
  return { transport, sent, state, events };
}

const base = (t: Transport, extra: Partial<DecisionLoggerOptions> = {}): DecisionLoggerOptions => ({
  service: 'loan-api',
  transport: t,
  model: { name: 'loan-approver', version: '2.4.1', digest: 'sha256:abc' },
  image: { ref: 'registry.example/inference-loan:2.4.1', digest: 'sha256:def' },
  config: { ref: 'configs/prod/loan-params:v3', params: { temperature: 0.1, thresholds: { approve: 0.7 } } },
  preprocessing: { ref: 'registry://preprocessing/loan-features:v7' },
  endpoint: 'loan-approver',
  decisionType: 'loan_approval',
  log: createLogger({ name: 'test', level: process.env.LOG_LEVEL ?? 'error' }),
  ...extra,
});

describe('createDecisionLogger (no Kafka)', () => {
  it('stamps ids, hashes and references in the background and sends framed Avro', async () => {
    const fake = fakeTransport();
    const logger = createDecisionLogger(base(fake.transport));
    const input = { income: 52000, applicant: { age: 41 } };
    const id = logger.record({ requestId: 'req-1', input, output: { decision: 'approved', confidence: 0.87, scores: { approved: 0.87 } } });
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.deepEqual(await logger.flush(5_000), { ok: true, unsent: 0 });
    const [e] = fake.events();
    assert.ok(e);
    assert.equal(e.schemaId, 1);
    assert.equal(e.key, 'req-1');
    assert.equal(e.event.event_id, id);
    assert.equal(e.event.input_hash, inputHash(input));
    assert.equal(e.event.input_json, '{"applicant":{"age":41},"income":52000}');
    assert.equal(e.event.environment_digest, logger.environment.digest);
    assert.deepEqual({ ...e.event.model }, { name: 'loan-approver', version: '2.4.1', digest: 'sha256:abc' });
    assert.equal(e.event.config.params.temperature, 0.1);
    assert.equal(e.event.producer.sdk, '@dlog/sdk@0.1.0');
    await waitFor(() => logger.stats().ready.environment, { timeoutMs: 5_000, what: 'the environment snapshot' });
    const artifacts = fake.sent.filter((s) => s.topic === 'registry.artifacts');
    assert.equal(artifacts.length, 1);
    assert.equal(artifacts[0]!.key, logger.environment.ref);
    const stats = await logger.close();
    assert.equal(stats.sent, 1);
    assert.equal(stats.queued, 1);
  });

  it('trace() never throws at the caller, whatever it is given', async () => {
    const fake = fakeTransport();
    const logger = createDecisionLogger(base(fake.transport));
    const odd = [null, 42, { get traceId(): string { throw new Error('boom'); } }, { traceId: 7 }];
    for (const o of odd) assert.doesNotThrow(() => assert.match(logger.trace(o as never).traceId, /^[0-9a-f-]{36}$/));
    assert.equal(logger.trace({ traceId: 't-1' }).traceId, 't-1');
    await logger.close();
  });

  it('without onError, refused and dropped decisions are still logged, a line per kind at most every 10 s with the count', async () => {
    const fake = fakeTransport();
    const lines: Record<string, unknown>[] = [];
    const destination = { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) };
    const logger = createDecisionLogger(base(fake.transport, { log: createLogger({ name: 'host', level: 'warn', destination }) }));
    for (let i = 0; i < 5; i++) logger.record({ input: { n: 1n }, output: { decision: 'x' } } as never);
    await logger.close();
    const notDelivered = lines.filter((l) => l.msg === 'decisions not delivered (set onError to handle each report; this line repeats at most every 10 s)');
    assert.equal(notDelivered.length, 1, JSON.stringify(lines));
    assert.equal(notDelivered[0]!.kind, 'invalid');
    assert.match(String(notDelivered[0]!.example), /BigInt/);
    const atClose = lines.filter((l) => l.msg === 'decisions not delivered since the last such line');
    assert.deepEqual(atClose.map((l) => [l.kind, l.decisions]), [['invalid', 4]], 'close() says what the limit held back');
  });

  it('counts and reports invalid calls, never throwing at the caller', async () => {
    const fake = fakeTransport();
    const errors: DecisionLoggerError[] = [];
    const logger = createDecisionLogger(base(fake.transport, { model: undefined, maxEventBytes: 4096, onError: (e) => void errors.push(e) }));
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const model = 'registry://models/m:1';
    const bad: unknown[] = [
      { input: { a: 1 }, output: { decision: 'x' } }, // no model anywhere
      { model, input: { n: 10n }, output: { decision: 'x' } },
      { model, input: cyclic, output: { decision: 'x' } },
      { model, input: { blob: 'x'.repeat(10_000) }, output: { decision: 'x' } },
      { model, input: {}, output: { decision: 1 } },
      { model, input: {}, output: { decision: 'x', confidence: 'high' } },
      { model: { name: 'fraud:eu', version: '3' }, input: {}, output: { decision: 'x' } },
      null,
      undefined,
      42,
    ];
    for (const d of bad) assert.doesNotThrow(() => logger.record(d as never));
    logger.record({ model, input: { ok: true }, output: { decision: 'x' } });
    await logger.flush(5_000);
    const stats = await logger.close();
    assert.equal(stats.invalid, bad.length);
    assert.equal(stats.sent, 1);
    const reasons = errors.filter((e) => e.kind === 'invalid').map((e) => e.message).join('\n');
    for (const r of [/missing model reference/, /BigInt/, /Cyclic/, /oversized/, /decision must be a string/, /confidence/, /cannot contain ':'/]) assert.match(reasons, r);
    // A callback that throws does not break anything either.
    const noisy = createDecisionLogger(base(fake.transport, { onError: () => { throw new Error('host bug'); } }));
    assert.doesNotThrow(() => noisy.record({ input: { n: 1n }, output: { decision: 'x' } }));
    await noisy.close();
  });

  it('gives trajectory steps one key, a step number, the parent and a tool-args hash', async () => {
    const fake = fakeTransport();
    const logger = createDecisionLogger(base(fake.transport));
    const trace = logger.trace();
    const a = trace.record({ input: { q: 'weather?' }, output: { decision: 'call_tool' }, toolName: 'search', toolArgs: { q: 'weather', n: 3 } });
    const b = trace.record({ input: { r: 'sunny' }, output: { decision: 'answer' } });
    await logger.close();
    const events = fake.events();
    assert.deepEqual(events.map((e) => e.key), [trace.traceId, trace.traceId]);
    assert.deepEqual(events.map((e) => e.event.trajectory.step), [1, 2]);
    assert.equal(events[0]!.event.trajectory.parent_event_id, null);
    assert.equal(events[1]!.event.trajectory.parent_event_id, a);
    assert.equal(events[1]!.event.event_id, b);
    assert.equal(events[0]!.event.trajectory.tool_name, 'search');
    assert.equal(events[0]!.event.trajectory.tool_args_hash, inputHash({ n: 3, q: 'weather' }));
  });

  it('drop policy: a full buffer drops the newest events and counts them', async () => {
    const fake = fakeTransport();
    fake.state.down = true;
    const drops: number[] = [];
    const logger = createDecisionLogger(base(fake.transport, { buffer: { maxEvents: 100, policy: 'drop' }, onError: (e) => e.kind === 'dropped' && drops.push(e.count) }));
    for (let i = 0; i < 300; i++) logger.record({ input: { i }, output: { decision: 'x' } });
    await new Promise((r) => setTimeout(r, 20));
    fake.state.down = false;
    assert.equal((await logger.flush(10_000)).ok, true);
    const stats = await logger.close();
    assert.equal(stats.dropped, 200);
    assert.equal(stats.sent, 100);
    assert.equal(drops.reduce((a, b) => a + b, 0), 200);
    assert.deepEqual(fake.events().map((e) => JSON.parse(e.event.input_json).i), Array.from({ length: 100 }, (_, i) => i));
  });

  it('spill policy: the spill file stops at buffer.maxSpillBytes; the newest events past it are dropped, counted and reported', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    fake.state.down = true;
    const errors: DecisionLoggerError[] = [];
    const maxSpillBytes = 1 << 20;
    const logger = createDecisionLogger(
      base(fake.transport, { buffer: { maxEvents: 10, policy: 'spill', spillDir: dir, maxSpillBytes }, onError: (e) => void errors.push(e) }),
    );
    const note = 'x'.repeat(10_000);
    for (let i = 0; i < 300; i++) {
      logger.record({ requestId: `big${i}`, input: { i, note }, output: { decision: 'x' } });
      if (i % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => (logger.stats().dropped > 0 ? true : undefined), { timeoutMs: 5_000, what: 'drops past the spill bound' });
    const stats = logger.stats();
    assert.ok(stats.buffered.spillBytes <= maxSpillBytes, `${stats.buffered.spillBytes} bytes spilled`);
    assert.ok(stats.spilled > 50 && stats.dropped > 100, JSON.stringify(stats));
    await new Promise((r) => setImmediate(r));
    assert.ok(errors.some((e) => e.kind === 'dropped' && /maxSpillBytes/.test(e.message)), errors.map((e) => e.message).join('\n'));
    await logger.close(1_000);
  });

  it('spill policy: an outage loses nothing and keeps the order, and close keeps what is left for the next process', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    const logger = createDecisionLogger(base(fake.transport, { buffer: { maxEvents: 50, policy: 'spill', spillDir: dir }, batch: { maxEvents: 20 } }));
    let n = 0;
    const burst = async (count: number) => {
      for (let i = 0; i < count; i++) logger.record({ requestId: `r${n}`, input: { n: n++ }, output: { decision: 'x' } });
      await new Promise((r) => setImmediate(r));
    };
    await burst(30);
    fake.state.down = true;
    for (let k = 0; k < 10; k++) await burst(40);
    await waitFor(() => logger.stats().spilled > 0, { timeoutMs: 5_000, what: 'spilling' });
    fake.state.down = false;
    for (let k = 0; k < 5; k++) await burst(40);
    assert.equal((await logger.flush(20_000)).ok, true);
    const stats = await logger.close();
    const got = fake.events().map((e) => JSON.parse(e.event.input_json).n as number);
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => i), 'every event, once, in order');
    assert.equal(stats.sent, n);
    assert.ok(stats.spilled > 0);
    assert.equal(stats.buffered.spillBytes, 0);

    // Broker gone at close: what is left stays in the spill file and the next process sends it first.
    const fake2 = fakeTransport();
    fake2.state.down = true;
    const second = createDecisionLogger(base(fake2.transport, { buffer: { maxEvents: 5, policy: 'spill', spillDir: dir } }));
    await waitFor(() => second.stats().ready.contract, { timeoutMs: 5_000, what: 'the contract' });
    for (let i = 0; i < 12; i++) second.record({ input: { m: i }, output: { decision: 'x' } });
    const closed = await second.close(300);
    assert.equal(closed.sent, 0);
    assert.equal(closed.failed, 0);
    const fake3 = fakeTransport();
    const third = createDecisionLogger(base(fake3.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    third.record({ input: { m: 12 }, output: { decision: 'x' } });
    assert.equal((await third.flush(5_000)).ok, true);
    await third.close();
    assert.deepEqual(fake3.events().map((e) => JSON.parse(e.event.input_json).m), Array.from({ length: 13 }, (_, i) => i));
  });

  for (const canCheck of [true, false]) {
    it(`a batch written by a producer session that then lost its state is ${canCheck ? 'not written again (read back first)' : 'written again when the topic cannot be read back'}`, async () => {
      const fake = fakeTransport();
      let failOnce = true;
      let failedBatch = 0;
      const send = fake.transport.send.bind(fake.transport);
      // The broker wrote the batch, then the session's state was lost: the answer is an error.
      fake.transport.send = async (topic, messages) => {
        await send(topic, messages);
        if (topic === 'inference.raw' && failOnce) {
          failOnce = false;
          failedBatch = messages.length;
          throw Object.assign(new Error('The broker received an out of order sequence number'), { type: 'OUT_OF_ORDER_SEQUENCE_NUMBER', retriable: true });
        }
      };
      let checks = 0;
      if (canCheck) {
        fake.transport.written = async (topic, _since, ids) => {
          checks++;
          return new Set(fake.events(topic).map((e) => String(e.event.event_id)).filter((id) => ids.has(id)));
        };
      } else {
        fake.transport.written = async () => {
          checks++;
          throw new Error('TOPIC_AUTHORIZATION_FAILED');
        };
      }
      const logger = createDecisionLogger(base(fake.transport));
      for (let i = 0; i < 50; i++) logger.record({ requestId: `req-${i}`, input: { i }, output: { decision: 'ok' } });
      assert.deepEqual(await logger.flush(30_000), { ok: true, unsent: 0 });
      const stats = await logger.close();
      const ids = fake.events().map((e) => String(e.event.event_id));
      assert.equal(stats.sent, 50);
      if (canCheck) {
        assert.equal(checks, 1);
        assert.equal(ids.length, 50, 'each event once');
        assert.equal(new Set(ids).size, 50);
      } else {
        // Three failed checks, then the batch goes again whole: the duplicates the check avoids.
        // (The first batch is what the first turns of encoding made ready: all 50, or fewer on a slow machine.)
        assert.equal(checks, 3);
        assert.ok(failedBatch > 0);
        assert.equal(ids.length, 50 + failedBatch);
        assert.equal(new Set(ids).size, 50);
      }
    });
  }

  it('a fatal librdkafka producer error (SessionLostError) starts a new session and reads back before resending', async () => {
    const fake = fakeTransport();
    let failOnce = true;
    let resets = 0;
    const send = fake.transport.send.bind(fake.transport);
    // Part of the batch landed before the producer failed fatally.
    fake.transport.send = async (topic, messages) => {
      if (topic === 'inference.raw' && failOnce) {
        failOnce = false;
        await send(topic, messages.slice(0, 20));
        throw new SessionLostError('delivery to inference.raw failed: fatal idempotent producer error');
      }
      await send(topic, messages);
    };
    fake.transport.reset = async () => void resets++;
    fake.transport.written = async (topic, _since, ids) => new Set(fake.events(topic).map((e) => String(e.event.event_id)).filter((id) => ids.has(id)));
    const logger = createDecisionLogger(base(fake.transport));
    for (let i = 0; i < 50; i++) logger.record({ requestId: `req-${i}`, input: { i }, output: { decision: 'ok' } });
    assert.deepEqual(await logger.flush(30_000), { ok: true, unsent: 0 });
    await logger.close();
    const ids = fake.events().map((e) => String(e.event.event_id));
    assert.equal(resets, 1);
    assert.equal(ids.length, 50, 'each event once');
    assert.equal(new Set(ids).size, 50);
  });

  it('close keeps for the next process only what did not land, when sends gave up on messages that landed later', async () => {
    // The first batch is what the first 4 ms of encoding made ready, and every send here fails, so
    // it is the only batch: cold (this test alone) that was fewer than the 20 the test needs.
    const warm = createDecisionLogger(base(fakeTransport().transport));
    for (let i = 0; i < 50; i++) warm.record({ requestId: `warm-${i}`, input: { i }, output: { decision: 'ok' } });
    await warm.flush(5_000);
    await warm.close();
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    // Every send gives up (as the native transport does after requestTimeoutMs), but the broker
    // took the first messages of the batch (12, or all but one of a batch cut short by a slow
    // first turn): the transport learned that from late delivery reports.
    const landed = new Set<Buffer>();
    const offered = new Set<Buffer>();
    let firstBatch = 0;
    fake.transport.send = async (topic, messages) => {
      if (topic === 'inference.raw') {
        if (firstBatch === 0) firstBatch = messages.length;
        const take = Math.min(12, firstBatch - 1);
        for (const m of messages) {
          if (!offered.has(m.value) && offered.size < take) landed.add(m.value);
          offered.add(m.value);
        }
      }
      await new Promise((r) => setTimeout(r, 1));
      throw new Error('8 of 20 message(s) not acknowledged within 50 ms; they stay in flight');
    };
    fake.transport.delivered = (value) => landed.has(value);
    const logger = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir }, batch: { maxEvents: 20 } }));
    const ids: string[] = [];
    let stats;
    try {
      for (let i = 0; i < 50; i++) ids.push(logger.record({ requestId: `req-${i}`, input: { i }, output: { decision: 'ok' } }));
      await waitFor(() => firstBatch > 0, { timeoutMs: 10_000, what: 'the first batch offered' });
    } finally {
      stats = await logger.close(500);
    }
    assert.ok(firstBatch >= 2, `a first batch of ${firstBatch} leaves nothing both landed and not`);
    assert.equal(landed.size, Math.min(12, firstBatch - 1));
    assert.equal(stats.sent, landed.size, JSON.stringify(stats));
    const fake2 = fakeTransport();
    const next = createDecisionLogger(base(fake2.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    assert.deepEqual(await next.flush(10_000), { ok: true, unsent: 0 });
    await next.close();
    const resent = fake2.events().map((e) => String(e.event.event_id));
    const landedIds = new Set([...landed].map((v) => String((eventType.fromBuffer(v.subarray(5)) as { event_id: string }).event_id)));
    assert.equal(landedIds.size, landed.size);
    assert.equal(resent.filter((id) => landedIds.has(id)).length, 0, 'nothing that landed is sent again');
    assert.equal(resent.length, 50 - landed.size);
    assert.deepEqual(new Set([...resent, ...landedIds]), new Set(ids), 'nothing lost');
  });

  it('refuses bad options at creation, naming the field', () => {
    const fake = fakeTransport();
    assert.throws(() => createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill' } })), /spillDir/);
    assert.throws(() => createDecisionLogger({ service: 'x' }), /brokers/);
    assert.throws(() => createDecisionLogger({ ...base(fake.transport), bogus: 1 } as never), /bogus|Unrecognized/);
    assert.throws(() => createDecisionLogger(base(fake.transport, { kafkaClient: 'rdkafka' as never })), /kafkaClient/);
  });
});

/** Scripted failures for the fake transport: one entry per send to inference.raw. */
type Outcome = 'ok' | 'fail' | 'writeHalfThenLoseSession' | 'writeThenHang';

function scriptedTransport(store: { key: string; value: Buffer }[] = []) {
  const script: Outcome[] = [];
  const sizes: number[] = [];
  let written = 0;
  const idOf = (v: Buffer) => String((eventType.fromBuffer(v.subarray(5)) as { event_id: string }).event_id);
  const transport: Transport = {
    async connect() {},
    async register(subject) {
      return subject.includes('artifact') ? 2 : 1;
    },
    async send(topic: string, messages: OutMessage[]) {
      if (topic !== 'inference.raw') return;
      sizes.push(messages.length);
      const what = script.shift() ?? 'ok';
      await new Promise((r) => setImmediate(r));
      if (what === 'fail') throw Object.assign(new Error('Request timed out'), { retriable: true });
      if (what === 'writeHalfThenLoseSession') {
        for (const m of messages.slice(0, Math.ceil(messages.length / 2))) store.push({ key: m.key, value: Buffer.from(m.value) });
        throw Object.assign(new Error('lost'), { type: 'UNKNOWN_PRODUCER_ID' });
      }
      for (const m of messages) store.push({ key: m.key, value: Buffer.from(m.value) });
      if (what === 'writeThenHang') await new Promise(() => undefined); // the acknowledgement never comes
    },
    async written(_topic, _since, ids) {
      written++;
      return new Set(store.map((s) => idOf(s.value)).filter((id) => ids.has(id)));
    },
    async reset() {},
    async disconnect() {},
  };
  const ids = () => store.map((s) => idOf(s.value));
  return { transport, script, sizes, ids, writtenCalls: () => written };
}

const decision = (i: number) => ({ requestId: `r${i}`, input: { i }, output: { decision: 'ok' } });

describe('createDecisionLogger: no duplicates, no lost events, never throwing', () => {
  it('trace().record() never throws: a step that cannot be read is counted invalid and does not use up a step number', async () => {
    const fake = fakeTransport();
    const errors: DecisionLoggerError[] = [];
    const logger = createDecisionLogger(base(fake.transport, { onError: (e) => void errors.push(e) }));
    const trace = logger.trace();
    const throwing = {
      input: 1,
      output: { decision: 'a' },
      get toolArgs(): unknown {
        throw new Error('host getter failed for alice@example.com');
      },
    };
    for (const step of [null, undefined, throwing]) assert.doesNotThrow(() => trace.record(step as never));
    trace.record({ input: { q: 1 }, output: { decision: 'answer' } });
    const stats = await logger.close();
    assert.equal(stats.invalid, 3);
    assert.equal(stats.sent, 1);
    assert.equal(fake.events()[0]!.event.trajectory.step, 1);
    assert.equal(errors.filter((e) => e.kind === 'invalid').length, 3);
    assert.ok(errors.every((e) => !e.message.includes('alice')));
  });

  it('reports why a decision was refused without the host keys or text (e-mail keys, a toJSON message, values)', async () => {
    const fake = fakeTransport();
    const errors: string[] = [];
    const logger = createDecisionLogger(base(fake.transport, { onError: (e) => void errors.push(e.message) }));
    logger.record({ input: { contacts: { 'alice.smith@example.com': Number.NaN } }, output: { decision: 'a' } });
    logger.record({ input: { toJSON() { throw new Error('SSN 123-45-6789 invalid'); } }, output: { decision: 'a' } });
    logger.record({ input: 1, output: { decision: 'a', detail: { 'bob@example.com': 1n } } });
    logger.record({ input: 1, output: { decision: 'a', scores: [0.25, 0.75] as never } });
    logger.trace().record({ input: 1, output: { decision: 'a' }, toolArgs: { 'carol@example.com': Infinity } });
    const stats = await logger.close();
    assert.equal(stats.invalid, 5);
    const text = errors.join('\n');
    for (const secret of ['alice', '123-45', 'bob@', '0.25', 'carol']) assert.ok(!text.includes(secret), `no ${secret} in: ${text}`);
    assert.match(text, /NaN is not representable in JSON \(at depth 2\)/);
    assert.match(text, /Error thrown while converting it/);
    assert.match(text, /output\.detail is not serialisable: BigInt/);
    assert.match(text, /trajectory\.toolArgs is not serialisable: Infinity is not representable in JSON \(at depth 1\)/);
  });

  it('close() keeps events of unknown outcome flagged; the next process reads the topic back before sending them, all within the close bound', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const store: { key: string; value: Buffer }[] = [];
    const a = scriptedTransport(store);
    a.script.push('writeThenHang');
    const first = createDecisionLogger(base(a.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    for (let i = 0; i < 5; i++) first.record(decision(i));
    await waitFor(() => store.length === 5, { timeoutMs: 5_000, what: 'the batch written' });
    const t0 = Date.now();
    const s1 = await first.close(200);
    // Generous: the bound is 200 ms, and the old close waited 5 s more for a hung send.
    assert.ok(Date.now() - t0 < 3_000, `close(200) took ${Date.now() - t0} ms`);
    assert.deepEqual([s1.sent, s1.spilled], [0, 5]);

    const b = scriptedTransport(store);
    const second = createDecisionLogger(base(b.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    assert.deepEqual(await second.flush(5_000), { ok: true, unsent: 0 });
    await second.close();
    assert.equal(b.writtenCalls(), 1);
    assert.equal(b.ids().length, 5, 'each event once');
    assert.equal(new Set(b.ids()).size, 5);
  });

  it('flags spilled events in the file before sending them, so a process killed meanwhile leaves them to be checked, not resent blind', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const store: { key: string; value: Buffer }[] = [];
    const a = scriptedTransport(store);
    // The events in memory go first and are acknowledged; those read back from the file hang.
    a.script.push('ok', 'writeThenHang');
    const logger = createDecisionLogger(base(a.transport, { buffer: { maxEvents: 5, policy: 'spill', spillDir: dir } }));
    for (let i = 0; i < 20; i++) logger.record(decision(i));
    await waitFor(() => store.length === 20, { timeoutMs: 5_000, what: 'every event handed to the broker' });
    assert.ok(logger.stats().spilled > 0);
    // As a process killed now would leave the file: every unacknowledged frame flagged.
    const file = readFileSync(path.join(dir, 'spill.log'));
    const pos = path.join(dir, 'spill.pos');
    const acked = existsSync(pos) ? Number(readFileSync(pos, 'utf8')) : 0;
    const flags: number[] = [];
    for (let off = acked; off + 24 <= file.length; off += 24 + file.readUInt32LE(off + 4) + file.readUInt32LE(off + 8)) flags.push(file[off + 2]! & 1);
    assert.ok(flags.length > 0 && flags.every((f) => f === 1), `unknown-outcome flags of the frames in flight: ${flags.join('')}`);
    await logger.close(200);
  });

  it('keeps checking before resending until a send succeeds: a failed send of the checked rest does not lead to a resend of the whole batch', async () => {
    const fake = scriptedTransport();
    fake.script.push('writeHalfThenLoseSession', 'fail');
    const logger = createDecisionLogger(base(fake.transport));
    for (let i = 0; i < 10; i++) logger.record(decision(i));
    assert.deepEqual(await logger.flush(10_000), { ok: true, unsent: 0 });
    const stats = await logger.close();
    assert.equal(stats.sent, 10);
    assert.equal(fake.ids().length, 10, 'each event once');
    assert.equal(new Set(fake.ids()).size, 10);
    assert.deepEqual(fake.sizes, [10, 5, 5]);
  });

  it('a retry resends the same batch: events recorded during the backoff wait for the next one', async () => {
    const fake = scriptedTransport();
    fake.script.push('fail');
    let n = 0;
    let logger: ReturnType<typeof createDecisionLogger> | undefined;
    const onError = (e: DecisionLoggerError) => {
      // Called as the backoff starts: these arrive while the failed batch waits to be retried.
      if (e.kind === 'send') for (let i = 0; i < 30; i++) logger!.record(decision(n++));
    };
    logger = createDecisionLogger(base(fake.transport, { onError }));
    await waitFor(() => logger.stats().ready.contract, { timeoutMs: 5_000, what: 'the contract' });
    for (let i = 0; i < 10; i++) logger.record(decision(n++));
    assert.deepEqual(await logger.flush(10_000), { ok: true, unsent: 0 });
    await logger.close();
    assert.deepEqual(fake.sizes, [10, 10, 30]);
    assert.equal(new Set(fake.ids()).size, 40);
  });

  it('a failed read of the spill file is reported and retried: the sending goes on', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    fake.state.down = true;
    const errors: DecisionLoggerError[] = [];
    const logger = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 5 }, onError: (e) => void errors.push(e) }));
    const readNext = SpillFile.prototype.readNext;
    let failures = 1;
    SpillFile.prototype.readNext = function (this: SpillFile, ...args: Parameters<SpillFile['readNext']>) {
      if (failures-- > 0) throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
      return readNext.apply(this, args);
    };
    try {
      for (let i = 0; i < 20; i++) {
        logger.record(decision(i));
        await new Promise((r) => setImmediate(r));
      }
      await waitFor(() => logger.stats().spilled > 0, { timeoutMs: 5_000, what: 'spilling' });
      fake.state.down = false;
      assert.deepEqual(await logger.flush(20_000), { ok: true, unsent: 0 });
    } finally {
      SpillFile.prototype.readNext = readNext;
    }
    const stats = await logger.close();
    assert.equal(stats.sent, 20);
    assert.equal(failures, -1, 'the read failed once');
    assert.ok(errors.some((e) => e.kind === 'spill' && /Reading the spill file back failed/.test(e.message)));
    assert.deepEqual(fake.events().map((e) => JSON.parse(e.event.input_json).i), Array.from({ length: 20 }, (_, i) => i));
  });

  it('flush(Infinity) waits without a bound (it used to give up after 1 ms)', async () => {
    const fake = fakeTransport();
    fake.state.down = true;
    const logger = createDecisionLogger(base(fake.transport));
    logger.record(decision(1));
    let settled = false;
    const flushed = logger.flush(Infinity).finally(() => (settled = true));
    await waitFor(() => logger.stats().sendErrors >= 2, { timeoutMs: 10_000, what: 'failed sends' });
    assert.equal(settled, false);
    fake.state.down = false;
    assert.deepEqual(await flushed, { ok: true, unsent: 0 });
    assert.equal((await logger.close(Infinity)).sent, 1);
  });

  it('refuses, at creation, defaults that would refuse every event, naming the option', () => {
    const fake = fakeTransport();
    const make = (extra: Partial<DecisionLoggerOptions>) => () => createDecisionLogger(base(fake.transport, extra));
    assert.throws(make({ model: 'loan-approver:2.4.1' }), /option model: .*registry:\/\/models/);
    assert.throws(make({ config: { ref: 'configs/prod/x:v1', params: { temperature: 'hot' as never } } }), /option config\.params\.temperature/);
    assert.throws(make({ config: { ref: 'configs/prod/x:v1', params: { thresholds: { approve: 'high' as never } } } }), /option config\.params\.thresholds/);
    assert.throws(make({ requestTimeoutMs: 3_000_000_000 }), /option requestTimeoutMs/);
    assert.throws(make({ buffer: { policy: 'drop', spillDir: '/tmp/x' } }), /option buffer\.spillDir/);
    assert.doesNotThrow(() => make({ model: 'registry://models/loan-approver:2.4.1' })().close());
  });

  it('option errors say what is wrong and what to do', () => {
    const fake = fakeTransport();
    const make = (extra: Record<string, unknown>) => () => createDecisionLogger(base(fake.transport, extra as Partial<DecisionLoggerOptions>)).close();
    assert.throws(make({ model: { name: 'loan-approver' } }), /option model: needs a version \(a non-empty string\)/);
    assert.throws(make({ model: { version: '1' } }), /option model: needs a name/);
    assert.throws(make({ model: { name: 'fraud:eu', version: '3' } }), /option model: name "fraud:eu" cannot contain ':'/);
    // console has no child(): it used to fail later with "TypeError: ...child is not a function".
    assert.throws(make({ log: console }), /^Error: Invalid decision logger option log: must be a pino logger .*child, info, warn, error, debug/);
    assert.throws(make({ buffer: { maxBytes: 1000 } }), /option buffer\.maxBytes: 1000 is smaller than maxEventBytes \(262144, the default\): every event larger than buffer\.maxBytes would be dropped; raise buffer\.maxBytes .* or lower maxEventBytes/);
    assert.throws(make({ buffer: { maxBytes: 100_000 }, maxEventBytes: 200_000 }), /option buffer\.maxBytes: 100000 is smaller than maxEventBytes \(200000\)/);
    assert.doesNotThrow(make({ buffer: { maxBytes: 100_000 }, maxEventBytes: 100_000 }));
    // Defaults with a lone surrogate or a prototype key would refuse every event: refused here.
    assert.throws(make({ attributes: { note: 'é🎉'.slice(0, 2) } }), /option attributes\.note: holds a lone surrogate/);
    assert.throws(make({ attributes: JSON.parse('{"__proto__":"x"}') as Record<string, string> }), /option attributes\.__proto__: .*prototype key/);
    assert.throws(make({ service: 'svc👍'.slice(0, 4) }), /option service: holds a lone surrogate/);
  });

  it('takes a bracketed IPv6 broker ([::1]:9092), and refuses one that is not host:port', () => {
    const ok = { service: 'x', registryUrl: 'http://127.0.0.1:8081', kafkaClient: 'native' as const };
    for (const broker of ['localhost', '::1:9092', '[::1]', 'host:port']) {
      assert.throws(() => createDecisionLogger({ ...ok, brokers: [broker] }), /option brokers\.0: must be host:port, or \[IPv6 address\]:port/, broker);
    }
    // Taken as an option (a transport stands in for Kafka here: no broker is contacted) ...
    const fake = fakeTransport();
    assert.doesNotThrow(() => void createDecisionLogger(base(fake.transport, { brokers: ['[::1]:9092', '[2001:db8::7]:9093', 'kafka-1:9092'] })).close());
    // ... but kafkajs splits a broker at its first ':', so it cannot connect to one: said at creation.
    assert.throws(() => createDecisionLogger({ ...ok, brokers: ['[::1]:9092'], kafkaClient: 'kafkajs' }), /option brokers: \[::1\]:9092 is an IPv6 address, which kafkajs cannot connect to; install node-rdkafka/);
  });

  it('by default refuses an event over 256 KiB, the gate\'s default policy (it was 512 KiB, and the gate dead-lettered those)', async () => {
    const policy = readFileSync(new URL('../../../infra/policies/default.yaml', import.meta.url), 'utf8');
    assert.equal(Number(/max_event_bytes:\s*(\d+)/.exec(policy)?.[1]), 262_144, 'the SDK default follows the gate policy');
    const fake = fakeTransport();
    const errors: DecisionLoggerError[] = [];
    const logger = createDecisionLogger(base(fake.transport, { onError: (e) => void errors.push(e) }));
    logger.record({ input: { text: 'x'.repeat(300_000) }, output: { decision: 'ok' } });
    logger.record({ input: { text: 'x'.repeat(200_000) }, output: { decision: 'ok' } });
    const stats = await logger.close();
    assert.deepEqual([stats.sent, stats.invalid], [1, 1]);
    assert.match(errors[0]?.message ?? '', /oversized: the input's JSON alone is over 262144 characters/);
  });

  it('counts as invalid, and reports, decisions the gate would dead-letter: they are not sent', async () => {
    const fake = fakeTransport();
    const errors: DecisionLoggerError[] = [];
    const logger = createDecisionLogger(base(fake.transport, { onError: (e) => void errors.push(e) }));
    const bad: Decision[] = [
      { input: { q: 1 }, output: { decision: 'Approved 👍'.slice(0, 10) } },
      { input: { q: 1 }, output: { decision: 'ok' }, attributes: { note: 'é🎉'.slice(0, 2) } },
      { input: { constructor: 'Acme Builders Ltd', amount: 5 }, output: { decision: 'ok' } },
      { input: { q: 1 }, output: { decision: 'ok' }, ts: Math.floor(Date.now() / 1000) },
      { input: { features: new Map([['income', 1]]) }, output: { decision: 'ok' } },
    ];
    for (const d of bad) logger.record(d);
    logger.record({ input: { q: 1 }, output: { decision: 'ok', tokenLogprobs: [-0.1, -Infinity] } });
    const stats = await logger.close();
    assert.deepEqual([stats.sent, stats.invalid], [1, bad.length]);
    const reasons = errors.map((e) => `${e.kind}: ${e.message}`).join('\n');
    for (const r of [/invalid: .*output\.decision holds a lone surrogate/, /invalid: .*a value of attributes holds a lone surrogate/, /invalid: .*the key "constructor", which the gate refuses/, /invalid: .*this looks like seconds/, /invalid: .*Map is not representable/]) {
      assert.match(reasons, r);
    }
    assert.deepEqual(fake.events()[0]?.event.output.token_logprobs, [-0.1, -Infinity]);
  });

  it('spill policy past its bound: one record() encodes a small slice of what waits, not all of it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    fake.state.down = true;
    const logger = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 1_000 } }));
    await waitFor(() => logger.stats().ready.contract, { timeoutMs: 5_000, what: 'the contract' });
    for (let i = 0; i < 1_000; i++) logger.record(decision(i)); // no await: nothing encoded yet
    assert.equal(logger.stats().buffered.pending, 1_000);
    logger.record(decision(1_000));
    const pending = logger.stats().buffered.pending;
    assert.ok(pending > 1_000 - 300 && pending <= 1_000, `${pending} still waiting`);
    await logger.close(100);
  });

  it('spill policy with the registry down at start loses nothing: events wait with a placeholder id', async () => {
    // Before, nothing could be encoded until the contract was registered, and events past the
    // bound were dropped: an outage at start lost them under the one policy that promises not to.
    const fake = fakeTransport();
    let registryUp = false;
    const register = fake.transport.register.bind(fake.transport);
    fake.transport.register = async (subject, schema) => {
      if (!registryUp) throw new Error('ECONNREFUSED');
      return register(subject, schema);
    };
    const errors: DecisionLoggerError[] = [];
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const logger = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 10 }, onError: (e) => void errors.push(e) }));
    const ids = Array.from({ length: 25 }, (_, i) => logger.record(decision(i)));
    await waitFor(() => logger.stats().spilled > 0, { timeoutMs: 5_000, what: 'events spilled while the registry is down' });
    assert.equal(errors.filter((e) => e.kind === 'dropped').length, 0);
    // Closed before the registry came back: what is left waits in the spill file.
    await logger.close(200);
    registryUp = true;
    const again = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 10 } }));
    await again.flush(10_000);
    await again.close(1_000);
    const got = fake.events();
    assert.deepEqual(got.map((e) => e.event.event_id).sort(), [...ids].sort(), 'every event, once');
    assert.deepEqual([...new Set(got.map((e) => e.schemaId))], [1], 'each stamped with the registered id before it was sent');
  });

  it('the placeholder id is negative and depends on the contract, so another contract is never stamped', () => {
    const a = placeholderSchemaId('{"type":"record","name":"A"}');
    const b = placeholderSchemaId('{"type":"record","name":"B"}');
    assert.ok(a < 0 && b < 0 && a !== b);
    assert.equal(a, placeholderSchemaId('{"type":"record","name":"A"}'));
  });

  it('refuses a second logger on a spill directory this process already uses, naming it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    const first = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    assert.throws(
      () => createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir } })),
      (err: Error) => err.message.includes(dir) && /another decision logger in this process/.test(err.message),
    );
    await first.close();
    await createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir } })).close();
  });
});

/** Bytes of the spill's segment files on disk. */
function spillOnDisk(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f === 'spill.log' || /^spill\.log\.\d+$/.test(f))
    .reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
}

describe('createDecisionLogger: the spill file after an outage', () => {
  it('steady traffic drains the spill file and it is emptied: once all of it was read back, new events stay in memory', async () => {
    // Before, every event after an outage went through the file for as long as traffic lasted, and
    // the file was never emptied (8 MB in 8 s at 1.2k events/s).
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    // A few ms a round trip, as a real broker: events keep arriving while each batch is in flight.
    const send = fake.transport.send.bind(fake.transport);
    fake.transport.send = async (topic, messages) => {
      await new Promise((r) => setTimeout(r, 3));
      await send(topic, messages);
    };
    fake.state.down = true;
    const logger = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 200 } }));
    let n = 0;
    for (; n < 1_000; n++) logger.record(decision(n));
    await waitFor(() => logger.stats().spilled >= 800, { timeoutMs: 5_000, what: 'the outage spilled' });
    fake.state.down = false;
    const timer = setInterval(() => {
      logger.record(decision(n++));
      logger.record(decision(n++));
    }, 1);
    try {
      await waitFor(() => logger.stats().sent >= 1_000 && statSync(path.join(dir, 'spill.log')).size === 0, { timeoutMs: 10_000, what: 'the spill file emptied while events keep coming' });
      const spilled = logger.stats().spilled;
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(logger.stats().spilled, spilled, 'new events no longer go through the file');
      assert.equal(spillOnDisk(dir), 0);
    } finally {
      clearInterval(timer);
    }
    assert.deepEqual(await logger.flush(10_000), { ok: true, unsent: 0 });
    await logger.close();
    assert.deepEqual(fake.events().map((e) => JSON.parse(e.event.input_json).i), Array.from({ length: n }, (_, i) => i), 'every event once, in order');
  });

  it('a sender that never catches up keeps the files on disk within a segment of what is unsent, and loses nothing', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const fake = fakeTransport();
    const send = fake.transport.send.bind(fake.transport);
    fake.transport.send = async (topic, messages) => {
      await new Promise((r) => setTimeout(r, 10));
      await send(topic, messages);
    };
    // maxSpillBytes 4 MiB: segments of 256 KiB.
    const segment = 256 * 1024;
    const logger = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 100, maxSpillBytes: 4 << 20 }, batch: { maxEvents: 20 } }));
    await waitFor(() => logger.stats().ready.contract, { timeoutMs: 5_000, what: 'the contract' });
    let n = 0;
    let worst = 0;
    const timer = setInterval(() => {
      for (let k = 0; k < 4; k++) logger.record(decision(n++));
    }, 1);
    // Until the sender has sent a good deal while a backlog sits on disk (about 2 s when the
    // machine is quiet; a loaded one fires the timers late, so no fixed length).
    const deadline = Date.now() + 30_000;
    try {
      for (;;) {
        await new Promise((r) => setTimeout(r, 50));
        worst = Math.max(worst, spillOnDisk(dir) - logger.stats().buffered.spillBytes);
        const now = logger.stats();
        if (now.sent > 2_000 && now.buffered.spillBytes > segment) break;
        if (Date.now() > deadline) break;
      }
    } finally {
      clearInterval(timer);
    }
    const during = logger.stats();
    assert.ok(during.sent > 2_000 && during.buffered.spillBytes > segment, `the sender trails: ${JSON.stringify(during.buffered)}, ${during.sent} sent`);
    // The acknowledged part of the first segment, which one append may have taken past its size.
    assert.ok(worst <= 2 * segment, `up to ${worst} bytes on disk beyond what was unsent`);
    assert.deepEqual(await logger.flush(30_000), { ok: true, unsent: 0 });
    const stats = await logger.close();
    assert.equal(stats.dropped, 0);
    assert.deepEqual(fake.events().map((e) => JSON.parse(e.event.input_json).i), Array.from({ length: n }, (_, i) => i), 'every event once, in order');
  });

  it('close keeps the order when memory holds events behind ones read back from the spill file and more were spilled after them', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const sent: number[] = [];
    let mode: 'down' | 'once' | 'hang' = 'down';
    let hanging = false;
    const input = (m: OutMessage) => JSON.parse(String((eventType.fromBuffer(m.value.subarray(5)) as { input_json: string }).input_json)).i as number;
    const transport: Transport = {
      async connect() {},
      async register(subject) {
        return subject.includes('artifact') ? 2 : 1;
      },
      async send(topic, messages) {
        if (topic !== 'inference.raw') return;
        await new Promise((r) => setImmediate(r));
        if (mode === 'down') throw new Error('broker down');
        if (mode === 'once') {
          mode = 'hang';
          sent.push(...messages.map(input));
          return;
        }
        hanging = true;
        await new Promise(() => undefined);
      },
      async reset() {},
      async disconnect() {},
    };
    const logger = createDecisionLogger(base(transport, { buffer: { policy: 'spill', spillDir: dir, maxEvents: 5 }, batch: { maxEvents: 50 } }));
    for (let i = 0; i < 20; i++) logger.record(decision(i));
    await waitFor(() => logger.stats().spilled === 15, { timeoutMs: 5_000, what: '15 spilled behind 5 in memory' });
    mode = 'once';
    // 0-4 go, then 5-19 are read back from the file (all of it) and their send hangs.
    await waitFor(() => hanging, { timeoutMs: 10_000, what: 'the read-back batch in flight' });
    for (let i = 20; i < 28; i++) logger.record(decision(i));
    await waitFor(() => logger.stats().buffered.pending === 0, { timeoutMs: 5_000, what: 'encoding' });
    // 20-24 in memory (all of the file was read back), 25-27 past the bound into the file.
    assert.equal(logger.stats().spilled, 18);
    await logger.close(300);

    const fake = fakeTransport();
    fake.transport.written = async () => new Set();
    const next = createDecisionLogger(base(fake.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    assert.deepEqual(await next.flush(10_000), { ok: true, unsent: 0 });
    await next.close();
    assert.deepEqual(sent, [0, 1, 2, 3, 4]);
    assert.deepEqual(fake.events().map((e) => JSON.parse(e.event.input_json).i), Array.from({ length: 23 }, (_, i) => i + 5), 'the rest once, in order');
  });
});

describe('createDecisionLogger: nothing is sent after close() returns', () => {
  it('a batch whose read-back was under way at close is not sent afterwards: it stays in the spill file for the next process', async () => {
    // Before, the sender went on to send it once the read-back returned, 1.6 s after close() had
    // returned, while the next process (which had taken the directory) sent the same events.
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-sdk-spill-'));
    const store: { key: string; value: Buffer }[] = [];
    const a = scriptedTransport(store);
    a.script.push('writeThenHang');
    const first = createDecisionLogger(base(a.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    for (let i = 0; i < 3; i++) first.record(decision(i));
    await waitFor(() => store.length === 3, { timeoutMs: 5_000, what: 'the batch handed to the broker' });
    assert.equal((await first.close(200)).spilled, 3, 'kept flagged as of unknown outcome');

    const sends: { at: number; n: number }[] = [];
    let readBackStarted = false;
    let readBackDone = false;
    const slow: Transport = {
      ...scriptedTransport(store).transport,
      async send(topic, messages) {
        if (topic === 'inference.raw') sends.push({ at: Date.now(), n: messages.length });
      },
      async written() {
        readBackStarted = true;
        await new Promise((r) => setTimeout(r, 500));
        readBackDone = true;
        return new Set();
      },
    };
    const second = createDecisionLogger(base(slow, { buffer: { policy: 'spill', spillDir: dir } }));
    await waitFor(() => readBackStarted, { timeoutMs: 5_000, what: 'the read-back under way' });
    const closed = await second.close(100);
    const closedAt = Date.now();
    await waitFor(() => readBackDone, { timeoutMs: 5_000, what: 'the read-back' });
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(sends, [], 'nothing sent, during or after close()');
    assert.ok(Date.now() > closedAt);
    assert.equal(closed.buffered.spillBytes > 0, true);

    const c = scriptedTransport(store);
    const third = createDecisionLogger(base(c.transport, { buffer: { policy: 'spill', spillDir: dir } }));
    assert.deepEqual(await third.flush(5_000), { ok: true, unsent: 0 });
    await third.close();
    assert.equal(new Set(c.ids()).size, 3);
    assert.equal(c.ids().length, 3, 'each event once');
  });

  it('a close() while the environment snapshot is being registered sends no snapshot afterwards', async () => {
    const fake = fakeTransport();
    const register = fake.transport.register.bind(fake.transport);
    let registered = false;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    fake.transport.register = async (subject, schema) => {
      if (subject.includes('registry')) {
        // Held until close() has returned, however long flush and close take here.
        await held;
        registered = true;
      }
      return register(subject, schema);
    };
    const logger = createDecisionLogger(base(fake.transport));
    logger.record(decision(1));
    assert.deepEqual(await logger.flush(5_000), { ok: true, unsent: 0 });
    const stats = await logger.close(100);
    release();
    await waitFor(() => registered, { timeoutMs: 5_000, what: 'the slow registration' });
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(fake.sent.filter((s) => s.topic === 'registry.artifacts'), [], 'no snapshot sent after close()');
    assert.equal(stats.ready.environment, false);
    assert.equal(logger.stats().ready.environment, false);
  });
});

describe('createDecisionLogger: a hostile thrown value never reaches the host', () => {
  /** Collects what would have reached the host as an uncaught exception or unhandled rejection. */
  async function escapes(fn: () => Promise<void>): Promise<unknown[]> {
    const seen: unknown[] = [];
    const onException = (err: unknown) => void seen.push(err);
    process.on('uncaughtException', onException);
    process.on('unhandledRejection', onException);
    try {
      await fn();
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off('uncaughtException', onException);
      process.off('unhandledRejection', onException);
    }
    return seen;
  }
  // Throws itself on every property read: a strict mock, a Proxy.
  const hostile: unknown = new Proxy({}, { get() { throw hostile; } });
  const throwing = () => ({ output: { decision: 'ok' }, get input(): unknown { throw hostile; } });

  it('from a getter of the decision, recorded before and after the contract is registered: refused and reported', async () => {
    const seen = await escapes(async () => {
      const fake = fakeTransport();
      const errors: DecisionLoggerError[] = [];
      const logger = createDecisionLogger(base(fake.transport, { onError: (e) => void errors.push(e) }));
      // Before: encoded when run() starts (its rejection handler read .message and threw);
      // after: encoded from setImmediate (an uncaught exception).
      assert.doesNotThrow(() => logger.record(throwing() as never));
      await waitFor(() => logger.stats().ready.contract, { timeoutMs: 5_000, what: 'the contract' });
      assert.doesNotThrow(() => logger.record(throwing() as never));
      logger.record(decision(1));
      const stats = await logger.close();
      assert.equal(stats.invalid, 2);
      assert.equal(stats.sent, 1);
      assert.equal(errors.filter((e) => e.kind === 'invalid').length, 2);
      assert.ok(errors.every((e) => /cannot be read/.test(e.message)), errors.map((e) => e.message).join('\n'));
    });
    assert.deepEqual(seen, []);
  });

  it('thrown by onError, or by a transport, is logged and the logger goes on', async () => {
    const seen = await escapes(async () => {
      const fake = fakeTransport();
      let failures = 2;
      const send = fake.transport.send.bind(fake.transport);
      fake.transport.send = async (topic, messages) => {
        if (topic === 'inference.raw' && failures-- > 0) throw hostile;
        await send(topic, messages);
      };
      const logger = createDecisionLogger(base(fake.transport, { onError: () => { throw hostile; } }));
      logger.record(throwing() as never);
      logger.record(decision(1));
      assert.deepEqual(await logger.flush(10_000), { ok: true, unsent: 0 });
      const stats = await logger.close();
      assert.deepEqual([stats.invalid, stats.sent, stats.sendErrors], [1, 1, 2]);
    });
    assert.deepEqual(seen, []);
  });
});
