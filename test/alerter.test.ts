import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Kafka, Producer } from 'kafkajs';
import { loadConfig } from '@dlog/config';
import { avroType, createRegistry, encodeFramed, loadSchema, registerAvro, valueSubject } from '@dlog/contracts';
import type { AlertRecord, EnrichedDecisionRecord } from '@dlog/contracts';
import { createKafka } from '@dlog/kafka';
import { createAlerter, parseRules, type Alerter } from '../services/alerter/src/index.js';
import { startTopicAt } from '../services/alerter/src/replay.js';
import { collect, log, unique, waitFor, type Collected } from './helpers.js';

const min = 60_000;

// Small event-time windows so a few hundred decisions fill them; same shape as infra/alerts.
const rules = parseRules(`
watermark: { allowed_lateness: 5s, idle_partition_after: 10s }
rules:
  - { name: confidence-drop, kind: confidence_drop, window: { size: 2m, hop: 1m }, min_samples: 40, min_drop: 0.05, suppress_for: 1h }
  - { name: decision-mix-shift, kind: decision_mix_shift, window: { size: 2m, hop: 1m }, min_samples: 40, min_psi: 0.2, suppress_for: 1h }
  - { name: unresolved-artifacts, kind: unresolved_artifacts, window: { size: 2m }, min_samples: 40, max_rate: 0.05, suppress_for: 1h }
  - { name: dead-letters, kind: dead_letters, window: { size: 2m }, min_samples: 40, max_rate: 0.2, suppress_for: 1h }
`);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

function decision(i: number, ts: number, version: string, confidence: number, decision: string, sampleRate: number): EnrichedDecisionRecord {
  return {
    event_id: `e-${version}-${i}`,
    request_id: `r-${version}-${i}`,
    ts,
    endpoint: 'loan-api',
    decision_type: 'loan_approval',
    tenant: null,
    model: { name: 'loan-approver', version, digest: null },
    image: null,
    config: null,
    preprocessing: null,
    environment_digest: null,
    input_json: null,
    input_hash: `sha256-${'0'.repeat(64)}`,
    input_fields: {},
    output: { decision, confidence, scores: {}, token_logprobs: null, output_json: null },
    trajectory: null,
    producer: { service: 'test', sdk: 'custom', host: null },
    attributes: {},
    tier: 'full',
    sample_rate: sampleRate,
    policy_version: 'test@1',
    policy_rule: 'defaults',
    pii_key_id: null,
    source: { partition: 0, offset: i, gate_ts: ts },
    resolved: true,
    unresolved_refs: [],
    digest_mismatches: [],
    artifacts: [],
    lineage: [],
    enriched_at: ts,
  };
}

/**
 * Minutes [from, to) of event time from `base`: the healthy incumbent 2.4.1 (sampled at 0.5,
 * confidence ≈ 0.9, 70 % approved) and a worse canary 2.5.0 on the same endpoint (≈ 0.75,
 * 40 % approved).
 */
function traffic(base: number, from: number, to: number): EnrichedDecisionRecord[] {
  const r = rng(from + 1);
  const out: EnrichedDecisionRecord[] = [];
  for (let m = from; m < to; m++) {
    for (let i = 0; i < 40; i++) {
      const ts = base + m * min + Math.floor((i / 40) * min);
      out.push(decision(m * 100 + i, ts, '2.4.1', 0.85 + r() * 0.1, r() < 0.7 ? 'approved' : 'declined', 0.5));
      if (i % 2 === 0) out.push(decision(m * 100 + i, ts, '2.5.0', 0.7 + r() * 0.1, r() < 0.4 ? 'approved' : 'declined', 1));
    }
  }
  return out;
}

/** A pipeline prefix of its own, with the clients and contract types an alerter test uses. */
function stack(name: string) {
  const prefix = `${unique(name)}.`;
  const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' });
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `test-${name}`, log });
  return { prefix, config, kafka, input: `${prefix}decisions.enriched.v1`, type: avroType('enriched-decision'), alertType: avroType('alert') };
}

