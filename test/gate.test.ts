import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CompressionTypes, type Producer } from 'kafkajs';
import { loadConfig, type Config } from '@dlog/config';
import { avroType, createRegistry, inputHash, loadSchema, registerAvro, SchemaIncompatibleError, valueSubject } from '@dlog/contracts';
import type { Schema } from 'avsc';
import { createKafka } from '@dlog/kafka';
import { createGate, type Gate } from '@dlog/gate';
import { collect, log, unique, waitFor } from './helpers.js';

/** Seeded personal data: none of it may appear in anything the gate emits. */
const canaries = {
  email: 'canary.person@example.org',
  card: '4539 1488 0343 6467',
  ssn: '219-09-9999',
  iban: 'DE89 3704 0044 0532 0130 00',
  phone: '+44 20 7946 0321',
  name: 'Canary McTestface',
};

function rawInput(i: number) {
  return {
    applicant: { email: canaries.email, name: canaries.name, ssn: canaries.ssn, phone: canaries.phone, iban: canaries.iban, income: 40_000 + i },
    notes: `customer wrote from ${canaries.email}, card ${canaries.card}, ssn ${canaries.ssn}, iban ${canaries.iban}`,
    amount: 1_000 + i,
  };
}

type Kind = 'loan' | 'rec' | 'agent' | 'other';

function event(i: number, kind: Kind, trace?: { id: string; step: number }) {
  const decisionType = { loan: 'loan_approval', rec: 'recommendation', agent: 'agent_step', other: 'classification' }[kind];
  const input = rawInput(i);
  return {
    event_id: `ev-${i}`,
    request_id: `req-${i}`,
    ts: Date.now(),
    endpoint: `${kind}-endpoint`,
    decision_type: decisionType,
    tenant: null,
    model: { name: `${kind}-model`, version: i % 3 === 0 ? '2.0.0' : '1.9.0', digest: 'sha256:m' },
    image: { ref: 'registry.example/inference:1', digest: 'sha256:i' },
    config: { ref: 'configs/prod/p:v3', params: { temperature: 0.2, top_p: null, max_tokens: null, thresholds: {}, extra: {} } },
    preprocessing: null,
    environment_digest: 'sha256:env',
    input_json: JSON.stringify(input),
    input_hash: inputHash(input),
    output: { decision: i % 4 === 0 ? 'declined' : 'approved', confidence: 0.8, scores: {}, token_logprobs: null, output_json: `reply to ${canaries.email}` },
    trajectory: trace ? { trace_id: trace.id, step: trace.step, parent_event_id: null, tool_name: 'search', tool_args_hash: null } : null,
    producer: { service: 'test', sdk: 'custom', host: null },
    attributes: { contact: canaries.phone },
  };
}

/** Every bad-input case the gate must dead-letter, with the reason it must give. */
function badInputs(schemaId: number): { reason: string; value: Buffer | null; key?: string }[] {
  const inputType = avroType('inference-event');
  const good = inputType.toBuffer(event(0, 'other'));
  const framed = (id: number, body: Buffer) => {
    const header = Buffer.alloc(5);
    header.writeInt32BE(id, 1);
    return Buffer.concat([header, body]);
  };
  const json = (o: unknown) => Buffer.from(JSON.stringify(o));
  const { endpoint: _e, ...missing } = event(1, 'other');
  return [
    { reason: 'wrong_magic_byte', value: Buffer.from([7, 1, 2, 3, 4, 5]) },
    { reason: 'unknown_schema_id', value: framed(987_654, good) },
    { reason: 'truncated_avro', value: framed(schemaId, good.subarray(0, good.length - 10)) },
    { reason: 'invalid_json', value: Buffer.from('{"event_id": "x", ') },
    { reason: 'invalid_utf8', value: Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]) },
    { reason: 'missing_field', value: json(missing) },
    { reason: 'wrong_type', value: json({ ...event(2, 'other'), ts: 'now' }) },
    { reason: 'payload_too_large', value: json({ ...event(3, 'other'), input_json: JSON.stringify({ blob: 'x'.repeat(300_000) }) }) },
    { reason: 'forbidden_key', value: Buffer.from(`{"__proto__": {"isAdmin": true}, "event_id": "p"}`) },
    { reason: 'forbidden_key', value: json({ ...event(4, 'other'), input_json: '{"constructor": {"prototype": 1}}', input_hash: undefined }) },
    { reason: 'timestamp_out_of_range', value: json({ ...event(5, 'other'), ts: Date.now() - 400 * 86_400_000 }) },
    { reason: 'timestamp_out_of_range', value: json({ ...event(6, 'other'), ts: Date.now() + 86_400_000 }) },
    { reason: 'empty_message', value: null },
  ];
}

