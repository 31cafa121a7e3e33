/**
 * Events/s through the gate on the real broker, for ~1 KB Avro events carrying five
 * personal-data fields, next to a baseline measured in the same run: a bare kafkajs
 * consume-and-produce of the same bytes (no decoding, no transactions). Medians of several runs.
 *
 * Two rates per side: overall (start, group join and JIT warm-up included) and steady state, the
 * last 90% of the events over the time they took, which is what a long-running gate sustains.
 * Both are measured the same way for the baseline and the gate; the gate counts an event when
 * its transaction has committed.
 *
 *   npm run bench:gate            (BENCH_EVENTS=100000 BENCH_RUNS=3 to change the size)
 */
import { randomBytes } from 'node:crypto';
import { loadConfig } from '@dlog/config';
import { avroType, createRegistry, canonicalJson, inputHash, loadSchema, registerAvro, valueSubject } from '@dlog/contracts';
import { createKafka, ensureTopics, loadTopicDefinitions, nativeClientFor, withPrefix } from '@dlog/kafka';
import { createGate } from '@dlog/gate';
import { createLogger } from '@dlog/runtime';
import { requireStack } from './require-stack.js';

const events = Number(process.env.BENCH_EVENTS ?? 200_000);
const runs = Number(process.env.BENCH_RUNS ?? 3);
const log = createLogger({ name: 'bench', level: 'warn' });
const prefix = `bench-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}.`;
const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' });
await requireStack(config);
const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'bench-gate', log });
const rawTopic = `${prefix}inference.raw`;

const admin = kafka.admin();
await admin.connect();
await ensureTopics(admin, withPrefix(loadTopicDefinitions(), prefix));

// --- input: N framed Avro events of about 1 KB with five personal-data fields -----------------
const registry = createRegistry(config.schemaRegistryUrl);
const schemaId = await registerAvro(registry, config.schemaRegistryUrl, valueSubject(rawTopic), loadSchema('inference-event'));
const type = avroType('inference-event');
const values: Buffer[] = [];
for (let i = 0; i < events; i++) {
  const input = {
    applicant: { email: `person${i}@example.com`, name: `Person ${i}`, phone: `+44 20 7946 ${String(i % 10_000).padStart(4, '0')}`, ssn: '219-09-9999', iban: 'DE89 3704 0044 0532 0130 00' },
    features: { income: 50_000 + i, tenure_months: i % 120, region: 'north', score_a: 0.42, score_b: 0.17, history: [1, 0, 1, 1, 0, 1, 1, 1] },
    notes: 'customer asked about the rate; no other remarks were recorded for this application in the system today',
  };
  const body = type.toBuffer({
    event_id: `ev-${i}`,
    request_id: `req-${i}`,
    ts: Date.now(),
    endpoint: 'loan-api',
    decision_type: i % 2 ? 'loan_approval' : 'classification',
    tenant: null,
    model: { name: 'loan-approver', version: '2.4.1', digest: 'sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0' },
    image: { ref: 'registry.example/inference-loan:2.4.1', digest: 'sha256:aa' },
    config: { ref: 'configs/prod/loan-params:v3', params: { temperature: 0.1, top_p: 0.9, max_tokens: 256, thresholds: { approve: 0.7 }, extra: {} } },
    preprocessing: { ref: 'registry://preprocessing/loan-features:v7', digest: null },
    environment_digest: 'sha256:env',
    // As the SDK sends it: canonical (RFC 8785), so the gate can hash the text as it is.
    input_json: canonicalJson(input),
    input_hash: inputHash(input),
    output: { decision: i % 3 ? 'approved' : 'declined', confidence: 0.87, scores: { approved: 0.87, declined: 0.13 }, token_logprobs: null, output_json: null },
    trajectory: null,
    producer: { service: 'loan-api', sdk: 'bench', host: null },
    attributes: { region: 'eu' },
  });
  const framed = Buffer.allocUnsafe(body.length + 5);
  framed[0] = 0;
  framed.writeInt32BE(schemaId, 1);
  body.copy(framed, 5);
  values.push(framed);
}
const avgBytes = Math.round(values.reduce((s, v) => s + v.length, 0) / values.length);
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await producer.connect();
for (let i = 0; i < events; i += 1_000) {
  await producer.send({ topic: rawTopic, acks: -1, messages: values.slice(i, i + 1_000).map((value, j) => ({ key: `req-${i + j}`, value })) });
}
await producer.disconnect();

// --- baseline: consume and produce the same bytes, commit after each batch ----------------------
interface Rates {
  overall: number;
  steady: number;
}

/** Rates from the start, and from the first moment at least 10% were done (`doneThen` of them). */
function rates(t0: number, tenth: number, doneThen: number, end: number): Rates {
  return { overall: (events / (end - t0)) * 1000, steady: ((events - doneThen) / (end - tenth)) * 1000 };
}

async function baseline(run: number): Promise<Rates> {
  // The clock starts before anything connects, as it does for the gate (whose start() connects
  // its producer and consumer and joins the group).
  const t0 = performance.now();
  const out = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await out.connect();
  const consumer = kafka.consumer({ groupId: `${prefix}baseline-${run}`, maxBytesPerPartition: 4 * 1024 * 1024, maxBytes: 32 * 1024 * 1024, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic: rawTopic, fromBeginning: true });
  let seen = 0;
  let tenth = 0;
  let atTenth = 0;
  let resolveDone!: (ms: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (let i = 0; i < batch.messages.length; i += 700) {
        await out.send({ topic: `${prefix}baseline.out`, acks: -1, messages: batch.messages.slice(i, i + 700).map((m) => ({ key: m.key, value: m.value })) });
      }
      seen += batch.messages.length;
      if (!tenth && seen >= events / 10) {
        tenth = performance.now();
        atTenth = seen;
      }
      if (seen >= events) resolveDone(performance.now());
    },
  });
  const end = await done;
  await consumer.disconnect();
  await out.disconnect();
  return rates(t0, tenth, atTenth, end);
}