describe('alerter on the real stack', () => {
  const { prefix, config, kafka, input, type, alertType } = stack('alert');
  const base = Math.floor((Date.now() - 30 * min) / min) * min;
  let schemaId: number;
  let producer: Producer;
  let alerter: Alerter | undefined;
  let out: Collected;
  const alerts = () => out.messages.map((m) => alertType.fromBuffer(m.value!.subarray(5)) as AlertRecord);

  async function send(records: EnrichedDecisionRecord[], deadLetters: number[] = []): Promise<void> {
    if (deadLetters.length > 0) {
      await producer.send({
        topic: `${prefix}inference.dlq`,
        messages: deadLetters.map((ts, i) => ({ key: `bad-${i}`, value: Buffer.from('{not json'), timestamp: String(ts), headers: { 'dlog.reason': 'invalid_json' } })),
      });
    }
    await producer.send({ topic: input, messages: records.map((d) => ({ key: d.event_id, value: encodeFramed(type, schemaId, d), timestamp: String(d.enriched_at) })) });
  }

  before(async () => {
    alerter = await createAlerter({ kafka, config, log, rules });
    const url = config.schemaRegistryUrl;
    schemaId = await registerAvro(createRegistry(url), url, valueSubject(input), loadSchema('enriched-decision'));
    producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    out = await collect(`${prefix}alerts.v1`);
  });
  after(async () => {
    await alerter?.stop();
    await producer?.disconnect();
    await out?.stop();
  });

  it('alerts on the worse canary within a bounded time, stays silent on the healthy version, suppresses repeats, and keeps suppression across a restart', async () => {
    // The traffic is waiting when the alerter starts, as after an outage: every partition's
    // first batch spans all six minutes, the case where one partition must not close windows
    // the others still hold data for.
    const first = traffic(base, 0, 6);
    await send(first, [base + 10_000, base + 70_000, base + 130_000]);
    // The bound: an alerter that waited out startup_wait (30 s) before closing windows takes
    // longer. The wait below gives a slow machine room to show that, instead of timing out first.
    const t0 = Date.now();
    await alerter!.start();

    const both = await waitFor(
      () => {
        const a = alerts();
        return a.some((x) => x.rule === 'confidence-drop') && a.some((x) => x.rule === 'decision-mix-shift') && a;
      },
      { timeoutMs: 60_000, what: 'confidence and mix alerts for the canary' },
    );
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 30_000, `alerts took ${elapsed} ms`);

    // Everything read and committed: every alert those windows raise is on the topic.
    await waitFor(() => alerter!.stats.decisions === first.length && alerter!.stats.deadLetters === 3 && alerter!.stats.late === 0, { timeoutMs: 30_000, what: 'all input processed' });
    await waitFor(() => out.messages.length === alerter!.stats.alerts, { timeoutMs: 10_000, what: 'collector caught up' });
    const raised = alerts();
    assert.ok(raised.length >= both.length);
    assert.deepEqual(raised.map((a) => `${a.rule} ${a.model_name}:${a.model_version}`).sort(), [
      'confidence-drop loan-approver:2.5.0',
      'decision-mix-shift loan-approver:2.5.0',
    ]);
    // Windows close every minute over six minutes: the repeats were suppressed, not sent.
    assert.ok(alerter!.stats.suppressed >= 4, `suppressed ${alerter!.stats.suppressed}`);

    const conf = raised.find((a) => a.rule === 'confidence-drop')!;
    assert.equal(conf.endpoint, 'loan-api');
    assert.equal(conf.evidence.baseline_version, '2.4.1');
    assert.ok(Number(conf.evidence.drop) > 0.1, conf.evidence.drop);
    assert.ok(Number(conf.evidence.observed_n) >= 40);
    assert.equal(Number(conf.evidence.baseline_weight), 2 * Number(conf.evidence.baseline_n)); // sampled at 0.5
    assert.equal(conf.window_end - conf.window_start, 2 * min);
    assert.equal(
      conf.scope_command,
      `dlog scope --model loan-approver:2.5.0 --endpoint loan-api --since ${new Date(conf.window_start).toISOString()} --until ${new Date(conf.window_end).toISOString()}`,
    );
    const mix = raised.find((a) => a.rule === 'decision-mix-shift')!;
    assert.ok(Number(mix.evidence.psi) >= 0.2, mix.evidence.psi);
    assert.match(mix.scope_command, /--model loan-approver:2\.5\.0 /);

    // Restart: the new instance rebuilds windows and suppression from the committed input, so
    // the still-bad canary does not alert again within the suppression window.
    await alerter!.stop();
    alerter = await createAlerter({ kafka, config, log, rules });
    await alerter.start();
    assert.ok(alerter.stats.replayed >= first.length, `replayed ${alerter.stats.replayed}`);
    const more = traffic(base, 6, 9);
    await send(more);
    await waitFor(() => alerter!.stats.decisions === first.length + more.length, { timeoutMs: 30_000, what: 'new input processed after restart' });
    assert.equal(alerter.stats.late, 0);
    assert.equal(alerter.stats.alerts, 0);
    assert.ok(alerter.stats.suppressed >= 2, `suppressed after restart ${alerter.stats.suppressed}`);
    assert.equal(out.messages.length, raised.length);
  });
});

