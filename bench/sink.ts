/**
 * Sink throughput into embedded ClickHouse: N enriched decisions are produced to a fresh topic
 * first, then the sink is timed from start until all N rows are queryable. A baseline in the same
 * run inserts the same rows with a bare @clickhouse/client insert in same-size batches (no Kafka,
 * no Avro) into a copy of the table in the same embedded store (chDB allows one engine per process).
 *
 *   npx tsx bench/sink.ts [rows=300000] [batchRows=50000]
 */
import { loadConfig } from '@dlog/config';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import { createLogger } from '@dlog/runtime';
import { createStore, migrate } from '@dlog/store';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { createSink, produceSamples, sampleEnrichedDecision, toDecisionRow } from '../services/sink/src/index.js';

const rows = Number(process.argv[2] ?? 300_000);
const batchRows = Number(process.argv[3] ?? 50_000);
const config = loadConfig();
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
const records = Array.from({ length: rows }, (_, i) => sampleEnrichedDecision(i, { runId: run }));
const t0p = performance.now();
await produceSamples(kafka, config.schemaRegistryUrl, topic, 'enriched-decision', records, (r) => r.event_id, { chunk: 600 });
process.stdout.write(`produced in ${((performance.now() - t0p) / 1000).toFixed(1)} s\n`);

const store = await createStore({ database: 'dlog', dataDir: mkdtempSync(path.join(tmpdir(), 'dlog-bench-sink-')), createDatabase: true, log });
await migrate(store);
const count = async (table: string) => {
  const rs = await store.client.query({ query: `SELECT count() AS n FROM ${table}`, format: 'JSONEachRow' });
  return Number((await rs.json<{ n: number }>())[0]!.n);
};

// --- the sink: Kafka → decode → rows → ClickHouse, offsets committed -----------------------------
peakRss = process.memoryUsage.rss();
const sink = createSink({
  kafka,
  store,
  log,
  config: { ...config, sinkGroupId: `${run}-sink`, topicPrefix: prefix, sinkBatchRows: batchRows },
  tables: undefined,
});
const t0 = performance.now();
await sink.start();
while ((await count('decisions')) < rows) await new Promise((r) => setTimeout(r, 50));
const sinkSeconds = (performance.now() - t0) / 1000;
const sinkPeakRss = peakRss;
await sink.stop();

// --- baseline: the same rows, same batch size, bare client insert (no Kafka, no Avro) -----------
await store.client.command({ query: 'CREATE TABLE decisions_baseline AS decisions' });
const lines = records.map((r) => JSON.stringify(toDecisionRow(r)));
const t1 = performance.now();
for (let i = 0; i < lines.length; i += batchRows) {
  const rs = await store.client.exec({
    query: 'INSERT INTO decisions_baseline FORMAT JSONEachRow',
    values: Readable.from([lines.slice(i, i + batchRows).join('\n')]),
  });
  rs.stream.destroy();
}
const baseSeconds = (performance.now() - t1) / 1000;
const t2 = performance.now();
for (let i = 0; i < records.length; i += batchRows) {
  await store.client.insert({ table: 'decisions_baseline', values: records.slice(i, i + batchRows).map(toDecisionRow), format: 'JSONEachRow' });
}
const clientSeconds = (performance.now() - t2) / 1000;
clearInterval(sampler);

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
process.stdout.write(
  [
    `sink (Kafka → ClickHouse embedded, ${rows} rows, batches of ${batchRows}): ${sinkSeconds.toFixed(2)} s, ${fmt(rows / sinkSeconds)} rows/s, peak RSS ${fmt(sinkPeakRss / 2 ** 20)} MiB`,
    `baseline (pre-serialised JSONEachRow, client.exec, same batches):   ${baseSeconds.toFixed(2)} s, ${fmt(rows / baseSeconds)} rows/s`,
    `baseline (client.insert of row objects, same batches):              ${clientSeconds.toFixed(2)} s, ${fmt(rows / clientSeconds)} rows/s`,
    `sink / baseline(exec): ${(baseSeconds / sinkSeconds).toFixed(2)}; peak RSS of the whole run ${fmt(peakRss / 2 ** 20)} MiB`,
    '',
  ].join('\n'),
);
await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
await admin.disconnect();
await store.close();