/** The same relay on librdkafka, the client the gate itself runs on when it is installed. */
const native = nativeClientFor(config.kafkaClient, config.kafkaBrokers, 'bench-gate');
async function nativeBaseline(run: number): Promise<Rates> {
  const K = native!.kafka;
  const brokers = config.kafkaBrokers.join(',');
  const t0 = performance.now();
  const out = new K.Producer({ 'metadata.broker.list': brokers, 'enable.idempotence': true, 'linger.ms': 5, 'queue.buffering.max.messages': 1_000_000, dr_cb: false });
  await new Promise<void>((res, rej) => out.connect({}, (e) => (e ? rej(e) : res())));
  const consumer = new K.KafkaConsumer({ 'metadata.broker.list': brokers, 'group.id': `${prefix}nbaseline-${run}`, 'enable.auto.commit': false }, { 'auto.offset.reset': 'earliest' });
  await new Promise<void>((res, rej) => consumer.connect({}, (e) => (e ? rej(e) : res())));
  consumer.setDefaultConsumeTimeout(50);
  consumer.subscribe([rawTopic]);
  let seen = 0;
  let tenth = 0;
  let atTenth = 0;
  while (seen < events) {
    const batch = await new Promise<import('node-rdkafka').Message[]>((res, rej) => consumer.consume(10_000, (e, m) => (e ? rej(e) : res(m))));
    if (batch.length === 0) continue;
    for (const m of batch) out.produce(`${prefix}baseline.out`, null, m.value, m.key);
    await new Promise<void>((res, rej) => out.flush(30_000, (e) => (e ? rej(e) : res())));
    const last = batch[batch.length - 1]!;
    consumer.commit({ topic: last.topic, partition: last.partition, offset: last.offset + 1 });
    seen += batch.length;
    if (!tenth && seen >= events / 10) {
      tenth = performance.now();
      atTenth = seen;
    }
  }
  const end = performance.now();
  await new Promise<void>((res) => consumer.disconnect(() => res()));
  await new Promise<void>((res) => out.disconnect(() => res()));
  return rates(t0, tenth, atTenth, end);
}

async function gateRun(run: number): Promise<Rates> {
  const p = `${prefix}run${run}.`;
  const gate = await createGate({
    kafka,
    config,
    log,
    groupId: `${p}gate`,
    topics: { decisions: `${p}decisions.v1`, counts: `${p}decision.counts.v1`, deadLetters: `${p}inference.dlq` },
  });
  const t0 = performance.now();
  let tenth = 0;
  let atTenth = 0;
  await gate.start();
  while (gate.committed < events) {
    await new Promise((r) => setTimeout(r, 5));
    if (!tenth && gate.committed >= events / 10) {
      tenth = performance.now();
      atTenth = gate.committed;
    }
  }
  const end = performance.now();
  await gate.stop();
  if (gate.stats.deadLettered > 0) throw new Error(`bench input was dead-lettered: ${JSON.stringify(gate.stats.byReason)}`);
  return rates(t0, tenth, atTenth, end);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base: Rates[] = [];
const nbase: Rates[] = [];
const gated: Rates[] = [];
for (let r = 0; r < runs; r++) {
  base.push(await baseline(r));
  if (native) nbase.push(await nativeBaseline(r));
  gated.push(await gateRun(r));
  const f = (x: Rates) => `${Math.round(x.overall)} overall, ${Math.round(x.steady)} steady`;
  process.stderr.write(`run ${r + 1}/${runs}: baseline ${f(base[r]!)} ev/s;${native ? ` librdkafka baseline ${f(nbase[r]!)} ev/s;` : ''} gate ${f(gated[r]!)} ev/s\n`);
}
await admin.deleteTopics({ topics: (await admin.listTopics()).filter((t) => t.startsWith(prefix)) }).catch(() => {});
await admin.disconnect();

const row = (label: string, pick: (x: Rates) => number, against = base) => {
  const b = median(against.map(pick));
  const g = median(gated.map(pick));
  const ratios = against.map((x, i) => pick(gated[i]!) / pick(x));
  console.log(`  ${label.padEnd(9)} baseline ${Math.round(b).toString().padStart(7)}   gate ${Math.round(g).toString().padStart(7)} events/s   ratio ${(g / b).toFixed(2)} (per run ${ratios.map((x) => x.toFixed(2)).join(', ')})`);
};
console.log(`\ngate throughput, ${events} events of ~${avgBytes} B (five personal-data fields), ${runs} runs, medians; threads ${config.gateThreads}`);
console.log(`  baseline: bare kafkajs consume+produce of the same bytes; gate (on ${native ? 'librdkafka' : 'kafkajs'}): decode, policy, PII, transactions`);
row('steady', (x) => x.steady);
row('overall', (x) => x.overall);
console.log('  target: gate >= 0.50 of the baseline');
if (native) {
  console.log('  against a bare librdkafka consume+produce of the same bytes (no decoding, no transactions):');
  row('steady', (x) => x.steady, nbase);
  row('overall', (x) => x.overall, nbase);
}
console.log(`  peak RSS  ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB (this process: producer, baseline and gate)`);