describe('alerter baselines on the real stack', () => {
  const { prefix, config, kafka, input, type, alertType } = stack('alertbase');
  // Three hours ago: older than anything the restart's input replay reaches back to (the longest
  // window, lateness and suppression: about an hour here; and the windows still open at the
  // checkpoint), as when a predecessor retired long ago.
  const base = Math.floor((Date.now() - 180 * min) / min) * min;
  let producer: Producer;
  let schemaId: number;
  let alerter: Alerter | undefined;
  let out: Collected;
  let stored: Collected;

  /** One version alone on the endpoint, minutes [from, to) of event time from `base`. */
  function only(version: string, from: number, to: number, meanConf: number, approve: number): EnrichedDecisionRecord[] {
    const r = rng(from * 7 + 3);
    const list: EnrichedDecisionRecord[] = [];
    for (let m = from; m < to; m++) {
      for (let i = 0; i < 50; i++) list.push(decision(m * 100 + i, base + m * min + Math.floor((i / 50) * min), version, meanConf + r() * 0.1, r() < approve ? 'approved' : 'declined', 1));
    }
    return list;
  }
  const send = (records: EnrichedDecisionRecord[]) =>
    producer.send({ topic: input, messages: records.map((d) => ({ key: d.event_id, value: encodeFramed(type, schemaId, d), timestamp: String(d.ts) })) });

  before(async () => {
    alerter = await createAlerter({ kafka, config, log, rules });
    const url = config.schemaRegistryUrl;
    schemaId = await registerAvro(createRegistry(url), url, valueSubject(input), loadSchema('enriched-decision'));
    producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    out = await collect(`${prefix}alerts.v1`);
    stored = await collect(`${prefix}alerter.baselines`);
  });
  after(async () => {
    await alerter?.stop();
    await producer?.disconnect();
    await out?.stop();
    await stored?.stop();
  });

  it('judges a rollout against a predecessor retired long before a restart: the baselines come back from their topic, not the replay', async () => {
    // Input waits before each start, so the startup wait holds windows until every partition has
    // delivered (sent after a start, one partition's first batch could close windows early).
    const incumbent = only('2.4.1', 0, 5, 0.85, 0.7);
    await send(incumbent);
    // Another endpoint ten minutes later on every partition: the watermark passes all of the
    // incumbent's windows, so none is still open at the checkpoint (and read again at restart).
    const later = Array.from({ length: 6 }, (_, p) => ({ ...decision(9_000 + p, base + 15 * min, '1.0.0', 0.9, 'ok', 1), endpoint: 'other-api' }));
    for (const [p, d] of later.entries()) await producer.send({ topic: input, messages: [{ partition: p, key: d.event_id, value: encodeFramed(type, schemaId, d), timestamp: String(d.ts) }] });
    await alerter!.start();
    await waitFor(() => alerter!.stats.decisions === incumbent.length + later.length, { timeoutMs: 30_000, what: 'the incumbent processed' });
    // Both comparison rules wrote 2.4.1's last full window, in the transaction of its batch
    // (beside the checkpoint, under a key of its own).
    const baselines = () => stored.messages.filter((m) => String(m.key) !== '"checkpoint"');
    await waitFor(() => new Set(baselines().map((m) => JSON.parse(String(m.key))[0])).size === 2, { timeoutMs: 30_000, what: 'baselines on the topic' });
    assert.ok(baselines().every((m) => JSON.parse(String(m.key)).slice(1).join(':') === 'loan-api:loan-approver:2.4.1'));
    assert.ok(stored.messages.some((m) => String(m.key) === '"checkpoint"'), 'the checkpoint on the topic');
    assert.equal(alerter!.stats.alerts, 0);
    await alerter!.stop();

    // 2.5.0 replaces it entirely, with lower confidence and a different mix.
    const rollout = only('2.5.0', 20, 25, 0.65, 0.3);
    await send(rollout);
    alerter = await createAlerter({ kafka, config, log, rules });
    await alerter.start();
    assert.equal(alerter.stats.replayed, later.length, 'the incumbent is older than the replay reaches');
    assert.equal(alerter.stats.baselinesRestored, 2);
    assert.equal(alerter.stats.baselinesUnreadable, 0);
    const conf = await waitFor(() => out.messages.map((m) => alertType.fromBuffer(m.value!.subarray(5)) as AlertRecord).find((a) => a.rule === 'confidence-drop'), {
      timeoutMs: 30_000,
      what: 'a confidence alert for the rollout against its predecessor',
    });
    assert.equal(conf.model_version, '2.5.0');
    assert.equal(conf.evidence.baseline_source, 'predecessor');
    assert.equal(conf.evidence.baseline_version, '2.4.1');
    assert.equal(conf.evidence.baseline_window_end, new Date(base + 6 * min).toISOString());
    await waitFor(() => alerter!.stats.decisions === later.length + rollout.length, { timeoutMs: 30_000, what: 'the rollout processed' });
  });
});