describe('gate end to end on the real broker and registry', () => {
  const prefix = `${unique('gate')}.`;
  const config: Config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' });
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-gate', log });
  let producer: Producer;
  let gate: Gate;
  let schemaId: number;
  let produced = 0;
  let bad: ReturnType<typeof badInputs>;
  const agentTraces = new Map<string, number>();

  before(async () => {
    gate = await createGate({ kafka, config, log });
    await gate.start();
    const registry = createRegistry(config.schemaRegistryUrl);
    schemaId = await registerAvro(registry, config.schemaRegistryUrl, valueSubject(`${prefix}inference.raw`), loadSchema('inference-event'));
    producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const inputType = avroType('inference-event');
    const messages: { key: string; value: Buffer | null }[] = [];
    const kinds: Kind[] = ['loan', 'rec', 'other'];
    for (let i = 0; i < 3000; i++) {
      const e = event(i, kinds[i % 3]!);
      // Half Avro with registry framing, half plain JSON: both are first-class inputs.
      const value = i % 2 ? Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), inputType.toBuffer(e)]) : Buffer.from(JSON.stringify(e));
      if (i % 2) value.writeInt32BE(schemaId, 1);
      messages.push({ key: e.request_id, value });
    }
    for (let t = 0; t < 200; t++) {
      const id = `trace-${t}`;
      const steps = 2 + (t % 4);
      agentTraces.set(id, steps);
      for (let s = 0; s < steps; s++) {
        messages.push({ key: id, value: Buffer.from(JSON.stringify(event(10_000 + t * 10 + s, 'agent', { id, step: s }))) });
      }
    }
    bad = badInputs(schemaId);
    for (const b of bad) messages.push({ key: `bad-${b.reason}`, value: b.value });
    produced = messages.length;
    for (let i = 0; i < messages.length; i += 500) {
      await producer.send({ topic: `${prefix}inference.raw`, messages: messages.slice(i, i + 500) });
    }
    await waitFor(() => gate.stats.kept + gate.stats.dropped + gate.stats.deadLettered >= produced, {
      timeoutMs: 60_000,
      what: `the gate to process all ${produced} events`,
    });
  });

  after(async () => {
    await producer?.disconnect();
    await gate?.stop();
  });

  it('reconciles exactly: produced = kept + counted-as-dropped + dead-lettered, read back from the topics', async () => {
    const decisions = await collect(`${prefix}decisions.v1`);
    const counts = await collect(`${prefix}decision.counts.v1`);
    const dlq = await collect(`${prefix}inference.dlq`);
    try {
      await waitFor(() => decisions.messages.length >= gate.stats.kept && dlq.messages.length >= bad.length, { timeoutMs: 30_000, what: 'outputs' });
      const countsType = avroType('decision-counts');
      await waitFor(
        () => counts.messages.reduce((s, m) => s + Number((countsType.fromBuffer(m.value!.subarray(5)) as { kept: number; dropped: number }).kept), 0) >= gate.stats.kept,
        { timeoutMs: 30_000, what: 'count deltas' },
      );
      await new Promise((r) => setTimeout(r, 1_000)); // anything extra would show up now
      const rows = counts.messages.map((m) => countsType.fromBuffer(m.value!.subarray(5)) as { kept: number; dropped: number });
      const kept = rows.reduce((s, r) => s + r.kept, 0);
      const dropped = rows.reduce((s, r) => s + r.dropped, 0);
      assert.equal(decisions.messages.length, kept, 'one record per kept decision');
      assert.ok(dropped > 0 && kept > 0);
      assert.equal(kept + dropped + dlq.messages.length, produced);

      // Outputs carry the time they were written (retention and the alerter's windows count
      // from it), never an empty or zero timestamp.
      for (const m of [...decisions.messages, ...counts.messages, ...dlq.messages]) {
        assert.ok(Math.abs(Number(m.timestamp) - Date.now()) < 15 * 60_000, `output record timestamp ${m.timestamp} is not recent`);
      }

      const reasons = dlq.messages.map((m) => String(m.headers?.['dlog.reason'])).sort();
      assert.deepEqual(reasons, bad.map((b) => b.reason).sort());
      for (const m of dlq.messages) {
        const original = bad.find((b) => `bad-${b.reason}` === String(m.key) && (b.value === null ? m.value === null : b.value.equals(m.value ?? Buffer.alloc(0))));
        assert.ok(original, `dead letter ${String(m.key)} keeps its original key and bytes`);
        assert.equal(String(m.headers?.['dlog.source.topic']), `${prefix}inference.raw`);
        assert.match(String(m.headers?.['dlog.source.offset']), /^\d+$/);
        assert.ok(String(m.headers?.['dlog.message']).length > 0);
      }
    } finally {
      await Promise.all([decisions.stop(), counts.stop(), dlq.stop()]);
    }
  });

  it('lets no canary personal data into decisions.v1 or the counts (scanning the raw topic bytes)', async () => {
    for (const topic of [`${prefix}decisions.v1`, `${prefix}decision.counts.v1`]) {
      const c = await collect(topic);
      try {
        await waitFor(() => c.messages.length > 0, { timeoutMs: 30_000, what: topic });
        await new Promise((r) => setTimeout(r, 500));
        const bytes = Buffer.concat(c.messages.flatMap((m) => [m.key ?? Buffer.alloc(0), m.value ?? Buffer.alloc(0)]));
        const variants = Object.values(canaries).flatMap((v) => [v, v.toLowerCase(), v.replace(/[ -]/g, '')]);
        for (const v of variants) assert.equal(bytes.includes(Buffer.from(v)), false, `${v} found in ${topic}`);
      } finally {
        await c.stop();
      }
    }
  });

  it('keeps or drops each agent trajectory whole, and records its tier and rate', async () => {
    const c = await collect(`${prefix}decisions.v1`);
    try {
      await waitFor(() => c.messages.length >= gate.stats.kept, { timeoutMs: 30_000, what: 'decisions' });
      const type = avroType('decision-record');
      const perTrace = new Map<string, number>();
      for (const m of c.messages) {
        const r = type.fromBuffer(m.value!.subarray(5)) as { trajectory: { trace_id: string } | null; tier: string; sample_rate: number; decision_type: string; policy_version: string; input_json: string | null };
        assert.match(r.policy_version, /^default@1\+/);
        if (r.decision_type === 'agent_step') {
          assert.equal(r.sample_rate, 0.5);
          perTrace.set(r.trajectory!.trace_id, (perTrace.get(r.trajectory!.trace_id) ?? 0) + 1);
        }
        if (r.decision_type === 'recommendation') assert.equal(r.tier, 'minimal');
        if (r.tier !== 'full') assert.equal(r.input_json, null, 'only the full tier keeps the (protected) input');
      }
      assert.ok(perTrace.size > 40 && perTrace.size < 160, `about half of 200 traces kept, got ${perTrace.size}`);
      for (const [trace, n] of perTrace) assert.equal(n, agentTraces.get(trace), `${trace} kept whole`);
    } finally {
      await c.stop();
    }
  });

  it('samples the same events the same way when the input is processed again by a new gate', async () => {
    const second = `${unique('gate2')}.`;
    const replay = await createGate({
      kafka,
      config,
      log,
      groupId: `${second}group`,
      topics: { decisions: `${second}decisions.v1`, counts: `${second}decision.counts.v1`, deadLetters: `${second}inference.dlq` },
    });
    await replay.start();
    try {
      await waitFor(() => replay.stats.kept + replay.stats.dropped + replay.stats.deadLettered >= produced, { timeoutMs: 60_000, what: 'the replay' });
      assert.deepEqual({ ...replay.stats }, { ...gate.stats });
      const a = await collect(`${prefix}decisions.v1`);
      const b = await collect(`${second}decisions.v1`);
      try {
        await waitFor(() => a.messages.length >= gate.stats.kept && b.messages.length >= gate.stats.kept, { timeoutMs: 30_000, what: 'both outputs' });
        const type = avroType('decision-record');
        const ids = (msgs: typeof a.messages) => msgs.map((m) => (type.fromBuffer(m.value!.subarray(5)) as { event_id: string }).event_id).sort();
        assert.deepEqual(ids(b.messages), ids(a.messages));
      } finally {
        await Promise.all([a.stop(), b.stop()]);
      }
    } finally {
      await replay.stop();
    }
  });
});

