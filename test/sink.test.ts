import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createKafka, loadNativeKafka } from '@dlog/kafka';
import { createStore, migrate, type Store } from '@dlog/store';
import type { Admin, Kafka } from 'kafkajs';
import avro from 'avsc';
import { avroType, createRegistry, loadSchema, registerAvro, registryFetcher, valueSubject, type SchemaFetcher } from '@dlog/contracts';
import {
  createSink,
  produceSamples,
  sampleAlert,
  sampleArtifact,
  sampleCounts,
  sampleDeployment,
  sampleEdgeDecision,
  sampleEnrichedDecision,
  sinkTables,
  type Sink,
  type TableSpec,
} from '../services/sink/src/index.js';
import { config, log, tempDir, unique, waitFor } from './helpers.js';

/**
 * The ClickHouse sink on the real stack (Kafka, the registry, embedded chDB), each test with its
 * own topics (a random prefix), consumer group and data directory.
 */

async function scalar(store: Store, query: string): Promise<number> {
  const rs = await store.client.query({ query, format: 'JSONEachRow' });
  const rows = await rs.json<{ n: number | string }>();
  return Number(rows[0]?.n ?? 0);
}

async function committed(admin: Admin, groupId: string, topic: string): Promise<number> {
  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  return offsets[0]!.partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
}

async function createTopics(admin: Admin, prefix: string): Promise<void> {
  const { ensureTopics, loadTopicDefinitions } = await import('@dlog/kafka');
  const defs = new Map(loadTopicDefinitions().map((d) => [d.name, d]));
  await ensureTopics(
    admin,
    sinkTables.map((t) => ({ ...defs.get(t.topic)!, name: `${prefix}${t.topic}` })),
  );
}

/** A test's own topics (random prefix), a connected admin and a migrated embedded store. */
async function testBed(name: string): Promise<{ kafka: Kafka; admin: Admin; store: Store; prefix: string }> {
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'sink-test', log });
  const admin = kafka.admin();
  await admin.connect();
  const prefix = `${unique(name)}.`;
  await createTopics(admin, prefix);
  const store = await createStore({ database: 'dlog', dataDir: tempDir(name), createDatabase: true, log });
  await migrate(store);
  return { kafka, admin, store, prefix };
}

/** The sink's librdkafka consumer; the tests need it installed (.ci/run builds it). */
function native(): { kafka: NonNullable<ReturnType<typeof loadNativeKafka>>; brokers: string[]; clientId: string } {
  const kafka = loadNativeKafka();
  assert.ok(kafka, 'node-rdkafka must be installed where the tests run');
  return { kafka, brokers: config.kafkaBrokers, clientId: 'sink-test' };
}