describe('alerter restarts on the real stack', () => {
  // A partition is quiet after 2 s without a batch, so a test need not wait out the shipped 30 s.
  const quickRules = parseRules(`
watermark: { allowed_lateness: 5s, idle_partition_after: 2s, startup_wait: 20s }
rules:
  - { name: confidence-drop, kind: confidence_drop, window: { size: 2m, hop: 1m }, min_samples: 40, min_drop: 0.05, suppress_for: 1h }
`);
  let cleanup: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
    cleanup = [];
  });

  async function pipeline(name: string) {
    const s = stack(name);
    const url = s.config.schemaRegistryUrl;
    const schemaId = await registerAvro(createRegistry(url), url, valueSubject(s.input), loadSchema('enriched-decision'));
    const producer = s.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    cleanup.push(() => producer.disconnect());
    const send = (partition: number, records: EnrichedDecisionRecord[]) =>
      producer.send({ topic: s.input, messages: records.map((d) => ({ partition, key: d.event_id, value: encodeFramed(s.type, schemaId, d) })) });
    const start = async (kafka: Kafka = s.kafka, instanceId = s.config.instanceId) => {
      const a = await createAlerter({ kafka, config: { ...s.config, instanceId }, log, rules: quickRules });
      cleanup.push(() => a.stop());
      return a;
    };
    return { ...s, send, start };
  }

  /** Six minutes from `base` on one partition: the incumbent and a worse canary, one decision of each a second. */
  const canary = (base: number, tag: number) => Array.from({ length: 6 * 60 }, (_, s) => [decision(tag + s, base + s * 1000, '2.4.1', 0.9, 'approved', 1), decision(tag + s, base + s * 1000, '2.5.0', 0.7, 'approved', 1)]).flat();

  it('sends nothing again after a restart when a partition had gone quiet before it (the checkpoint, not the re-read input, says what was sent)', async () => {
    const { prefix, alertType, send, start } = await pipeline('alertquiet');
    const base = Math.floor((Date.now() - 30 * min) / min) * min;
    let alerter = await start();
    const out = await collect(`${prefix}alerts.v1`);
    cleanup.push(() => out.stop());
    const alerts = () => out.messages.map((m) => alertType.fromBuffer(m.value!.subarray(5)) as AlertRecord);
    // Partition 1: a minute of another endpoint's traffic, then nothing. Partition 0: six minutes of the canary.
    await send(1, Array.from({ length: 60 }, (_, i) => ({ ...decision(i, base + i * 1000, '1.0.0', 0.8, 'ok', 1), endpoint: 'other-api' })));
    await send(0, canary(base, 0));
    await alerter.start();
    // Partition 0 goes on; once partition 1 is quiet, its batches close the windows.
    let t = base + 6 * min;
    let k = 100_000;
    const trickle = () => send(0, [decision(k++, (t += 10_000), '2.4.1', 0.9, 'approved', 1)]);
    await waitFor(async () => (await trickle(), alerter.stats.alerts > 0), { timeoutMs: 30_000, intervalMs: 300, what: 'the canary alert' });
    await waitFor(() => out.messages.length === alerter.stats.alerts, { timeoutMs: 10_000, what: 'collector caught up' });
    const sent = alerts();
    assert.deepEqual(sent.map((a) => `${a.rule} ${a.model_version}`), ['confidence-drop 2.5.0']);

    await alerter.stop();
    alerter = await start();
    await alerter.start();
    // Partition 1, read again, counts as just heard from until it is quiet again; then windows
    // past the checkpoint close. Before the checkpoint, the windows it held back closed twice.
    await waitFor(async () => (await trickle(), alerter.stats.windows > 0), { timeoutMs: 30_000, intervalMs: 300, what: 'a window closed after the restart' });
    await waitFor(() => out.messages.length === sent.length + alerter.stats.alerts, { timeoutMs: 10_000, what: 'collector caught up' });
    const ids = alerts().map((a) => a.alert_id);
    assert.equal(new Set(ids).size, ids.length, `an alert went out twice: ${ids.join(' ')}`);
    assert.equal(alerter.stats.alerts, 0);
    assert.equal(alerter.stats.late, 0);
    assert.ok(alerter.stats.restoredClosedUpTo! >= sent[0]!.window_end);
  });

  it('loses no alert to a crash during the startup wait: the partition committed alone closes nothing', async () => {
    const { prefix, kafka, input, alertType, send, start } = await pipeline('alertcrash');
    const base = Math.floor((Date.now() - 30 * min) / min) * min;
    const alerter = await start();
    const out = await collect(`${prefix}alerts.v1`);
    cleanup.push(() => out.stop());
    await send(0, canary(base, 0));
    await send(1, canary(base, 1_000));
    // What a crash leaves when partition 0's first batch committed while the startup wait held
    // windows for partition 1 (nothing sent yet), and partition 1's never did: that batch's
    // transaction also wrote the checkpoint of a first start, "nothing closed".
    const admin = kafka.admin();
    const producer = kafka.producer();
    await Promise.all([admin.connect(), producer.connect()]);
    try {
      const high = (await admin.fetchTopicOffsets(input)).find((e) => e.partition === 0)!.high;
      await admin.setOffsets({ groupId: `${prefix}dlog-alerter`, topic: input, partitions: [{ partition: 0, offset: high }] });
      await producer.send({ topic: `${prefix}alerter.baselines`, messages: [{ key: '"checkpoint"', value: '{"format":1,"closed_up_to":null,"last_fired":[]}' }] });
    } finally {
      await Promise.all([admin.disconnect(), producer.disconnect()]);
    }
    await alerter.start();
    assert.equal(alerter.stats.replayed, 6 * 60 * 2);
    const conf = await waitFor(() => out.messages.map((m) => alertType.fromBuffer(m.value!.subarray(5)) as AlertRecord).find((a) => a.rule === 'confidence-drop'), {
      timeoutMs: 20_000,
      what: 'the canary alert, on both partitions',
    });
    assert.equal(conf.model_version, '2.5.0');
    // Both partitions' decisions in the window, one 2.5.0 a second on each.
    const seconds = (Math.min(conf.window_end, base + 6 * min) - Math.max(conf.window_start, base)) / 1000;
    assert.equal(Number(conf.evidence.observed_n), 2 * seconds);
    await waitFor(() => alerter.stats.decisions === 2 * 6 * 60 * 2, { timeoutMs: 20_000, what: 'all input counted' });
    assert.equal(alerter.stats.late, 0);
  });
  it('sends nothing again after an upgrade from an alerter that kept no checkpoint: the windows it had closed close silently', async () => {
    const { prefix, kafka, input, send, start } = await pipeline('alertupgrade');
    const base = Math.floor((Date.now() - 30 * min) / min) * min;
    const alerter = await start();
    const out = await collect(`${prefix}alerts.v1`);
    cleanup.push(() => out.stop());
    // What the alerter before checkpoints leaves: the canary's input committed (its alert sent
    // then), nothing on alerter.baselines.
    await send(0, canary(base, 0));
    const admin = kafka.admin();
    await admin.connect();
    try {
      const high = (await admin.fetchTopicOffsets(input)).find((e) => e.partition === 0)!.high;
      await admin.setOffsets({ groupId: `${prefix}dlog-alerter`, topic: input, partitions: [{ partition: 0, offset: high }] });
    } finally {
      await admin.disconnect();
    }
    await alerter.start();
    assert.equal(alerter.stats.resumed, 'closed silently');
    const closedAtStart = alerter.stats.windows;
    let t = base + 6 * min;
    let k = 100_000;
    await waitFor(async () => (await send(0, [decision(k++, (t += 10_000), '2.4.1', 0.9, 'approved', 1)]), alerter.stats.windows > closedAtStart), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'a window closed after the upgrade',
    });
    // Before, every window of the re-read lookback closed again here, and the canary's alert went out a second time.
    assert.equal(alerter.stats.alerts, 0);
    assert.equal(out.messages.length, 0);
  });

  it('takes over what the old instance sent after the new one read the checkpoint (a rolling update)', async () => {
    const { prefix, kafka, alertType, send, start } = await pipeline('alertoverlap');
    const base = Math.floor((Date.now() - 30 * min) / min) * min;
    const old = await start(kafka, 'old');
    const out = await collect(`${prefix}alerts.v1`);
    cleanup.push(() => out.stop());
    const alerts = () => out.messages.map((m) => alertType.fromBuffer(m.value!.subarray(5)) as AlertRecord);
    // Three minutes of the incumbent alone: the old instance closes windows and checkpoints.
    const incumbent = Array.from({ length: 180 }, (_, s) => decision(s, base + s * 1000, '2.4.1', 0.9, 'approved', 1));
    await send(0, incumbent);
    await old.start();
    await waitFor(() => old.stats.decisions === incumbent.length && old.stats.windows > 0, { timeoutMs: 20_000, what: 'the old instance closed windows' });

    // The new instance reads the checkpoint at its start, then waits (its first group offsets read) ...
    let reached!: () => void;
    let release!: () => void;
    const atGate = new Promise<void>((r) => (reached = r));
    const gate = new Promise<void>((r) => (release = r));
    let gated = false;
    const held = new Proxy(kafka, {
      get(target, prop, recv) {
        if (prop !== 'admin') return Reflect.get(target, prop, recv);
        return () => {
          const a = target.admin();
          const fetchOffsets = a.fetchOffsets.bind(a);
          a.fetchOffsets = (async (x: Parameters<typeof fetchOffsets>[0]) => {
            if (!gated) {
              gated = true;
              reached();
              await gate;
            }
            return fetchOffsets(x);
          }) as typeof a.fetchOffsets;
          return a;
        };
      },
    });
    const next = await start(held, 'new');
    const started = next.start();
    await atGate;
    // ... while the old one goes on: the canary arrives and it alerts, then it stops.
    const rest = Array.from({ length: 6 * 60 }, (_, i) => i + 180).flatMap((s) => [decision(s, base + s * 1000, '2.4.1', 0.9, 'approved', 1), decision(s, base + s * 1000, '2.5.0', 0.7, 'approved', 1)]);
    await send(0, rest);
    await waitFor(() => old.stats.alerts > 0 && old.stats.decisions === incumbent.length + rest.length, { timeoutMs: 20_000, what: 'the old instance alerted' });
    await old.stop();
    await waitFor(() => out.messages.length === old.stats.alerts, { timeoutMs: 10_000, what: 'collector caught up' });
    const sent = alerts().map((a) => a.alert_id);
    release();
    await started;

    let t = base + 9 * min;
    let k = 100_000;
    await waitFor(async () => (await send(0, [decision(k++, (t += 10_000), '2.4.1', 0.9, 'approved', 1)]), next.stats.windows > 0), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'the new instance closed a window',
    });
    // Before, it closed windows from the checkpoint it read at start and sent the old one's alert again.
    assert.equal(next.stats.alerts, 0);
    assert.equal(next.stats.checkpointsTakenOver, 1);
    assert.deepEqual(alerts().map((a) => a.alert_id), sent);
  });
});