describe('gate: an event larger than a Kafka record, sent compressed', () => {
  const prefix = `${unique('gatebig')}.`;
  const config: Config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' });
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-gate-big', log });
  let gate: Gate;

  before(async () => {
    gate = await createGate({ kafka, config, log });
    await gate.start();
  });
  after(async () => {
    await gate?.stop();
  });

  it('is dead-lettered without its value, and the events behind it on its partition go on', async () => {
    // The broker takes the 3 MB event because the batch is compressed; the gate refuses it as too
    // large, and a dead letter carrying it would be refused by the broker in turn, the batch read
    // again and refused again for ever (it was, before dead letters gave up values this large).
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const huge = { ...event(1, 'other'), event_id: 'ev-huge', input_json: JSON.stringify({ blob: 'a'.repeat(3_000_000) }), input_hash: '' };
    const after1 = { ...event(2, 'other'), event_id: 'ev-after-huge' };
    await producer.send({
      topic: `${prefix}inference.raw`,
      compression: CompressionTypes.GZIP,
      messages: [{ key: 'same', value: JSON.stringify(huge) }, { key: 'same', value: JSON.stringify(after1) }],
    });
    await producer.disconnect();
    const decisions = await collect(`${prefix}decisions.v1`);
    const dlq = await collect(`${prefix}inference.dlq`);
    try {
      await waitFor(() => decisions.messages.length >= 1 && dlq.messages.length >= 1, { timeoutMs: 60_000, what: 'the event behind the huge one, and the dead letter' });
      const type = avroType('decision-record');
      assert.deepEqual(decisions.messages.map((m) => (type.fromBuffer(m.value!.subarray(5)) as { event_id: string }).event_id), ['ev-after-huge']);
      assert.equal(dlq.messages.length, 1);
      const letter = dlq.messages[0]!;
      assert.equal(String(letter.headers?.['dlog.reason']), 'payload_too_large');
      assert.equal(letter.value, null);
      assert.match(String(letter.headers?.['dlog.value_dropped']), /source offset/);
      assert.equal(String(letter.key), 'same');
      assert.match(String(letter.headers?.['dlog.source.offset']), /^\d+$/);
    } finally {
      await Promise.all([decisions.stop(), dlq.stop()]);
    }
  });
});

