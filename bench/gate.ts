/**
 * Events/s through the gate on the real broker, for ~1 KB Avro events carrying five
 * personal-data fields, next to a baseline measured in the same run: a bare kafkajs
 * consume-and-produce of the same bytes (no decoding, no transactions). Medians of several runs.
 *
 *   npm run bench:gate            (BENCH_EVENTS=100000 BENCH_RUNS=3 to change the size)
 */
import { randomBytes } from 'node:crypto';
import { loadConfig } from '@dlog/config';
import { avroType, createRegistry, inputHash, loadSchema, registerAvro, valueSubject } from '@dlog/contracts';
import { createKafka, ensureTopics, loadTopicDefinitions, withPrefix } from '@dlog/kafka';
import { createGate } from '@dlog/gate';
import { createLogger } from '@dlog/runtime';

const events = Number(process.env.BENCH_EVENTS ?? 100_000);
const runs = Number(process.env.BENCH_RUNS ?? 3);
const log = createLogger({ name: 'bench', level: 'warn' });
const prefix = `bench-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}.`;
const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' });
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
    input_json: JSON.stringify(input),
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
async function baseline(run: number): Promise<number> {
  const out = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await out.connect();
  const consumer = kafka.consumer({ groupId: `${prefix}baseline-${run}`, maxBytesPerPartition: 4 * 1024 * 1024, maxBytes: 32 * 1024 * 1024, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic: rawTopic, fromBeginning: true });
  let seen = 0;
  const t0 = performance.now();
  let resolveDone!: (ms: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (let i = 0; i < batch.messages.length; i += 700) {
        await out.send({ topic: `${prefix}baseline.out`, acks: -1, messages: batch.messages.slice(i, i + 700).map((m) => ({ key: m.key, value: m.value })) });
      }
      seen += batch.messages.length;
      if (seen >= events) resolveDone(performance.now() - t0);
    },
  });
  const ms = await done;
  await consumer.disconnect();
  await out.disconnect();
  return (events / ms) * 1000;
}

async function gateRun(run: number): Promise<number> {
  const p = `${prefix}run${run}.`;
  const gate = await createGate({
    kafka,
    config,
    log,
    groupId: `${p}gate`,
    topics: { decisions: `${p}decisions.v1`, counts: `${p}decision.counts.v1`, deadLetters: `${p}inference.dlq` },
  });
  const t0 = performance.now();
  await gate.start();
  while (gate.stats.kept + gate.stats.dropped + gate.stats.deadLettered < events) await new Promise((r) => setTimeout(r, 20));
  const ms = performance.now() - t0;
  await gate.stop();
  if (gate.stats.deadLettered > 0) throw new Error(`bench input was dead-lettered: ${JSON.stringify(gate.stats.byReason)}`);
  return (events / ms) * 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base: number[] = [];
const gated: number[] = [];
for (let r = 0; r < runs; r++) {
  base.push(await baseline(r));
  gated.push(await gateRun(r));
  process.stderr.write(`run ${r + 1}/${runs}: baseline ${Math.round(base[r]!)} ev/s, gate ${Math.round(gated[r]!)} ev/s\n`);
}
await admin.deleteTopics({ topics: (await admin.listTopics()).filter((t) => t.startsWith(prefix)) }).catch(() => {});
await admin.disconnect();

const mb = median(base);
const mg = median(gated);
console.log(`\ngate throughput, ${events} events of ~${avgBytes} B (five personal-data fields), ${runs} runs, medians`);
console.log(`  baseline  bare kafkajs consume+produce   ${Math.round(mb).toString().padStart(8)} events/s`);
console.log(`  gate      decode, policy, PII, txn        ${Math.round(mg).toString().padStart(8)} events/s`);
console.log(`  ratio     gate / baseline                 ${(mg / mb).toFixed(2).padStart(8)}   (target >= 0.50)`);
console.log(`  peak RSS  ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB (this process: producer, baseline and gate)`);