describe('sink: enriched decisions, counts, artifacts, deployments, alerts into ClickHouse', () => {
  let kafka: Kafka;
  let admin: Admin;
  let store: Store;
  let sink: Sink | undefined;
  const prefix = `${unique('sink')}.`;
  const groupId = unique('sink-group');
  const runId = unique('run');

  before(async () => {
    kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'sink-test', log });
    admin = kafka.admin();
    await admin.connect();
    await createTopics(admin, prefix);
    store = await createStore({ database: 'dlog', dataDir: tempDir('sink'), createDatabase: true, log });
    await migrate(store);
  });
  after(async () => {
    await sink?.stop();
    await admin.disconnect();
    await store.close();
  });

  it('writes every record exactly once, with replays (same event twice upstream) hidden', async () => {
    const decisions = Array.from({ length: 5000 }, (_, i) => sampleEnrichedDecision(i, { runId }));
    // An upstream replay (the enricher re-sent a decision after a crash) must not be doubled.
    const replayed = decisions.slice(0, 50);
    const counts = Array.from({ length: 200 }, (_, i) => sampleCounts(i, { batchId: `${runId}-b${Math.floor(i / 4)}` }));
    const artifacts = Array.from({ length: 20 }, (_, i) => sampleArtifact(i, { runId }));
    const deployments = Array.from({ length: 5 }, (_, i) => sampleDeployment(i, { runId }));
    const alerts = Array.from({ length: 3 }, (_, i) => sampleAlert(i, { runId }));
    const url = config.schemaRegistryUrl;
    await produceSamples(kafka, url, `${prefix}decisions.enriched.v1`, 'enriched-decision', [...decisions, ...replayed], (r) => r.event_id);
    await produceSamples(kafka, url, `${prefix}decision.counts.v1`, 'decision-counts', [...counts, ...counts.slice(0, 10)], (r) => r.batch_id);
    await produceSamples(kafka, url, `${prefix}registry.artifacts`, 'artifact-event', artifacts, (r) => r.ref);
    await produceSamples(kafka, url, `${prefix}deployments.v1`, 'deployment-event', deployments, (r) => r.endpoint);
    await produceSamples(kafka, url, `${prefix}alerts.v1`, 'alert', alerts, (r) => r.alert_id);
    // A record that is not Avro, and one in the contract's framing that ClickHouse refuses (an
    // enum index past the contract's symbols, code 117, which stopped the embedded sink for
    // good): dead-lettered, never blocking the partition.
    const contract = loadSchema('enriched-decision') as unknown as { fields: { name: string; type: { symbols?: string[] } }[] };
    const wider = { ...contract, fields: contract.fields.map((f) => (f.name === 'tier' ? { ...f, type: { ...f.type, symbols: [...f.type.symbols!, 'bogus'] } } : f)) };
    const id = await registerAvro(createRegistry(config.schemaRegistryUrl), config.schemaRegistryUrl, valueSubject(`${prefix}decisions.enriched.v1`), loadSchema('enriched-decision'));
    const badTier = avro.Type.forSchema(wider as unknown as avro.Schema).toBuffer({ ...sampleEnrichedDecision(90_000, { runId }), tier: 'bogus' });
    const framed = Buffer.concat([Buffer.from([0, (id >>> 24) & 255, (id >>> 16) & 255, (id >>> 8) & 255, id & 255]), badTier]);
    const p = kafka.producer();
    await p.connect();
    await p.send({ topic: `${prefix}decisions.enriched.v1`, messages: [{ key: 'bad', value: Buffer.from('{"not":"avro"}') }, { key: 'bad-tier', value: framed }] });
    await p.disconnect();

    sink = createSink({
      kafka,
      store,
      log,
      native: native(),
      config: { ...config, sinkGroupId: groupId, topicPrefix: prefix, sinkBatchRows: 1000, sinkFlushIntervalMs: 200 },
    });
    await sink.start();
    // Made as topics.yaml defines it: a sink that made it otherwise drew a warning to recreate it
    // at every later `dlog up`.
    const dlqMeta = await admin.fetchTopicMetadata({ topics: [`${prefix}sink.dlq`] });
    const { loadTopicDefinitions } = await import('@dlog/kafka');
    assert.equal(dlqMeta.topics[0]!.partitions.length, loadTopicDefinitions().find((d) => d.name === 'sink.dlq')!.partitions);
    await waitFor(async () => (await scalar(store, 'SELECT count() AS n FROM decisions')) >= 5000 || undefined, {
      timeoutMs: 60_000,
      what: 'decisions in ClickHouse',
    });
    const expectedTotal = counts.reduce((n, c) => n + c.kept + c.dropped, 0);
    await waitFor(async () => (await scalar(store, 'SELECT sum(total) AS n FROM v_decision_totals')) === expectedTotal || undefined, {
      timeoutMs: 30_000,
      what: 'exact totals from counts',
    });
    await waitFor(async () => (await scalar(store, 'SELECT count() AS n FROM v_alerts')) === 3 || undefined, { timeoutMs: 30_000, what: 'alerts' });
    await waitFor(async () => (await committed(admin, `${prefix}${groupId}`, `${prefix}decisions.enriched.v1`)) === 5052 || undefined, {
      timeoutMs: 30_000,
      what: 'offsets committed past every decision and the bad records',
    });

    // The sink itself writes each Kafka record once; an upstream replay (a new record with an old
    // event_id) is written only if its batch was not checked, and the analysts' view hides it.
    const rows = await scalar(store, 'SELECT count() AS n FROM decisions');
    assert.ok(rows >= 5000 && rows <= 5050, `${rows} rows`);
    assert.equal(await scalar(store, 'SELECT uniqExact(event_id) AS n FROM decisions'), 5000);
    assert.equal(await scalar(store, 'SELECT count() AS n FROM v_decisions'), 5000, 'each decision once for analysts');
    assert.equal(await scalar(store, 'SELECT count() AS n FROM decision_counts FINAL'), 200, 'replayed deltas counted once');
    assert.equal(await scalar(store, 'SELECT count() AS n FROM v_artifacts'), 20);
    assert.equal(await scalar(store, 'SELECT count() AS n FROM v_lineage'), 40, 'two parents per artifact, from the materialized view');
    assert.equal(await scalar(store, 'SELECT count() AS n FROM v_deployments'), 5);

    // The mapping survives the round trip.
    const d = decisions[7]!;
    const rs = await store.client.query({
      query: `SELECT model_name, model_version, toUnixTimestamp64Milli(ts) AS ts, image_ref, config_ref, decision, weight, tier,
                     lineage.ref AS lineage_refs, artifacts.digest AS artifact_digests
              FROM v_decisions WHERE event_id = {id:String}`,
      query_params: { id: d.event_id },
      format: 'JSONEachRow',
    });
    assert.deepEqual(await rs.json(), [
      {
        model_name: d.model.name,
        model_version: d.model.version,
        ts: d.ts,
        image_ref: d.image!.ref,
        config_ref: d.config!.ref,
        decision: d.output.decision,
        weight: 1 / d.sample_rate,
        tier: d.tier,
        lineage_refs: d.lineage.map((l) => l.ref),
        artifact_digests: d.artifacts.map((a) => a.digest),
      },
    ]);
    const lineage = await store.client.query({
      query: `SELECT ancestor_kind FROM v_decision_lineage WHERE event_id = {id:String} ORDER BY ancestor_kind`,
      query_params: { id: d.event_id },
      format: 'JSONEachRow',
    });
    assert.deepEqual(await lineage.json(), [{ ancestor_kind: 'code' }, { ancestor_kind: 'dataset' }]);

    const stats = sink.stats().find((s) => s.table === 'decisions')!;
    assert.equal(stats.deadLettered, 2);
    assert.equal(stats.rowsSkippedAsReplay + rows - 5000, 50);
    await sink.stop();
    sink = undefined;

    // The bad record is on the dead-letter topic with its original bytes and the reason.
    const consumer = kafka.consumer({ groupId: unique('dlq-reader') });
    await consumer.connect();
    await consumer.subscribe({ topics: [`${prefix}sink.dlq`], fromBeginning: true });
    const letters: { value: string; reason: string }[] = [];
    await consumer.run({
      eachMessage: async ({ message }) => {
        letters.push({ value: message.value?.toString('base64') ?? '', reason: message.headers?.['dlog.reason']?.toString() ?? '' });
      },
    });
    await waitFor(() => letters.length >= 2 || undefined, { timeoutMs: 30_000, what: 'the dead letters' });
    await consumer.disconnect();
    assert.deepEqual(
      letters.sort((a, b) => a.reason.localeCompare(b.reason)),
      [
        { value: framed.toString('base64'), reason: 'clickhouse_rejected' },
        { value: Buffer.from('{"not":"avro"}').toString('base64'), reason: 'wrong_magic_byte' },
      ],
    );
  });
});