describe('inference.raw: the registry refuses a producer schema the gate could not read', () => {
  const config: Config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const url = config.schemaRegistryUrl;
  const registry = createRegistry(url);
  type RecordSchema = { fields: { name: string; type: unknown; default?: unknown }[] } & Record<string, unknown>;
  const base = loadSchema('inference-event') as unknown as RecordSchema;

  it('refuses a schema that drops a required field or widens a union, takes one that adds an optional field', async () => {
    // Before, under BACKWARD_TRANSITIVE, both were taken in silence and the gate then dead-lettered
    // every event written with them as incompatible_schema.
    const subject = valueSubject(`${unique('compat')}.inference.raw`);
    await registerAvro(registry, url, subject, base as unknown as Schema);
    const withoutHash = { ...base, fields: base.fields.filter((f) => f.name !== 'input_hash') };
    await assert.rejects(registerAvro(registry, url, subject, withoutHash as unknown as Schema), SchemaIncompatibleError);
    const widened = { ...base, fields: base.fields.map((f) => (f.name === 'tenant' ? { ...f, type: ['null', 'string', 'long'] } : f)) };
    await assert.rejects(registerAvro(registry, url, subject, widened as unknown as Schema), SchemaIncompatibleError);
    const additive = { ...base, fields: [...base.fields, { name: 'region', type: ['null', 'string'], default: null }] };
    assert.ok((await registerAvro(registry, url, subject, additive as unknown as Schema)) > 0);
  });
});