describe('an input added by an upgrade', () => {
  it('starts where the replay does, not at the beginning of its retention; an input with offsets is left alone', async () => {
    const { kafka } = stack('upgrade');
    const topic = unique('added-input');
    const groupId = unique('added-group');
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer();
    await producer.connect();
    try {
      await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1 }] });
      const now = Date.now();
      const day = 24 * 60 * min;
      // Five rows of two days ago, three of now.
      await producer.send({ topic, messages: [0, 1, 2, 3, 4].map((i) => ({ value: `old ${i}`, timestamp: String(now - 2 * day + i) })) });
      await producer.send({ topic, messages: [5, 6, 7].map((i) => ({ value: `new ${i}`, timestamp: String(now + i) })) });
      await startTopicAt(kafka, log, groupId, topic, now - day);
      const offsetOf = async () => Number((await admin.fetchOffsets({ groupId, topics: [topic] }))[0]!.partitions[0]!.offset);
      assert.equal(await offsetOf(), 5, 'the rows older than the replay are skipped');
      await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '7' }] });
      await startTopicAt(kafka, log, groupId, topic, now - 3 * day);
      assert.equal(await offsetOf(), 7, 'offsets the group has are kept');
    } finally {
      await producer.disconnect();
      await admin.disconnect();
    }
  });
});