for (const client of ['native', 'kafkajs'] as const) {
describe(`sink on ${client}: ClickHouse refusing writes for a while`, () => {
  let kafka: Kafka;
  let admin: Admin;
  let store: Store;
  let sink: Sink | undefined;
  let prefix: string;
  let topic: string;
  const groupId = unique('sink-group');
  const runId = unique('run');

  before(async () => {
    ({ kafka, admin, store, prefix } = await testBed('sink-outage'));
    topic = `${prefix}decisions.enriched.v1`;
  });
  after(async () => {
    await sink?.stop();
    await store.client.command({ query: 'SYSTEM START MERGES decisions' }).catch(() => undefined);
    await admin.disconnect();
    await store.close();
  });

  it('pauses, retries with backoff in bounded memory, commits nothing, then resumes and lands everything once', async () => {
    const maxBufferedBytes = 2 * 1024 * 1024;
    sink = createSink({
      kafka,
      store,
      log,
      config: {
        ...config,
        sinkGroupId: groupId,
        topicPrefix: prefix,
        sinkBatchRows: 500,
        sinkBatchBytes: 512 * 1024,
        sinkFlushIntervalMs: 100,
        sinkMaxBufferedBytes: maxBufferedBytes,
      },
      retryInitialMs: 50,
      retryMaxMs: 400,
      native: client === 'native' ? native() : undefined,
    });
    await sink.start();
    const before = Array.from({ length: 1000 }, (_, i) => sampleEnrichedDecision(i, { runId }));
    await produceSamples(kafka, config.schemaRegistryUrl, topic, 'enriched-decision', before, (r) => r.event_id);
    await waitFor(async () => (await scalar(store, 'SELECT count() AS n FROM decisions')) === 1000 || undefined, {
      timeoutMs: 60_000,
      what: 'the first 1000 decisions',
    });
    await waitFor(async () => (await committed(admin, `${prefix}${groupId}`, topic)) === 1000 || undefined, { timeoutMs: 30_000, what: 'first commit' });

    // ClickHouse refuses inserts: TOO_MANY_PARTS (252), a retriable error, as under overload.
    await store.client.command({ query: 'SYSTEM STOP MERGES decisions' });
    await store.client.command({ query: 'ALTER TABLE decisions MODIFY SETTING parts_to_throw_insert = 1' });
    const during = Array.from({ length: 8000 }, (_, i) => sampleEnrichedDecision(1000 + i, { runId }));
    await produceSamples(kafka, config.schemaRegistryUrl, topic, 'enriched-decision', during, (r) => r.event_id);

    const stalled = await waitFor(
      () => {
        const s = sink!.stats().find((x) => x.table === 'decisions')!;
        return s.insertFailures >= 3 && s.paused ? s : undefined;
      },
      { timeoutMs: 30_000, what: 'the sink to fail, retry and pause' },
    );
    // Let it sit in the outage a while: memory must stay bounded, nothing may be committed.
    let peak = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 3_000) {
      const s = sink.stats().find((x) => x.table === 'decisions')!;
      peak = Math.max(peak, s.bufferedBytes);
      assert.ok(s.paused, 'fetching stays paused during the outage');
      await new Promise((r) => setTimeout(r, 100));
    }
    const s = sink.stats().find((x) => x.table === 'decisions')!;
    assert.ok(s.insertFailures > stalled.insertFailures, 'it keeps retrying');
    // The sink stops taking messages at the limit: one row at most lands on top of it.
    assert.ok(s.peakBufferedBytes <= maxBufferedBytes + 16 * 1024, `buffered ${s.peakBufferedBytes} bytes, limit ${maxBufferedBytes}`);
    assert.ok(s.bufferedRows < during.length, 'it did not read the whole backlog into memory');
    assert.equal(await committed(admin, `${prefix}${groupId}`, topic), 1000, 'no offset committed while ClickHouse refuses writes');
    assert.equal(await scalar(store, 'SELECT count() AS n FROM decisions'), 1000);

    // ClickHouse accepts writes again: the sink resumes on its own.
    await store.client.command({ query: 'ALTER TABLE decisions RESET SETTING parts_to_throw_insert' });
    await store.client.command({ query: 'SYSTEM START MERGES decisions' });
    await waitFor(async () => (await committed(admin, `${prefix}${groupId}`, topic)) === 9000 || undefined, { timeoutMs: 60_000, what: 'the backlog committed' });
    assert.equal(await scalar(store, 'SELECT count() AS n FROM decisions'), 9000, 'nothing missing, nothing doubled');
    assert.equal(await scalar(store, 'SELECT uniqExact(event_id) AS n FROM decisions'), 9000);
    const after = sink.stats().find((x) => x.table === 'decisions')!;
    assert.equal(after.paused, false);
    assert.equal(after.failing, false);
  });
});
}

