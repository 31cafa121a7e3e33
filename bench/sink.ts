/**
 * Sink throughput into embedded ClickHouse: N enriched decisions are produced to a fresh topic
 * first, then the sink is timed from start until all N rows are written (overall), and over the
 * last 90% of the rows (steady state: consumer group join and the first fetches excluded).
 * Baselines in the same run insert the same rows into a copy of the table in the same embedded
 * store (chDB allows one engine per process), in same-size batches, with no Kafka: the Avro
 * container insert the sink uses (the engine's own ceiling for these rows), and pre-serialised
 * JSONEachRow (the path the sink took before, and still takes for a ClickHouse server).
 *
 *   npx tsx bench/sink.ts [rows=300000] [batchRows=50000]
 */
import { loadConfig } from '@dlog/config';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import { createLogger, usableCores } from '@dlog/runtime';
import { createStore, migrate } from '@dlog/store';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { avroType, loadSchema } from '@dlog/contracts';
import { createSink, produceSamples, sampleEnrichedDecision, sinkNativeClient, toDecisionRow } from '../services/sink/src/index.js';
import { avroInsertSql, avroReaders, ContainerBuilder, decisionColumns, splitForReaders } from '../services/sink/src/avro-rows.js';
import { requireStack } from './require-stack.js';