describe('sink: ClickHouse reading the Avro records itself (embedded) lands exactly what the JSON path lands', () => {
  let kafka: Kafka;
  let admin: Admin;
  let store: Store;
  let sink: Sink | undefined;
  let prefix: string;
  let topic: string;
  const runId = unique('run');

  before(async () => {
    ({ kafka, admin, store, prefix } = await testBed('sink-avro'));
    topic = `${prefix}decisions.enriched.v1`;
    await store.client.command({ query: 'CREATE TABLE decisions_json AS decisions' });
  });
  after(async () => {
    await sink?.stop();
    await admin.disconnect();
    await store.close();
  });

  it('same rows on every column, older-schema records and a corrupt body in the same batches', async () => {
    const url = config.schemaRegistryUrl;
    const records = Array.from({ length: 1400 }, (_, i) => sampleEdgeDecision(i, { runId }));
    await produceSamples(kafka, url, topic, 'enriched-decision', records, (r) => r.event_id, { chunk: 200 });

    // A producer on a newer compatible schema (one more field, with a default): not the
    // contract's own schema, so those records are decoded in JS and written again in the
    // contract's schema, in the same batches.
    const evolved = { ...(loadSchema('enriched-decision') as { fields: object[] }), fields: [...(loadSchema('enriched-decision') as { fields: object[] }).fields, { name: 'x_note', type: 'string', default: '' }] };
    const evolvedId = await registerAvro(createRegistry(url), url, valueSubject(topic), evolved as never);
    const evolvedType = avro.Type.forSchema(evolved as avro.Schema);
    const currentId = await registerAvro(createRegistry(url), url, valueSubject(topic), loadSchema('enriched-decision'));
    const frame = (id: number, body: Buffer) => {
      const header = Buffer.alloc(5);
      header.writeInt32BE(id, 1);
      return Buffer.concat([header, body]);
    };
    const newer = Array.from({ length: 3 }, (_, i) => sampleEdgeDecision(5000 + i, { runId }));
    const good = avroType('enriched-decision').toBuffer(sampleEdgeDecision(6000, { runId }));
    const p = kafka.producer();
    await p.connect();
    await p.send({
      topic,
      acks: -1,
      messages: [
        ...newer.map((r) => ({ key: r.event_id, value: frame(evolvedId, evolvedType.toBuffer({ ...r, x_note: 'newer producer' })) })),
        // The contract's schema id, a body cut short: the key can be read, the record cannot.
        { key: 'corrupt', value: frame(currentId, good.subarray(0, good.length - 12)) },
      ],
    });
    await p.disconnect();
    const total = records.length + newer.length;

    const decisionsSpec = sinkTables.find((t) => t.table === 'decisions')!;
    const run = async (tables: TableSpec[], groupId: string, jsonOnly: boolean, table: string) => {
      sink = createSink({
        kafka,
        store,
        log,
        jsonOnly,
        tables,
        // On 2 or more cores every batch of 200 rows or more (all but a small last one) is read as
        // two files (see splitForReaders), so the parallel read and the corrupt record's isolation
        // across files are both exercised.
        avroFileRows: 100,
        config: { ...config, sinkGroupId: groupId, topicPrefix: prefix, sinkBatchRows: 500, sinkFlushIntervalMs: 200 },
      });
      await sink.start();
      await waitFor(async () => (sink!.stats()[0]!.deadLettered === 1 && (await scalar(store, `SELECT count() AS n FROM ${table}`)) >= total) || undefined, {
        timeoutMs: 60_000,
        what: `${table} filled`,
      });
      const stats = sink.stats()[0]!;
      await sink.stop();
      sink = undefined;
      return stats;
    };
    const fast = await run([decisionsSpec], unique('sink-avro-group'), false, 'decisions');
    const json = await run([{ ...decisionsSpec, table: 'decisions_json' }], unique('sink-json-group'), true, 'decisions_json');

    // All of them, the newer producer's too: a batch is one Avro statement, which lands whole or
    // not at all (two statements, JSON then Avro, could be cut apart by a crash).
    assert.equal(fast.rowsWrittenAsAvro, total, 'every record went to ClickHouse as Avro');
    assert.equal(fast.rowsWritten, total);
    assert.equal(json.rowsWrittenAsAvro, 0);
    assert.equal(await scalar(store, 'SELECT count() AS n FROM decisions'), total);
    assert.equal(await scalar(store, 'SELECT count() AS n FROM decisions_json'), total);
    // Every column but the insert time, compared as multisets in both directions.
    const diff = (a: string, b: string) =>
      scalar(store, `SELECT count() AS n FROM (SELECT * EXCEPT (ingested_at) FROM ${a} EXCEPT ALL SELECT * EXCEPT (ingested_at) FROM ${b})`);
    assert.equal(await diff('decisions', 'decisions_json'), 0);
    assert.equal(await diff('decisions_json', 'decisions'), 0);
    // The comparison can fail: a changed row shows up.
    assert.equal(await scalar(store, `SELECT count() AS n FROM (SELECT * EXCEPT (ingested_at) REPLACE (step + 1 AS step) FROM decisions EXCEPT ALL SELECT * EXCEPT (ingested_at) FROM decisions_json)`) > 0, true);
    assert.equal(await scalar(store, `SELECT countIf(step IS NULL) AS n FROM decisions`), await scalar(store, `SELECT countIf(step IS NULL) AS n FROM decisions_json`));
    assert.equal(await scalar(store, `SELECT count() AS n FROM decisions WHERE step = 0`) > 0, true);
  });
});

describe('sink: a backfill spanning ten years', () => {
  it('lands a batch whose rows fall in more than 100 monthly partitions instead of retrying it for good', async () => {
    const { kafka, admin, store, prefix } = await testBed('sink-months');
    const runId = unique('run');
    // 120 months, one decision and one counts row each, all in one batch per table. Full tier:
    // the retention TTL would delete older standard and minimal rows at their next merge.
    const month = (i: number) => Date.UTC(2016 + Math.floor(i / 12), i % 12, 15, 12);
    const decisions = Array.from({ length: 120 }, (_, i) => ({ ...sampleEnrichedDecision(i, { runId, ts: month(i) }), tier: 'full' as const }));
    const counts = Array.from({ length: 120 }, (_, i) => sampleCounts(i, { minute: month(i), batchId: `${runId}-b${i}` }));
    await produceSamples(kafka, config.schemaRegistryUrl, `${prefix}decisions.enriched.v1`, 'enriched-decision', decisions, (r) => r.event_id);
    await produceSamples(kafka, config.schemaRegistryUrl, `${prefix}decision.counts.v1`, 'decision-counts', counts, (r) => r.batch_id);
    const sink = createSink({
      kafka,
      store,
      log,
      native: native(),
      tables: sinkTables.filter((t) => t.table === 'decisions' || t.table === 'decision_counts'),
      config: { ...config, sinkGroupId: unique('sink-group'), topicPrefix: prefix, sinkBatchRows: 1000, sinkFlushIntervalMs: 500 },
    });
    try {
      await sink.start();
      await waitFor(
        async () =>
          ((await scalar(store, 'SELECT count() AS n FROM decisions')) === 120 && (await scalar(store, 'SELECT count() AS n FROM decision_counts')) === 120) || undefined,
        { timeoutMs: 60_000, what: '120 months of decisions and counts' },
      );
      assert.equal(await scalar(store, 'SELECT uniqExact(toYYYYMM(ts)) AS n FROM decisions'), 120);
      const stats = sink.stats().filter((t) => t.table === 'decisions' || t.table === 'decision_counts');
      assert.deepEqual(stats.map((t) => t.insertFailures), [0, 0], 'written at the first attempt');
    } finally {
      await sink.stop();
      await admin.disconnect();
      await store.close();
    }
  });
});