const rows = Number(process.argv[2] ?? 300_000);
const batchRows = Number(process.argv[3] ?? 50_000);
const config = loadConfig();
await requireStack(config);
const log = createLogger({ name: 'bench-sink', level: process.env.LOG_LEVEL ?? 'warn' });
const run = `bench-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
const prefix = `${run}.`;
const topic = `${prefix}decisions.enriched.v1`;

let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 50);

const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'bench-sink', log });
const admin = kafka.admin();
await admin.connect();
const def = loadTopicDefinitions().find((d) => d.name === 'decisions.enriched.v1')!;
await ensureTopics(admin, [{ ...def, name: topic }]);

process.stdout.write(`producing ${rows} enriched decisions to ${topic} ...\n`);
// Made and produced a slice at a time, and made again for the baselines: 300k records held in
// this process while the sink runs made V8 mark them at every major GC, and GC was then ~45% of
// the sink's CPU (perf); the sink's own process holds no such heap.
const record = (i: number) => sampleEnrichedDecision(i, { runId: run });
const slice = (from: number) => Array.from({ length: Math.min(20_000, rows - from) }, (_, k) => record(from + k));
const t0p = performance.now();
for (let i = 0; i < rows; i += 20_000) {
  await produceSamples(kafka, config.schemaRegistryUrl, topic, 'enriched-decision', slice(i), (r) => r.event_id, { chunk: 600 });
}
process.stdout.write(`produced in ${((performance.now() - t0p) / 1000).toFixed(1)} s\n`);

const storeDir = mkdtempSync(path.join(tmpdir(), 'dlog-bench-sink-'));
const store = await createStore({ database: 'dlog', dataDir: storeDir, createDatabase: true, log });
await migrate(store);
const count = async (table: string) => {
  const rs = await store.client.query({ query: `SELECT count() AS n FROM ${table}`, format: 'JSONEachRow' });
  return Number((await rs.json<{ n: number }>())[0]!.n);
};

// --- the sink: Kafka → decode → rows → ClickHouse, offsets committed -----------------------------
peakRss = process.memoryUsage.rss();
// DLOG_KAFKA_CLIENT picks the consumer as in the sink itself: kafkajs unless it says native.
const native = sinkNativeClient(config.kafkaClient, config.kafkaBrokers, 'bench-sink', log);
const sink = createSink({
  kafka,
  store,
  log,
  config: { ...config, sinkGroupId: `${run}-sink`, topicPrefix: prefix, sinkBatchRows: batchRows },
  tables: undefined,
  native,
});
process.stdout.write(`timing the sink ...\n`);
const cpuSink0 = process.cpuUsage();
const t0 = performance.now();
await sink.start();
const written = () => sink.stats().find((t) => t.table === 'decisions')!.rowsWritten;
let tenth = 0;
let atTenth = 0;
while (written() < rows) {
  await new Promise((r) => setTimeout(r, 10));
  if (!tenth && written() >= rows / 10) {
    tenth = performance.now();
    atTenth = written();
  }
}
const sinkEnd = performance.now();
const sinkSeconds = (sinkEnd - t0) / 1000;
// CPU of this process (JS, librdkafka and ClickHouse threads) per row; the broker's is not in it.
const cpuPerRow = (u: NodeJS.CpuUsage) => (u.user + u.system) / rows;
const sinkCpu = cpuPerRow(process.cpuUsage(cpuSink0));
// From the first time a tenth was written: the rows written since, over the time since.
const steadyRate = ((rows - atTenth) / (sinkEnd - tenth)) * 1000;
const sinkPeakRss = peakRss;
const asAvro = sink.stats().find((t) => t.table === 'decisions')!.rowsWrittenAsAvro;
await sink.stop();
if ((await count('decisions')) !== rows) throw new Error(`expected ${rows} rows, found ${await count('decisions')}`);

// --- baseline 1: the same rows as an Avro container, same batches, no Kafka ---------------------
await store.client.command({ query: 'CREATE TABLE decisions_avro AS decisions' });
const type = avroType('enriched-decision');
const bodies = Array.from({ length: rows }, (_, i) => type.toBuffer(record(i)));
const builder = new ContainerBuilder(JSON.stringify(loadSchema('enriched-decision')));
const dir = mkdtempSync(path.join(tmpdir(), 'dlog-bench-avro-'));
const mapping = { schemaJson: '', columns: decisionColumns };
const cpuAvro0 = process.cpuUsage();
const ta = performance.now();
for (let i = 0; i < bodies.length; i += batchRows) {
  const batch = bodies.slice(i, i + batchRows);
  // Cut as the sink cuts a batch: one file per reader, read in parallel.
  const files = splitForReaders(batch).map((part, f) => {
    const file = path.join(dir, `batch-${f}.avro`);
    writeFileSync(file, builder.build(part));
    return file;
  });
  await store.client.command({ query: avroInsertSql('decisions_avro', mapping, files, `bench-${i}`) });
}
const avroSeconds = (performance.now() - ta) / 1000;
const avroCpu = cpuPerRow(process.cpuUsage(cpuAvro0));

// --- baseline 2: the same rows, same batch size, pre-serialised JSONEachRow (no Kafka, no Avro) --
await store.client.command({ query: 'CREATE TABLE decisions_baseline AS decisions' });
const lines = Array.from({ length: rows }, (_, i) => JSON.stringify(toDecisionRow(record(i))));
const t1 = performance.now();
for (let i = 0; i < lines.length; i += batchRows) {
  const rs = await store.client.exec({
    query: 'INSERT INTO decisions_baseline FORMAT JSONEachRow',
    values: Readable.from([lines.slice(i, i + batchRows).join('\n')]),
  });
  rs.stream.destroy();
}
const baseSeconds = (performance.now() - t1) / 1000;
clearInterval(sampler);

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
process.stdout.write(
  [
    `sink (Kafka on ${native ? "librdkafka" : "kafkajs"} → ClickHouse embedded, ${rows} rows, batches of ${batchRows}; ${fmt(asAvro)} read by ClickHouse as Avro):`,
    `  overall ${sinkSeconds.toFixed(2)} s, ${fmt(rows / sinkSeconds)} rows/s; steady state ${fmt(steadyRate)} rows/s; ${sinkCpu.toFixed(1)} µs CPU/row; peak RSS ${fmt(sinkPeakRss / 2 ** 20)} MiB`,
    `baseline, Avro container insert, ${avroReaders} readers, no Kafka (the engine's ceiling): ${avroSeconds.toFixed(2)} s, ${fmt(rows / avroSeconds)} rows/s, ${avroCpu.toFixed(1)} µs CPU/row`,
    `baseline, pre-serialised JSONEachRow, no Kafka (the old path):    ${baseSeconds.toFixed(2)} s, ${fmt(rows / baseSeconds)} rows/s`,
    `cores busy at 100k rows/s at these costs: the sink process ${(sinkCpu / 10).toFixed(2)}, the engine's insert alone ${(avroCpu / 10).toFixed(2)} (this machine: ${usableCores()}, the broker's share not counted)`,
    `sink steady / Avro baseline: ${(steadyRate / (rows / avroSeconds)).toFixed(2)}; sink overall / JSON baseline: ${(baseSeconds / sinkSeconds).toFixed(2)}; peak RSS of the whole run ${fmt(peakRss / 2 ** 20)} MiB`,
    '',
  ].join('\n'),
);
// Everything this run made: the sink's topics (all under the run's prefix) and both directories.
await admin.deleteTopics({ topics: (await admin.listTopics()).filter((t) => t.startsWith(prefix)) }).catch(() => undefined);
await admin.disconnect();
await store.close();
rmSync(storeDir, { recursive: true, force: true });
rmSync(dir, { recursive: true, force: true });