describe('sink on librdkafka: the schema registry out of reach for a while', () => {
  it('reads the batch again until the registry answers, instead of stopping', async () => {
    const { kafka, admin, store, prefix } = await testBed('sink-registry');
    const runId = unique('run');
    const decisions = Array.from({ length: 200 }, (_, i) => sampleEnrichedDecision(i, { runId }));
    await produceSamples(kafka, config.schemaRegistryUrl, `${prefix}decisions.enriched.v1`, 'enriched-decision', decisions, (r) => r.event_id);
    // The real registry behind a connection that fails the first lookups, as in a network blip.
    const real = registryFetcher(config.schemaRegistryUrl);
    let calls = 0;
    const fetchSchema: SchemaFetcher = async (id) => {
      if (++calls <= 3) throw Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } });
      return real(id);
    };
    const sink = createSink({
      kafka,
      store,
      log,
      native: native(),
      fetchSchema,
      tables: sinkTables.filter((t) => t.table === 'decisions'),
      config: { ...config, sinkGroupId: unique('sink-group'), topicPrefix: prefix, sinkBatchRows: 100, sinkFlushIntervalMs: 200 },
    });
    let failure: Error | undefined;
    void sink.failed.then((err) => (failure = err));
    try {
      await sink.start();
      await waitFor(async () => failure ?? ((await scalar(store, 'SELECT count() AS n FROM v_decisions')) === 200 || undefined), {
        timeoutMs: 60_000,
        what: 'every decision written once the registry answers',
      });
      assert.equal(failure, undefined, `the sink stopped: ${failure?.message}`);
      assert.ok(calls > 3);
    } finally {
      await sink.stop();
      await admin.disconnect();
      await store.close();
    }
  });
});

describe('sink: keys in other scripts', () => {
  it('checks a backlog of non-ASCII event ids for earlier writes without passing ClickHouse\'s query size limit', async () => {
    const { kafka, admin, store, prefix } = await testBed('sink-utf8');
    // 1,000 ids of 150 CJK characters: 150k UTF-16 units, but 450 kB of UTF-8, which is what
    // ClickHouse counts against max_query_size in the check a fresh sink runs on its first batch.
    const cjk = '\u8a18'.repeat(150);
    const decisions = Array.from({ length: 1_000 }, (_, i) => sampleEnrichedDecision(i, { eventId: `${cjk}-${i}` }));
    await produceSamples(kafka, config.schemaRegistryUrl, `${prefix}decisions.enriched.v1`, 'enriched-decision', decisions, (r) => r.event_id);
    const sink = createSink({
      kafka,
      store,
      log,
      tables: sinkTables.filter((t) => t.table === 'decisions'),
      config: { ...config, sinkGroupId: unique('sink-group'), topicPrefix: prefix, sinkFlushIntervalMs: 200 },
    });
    let failure: Error | undefined;
    void sink.failed.then((err) => (failure = err));
    try {
      await sink.start();
      await waitFor(async () => failure ?? ((await scalar(store, 'SELECT count() AS n FROM decisions')) === 1_000 || undefined), {
        timeoutMs: 60_000,
        what: 'every decision written',
      });
      assert.equal(failure, undefined, `the sink stopped: ${failure?.message}`);
      assert.equal(await scalar(store, `SELECT count() AS n FROM decisions WHERE startsWith(event_id, '${cjk}')`), 1_000);
    } finally {
      await sink.stop();
      await admin.disconnect();
      await store.close();
    }
  });
});
