import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import { createStore } from '@dlog/store';
import type { Admin, Kafka } from 'kafkajs';
import { produceSamples, sampleCounts, sampleEnrichedDecision, sinkTables } from '../services/sink/src/index.js';
import { config, log, tempDir, unique, waitFor } from './helpers.js';

/**
 * The sink as its own process, killed with SIGKILL in the middle of inserting, then restarted:
 * afterwards every decision and every count is in ClickHouse once. The embedded data directory
 * belongs to one process at a time, so the test reads it only after the sink has exited.
 */

const root = path.resolve(import.meta.dirname, '..');

// Both consumers the sink can run on: kafkajs (its default) and librdkafka (DLOG_KAFKA_CLIENT=native).
for (const client of ['kafkajs', 'native'] as const) describe(`sink on ${client}: SIGKILL mid-batch, then restart`, () => {
  let kafka: Kafka;
  let admin: Admin;
  const prefix = `${unique('sink-crash')}.`;
  const groupId = unique('sink-group');
  const runId = unique('run');
  const dataDir = tempDir(`sink-crash-${client}`);
  const decisionsTopic = `${prefix}decisions.enriched.v1`;
  const countsTopic = `${prefix}decision.counts.v1`;
  const children: ChildProcess[] = [];

  function startSink(): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
    const child = spawn(process.execPath, ['--import', 'tsx', 'services/sink/src/main.ts'], {
      cwd: root,
      env: {
        ...process.env,
        CLICKHOUSE_DATA_DIR: dataDir,
        DLOG_TOPIC_PREFIX: prefix,
        DLOG_SINK_GROUP_ID: groupId,
        DLOG_KAFKA_CLIENT: client,
        DLOG_SINK_BATCH_ROWS: '2000',
        DLOG_SINK_FLUSH_INTERVAL_MS: '200',
        LOG_LEVEL: 'debug',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    return { child, output: () => out, exited };
  }

  async function committed(topic: string): Promise<number> {
    const offsets = await admin.fetchOffsets({ groupId: `${prefix}${groupId}`, topics: [topic] });
    return offsets[0]!.partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
  }

  before(async () => {
    kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `sink-crash-test-${client}`, log });
    admin = kafka.admin();
    await admin.connect();
    const defs = new Map(loadTopicDefinitions().map((d) => [d.name, d]));
    await ensureTopics(admin, sinkTables.map((t) => ({ ...defs.get(t.topic)!, name: `${prefix}${t.topic}` })));
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await admin.disconnect();
  });

  it('loses nothing and doubles nothing', async () => {
    const decisions = Array.from({ length: 30_000 }, (_, i) => sampleEnrichedDecision(i, { runId }));
    const counts = Array.from({ length: 3_000 }, (_, i) => sampleCounts(i, { batchId: `${runId}-b${Math.floor(i / 4)}` }));
    await produceSamples(kafka, config.schemaRegistryUrl, decisionsTopic, 'enriched-decision', decisions, (r) => r.event_id);
    await produceSamples(kafka, config.schemaRegistryUrl, countsTopic, 'decision-counts', counts, (r) => r.batch_id);

    // Two runs killed at different points while batches are being inserted and committed, then a
    // third that finishes. Each restart resumes at the committed offsets and skips the rows a
    // killed run wrote after its last commit.
    const batchesOf = (out: string) => out.match(/"msg":"batch written"/g)?.length ?? 0;
    for (const afterBatches of [3, 5]) {
      const run = startSink();
      await waitFor(() => batchesOf(run.output()) >= afterBatches || undefined, {
        timeoutMs: 60_000,
        what: `a sink run to write ${afterBatches} batches`,
      });
      run.child.kill('SIGKILL');
      await run.exited;
    }
    const atCrash = await committed(decisionsTopic);
    assert.ok(atCrash < decisions.length, `killed before the end (committed ${atCrash})`);

    const last = startSink();
    await waitFor(async () => ((await committed(decisionsTopic)) === decisions.length && (await committed(countsTopic)) === counts.length) || undefined, {
      timeoutMs: 120_000,
      what: 'the restarted sink to commit everything',
    });
    last.child.kill('SIGTERM');
    assert.equal(await last.exited, 0, `clean shutdown; output:\n${last.output().slice(-2000)}`);
    assert.match(last.output(), new RegExp(`"consumer":"${client === 'native' ? 'librdkafka' : 'kafkajs'}"`), 'the sink ran on the client under test');

    const store = await createStore({ database: 'dlog', dataDir, log });
    try {
      const rs = await store.client.query({
        query: `SELECT
                  (SELECT count() FROM decisions) AS rows,
                  (SELECT uniqExact(event_id) FROM decisions) AS ids,
                  (SELECT count() FROM decision_counts) AS count_rows,
                  (SELECT sum(total) FROM v_decision_totals) AS total`,
        format: 'JSONEachRow',
      });
      const [r] = await rs.json<{ rows: number; ids: number; count_rows: number; total: number }>();
      assert.equal(Number(r!.ids), decisions.length, 'nothing missing');
      assert.equal(Number(r!.rows), decisions.length, 'nothing doubled');
      assert.equal(Number(r!.count_rows), counts.length, 'no count delta doubled');
      assert.equal(Number(r!.total), counts.reduce((n, c) => n + c.kept + c.dropped, 0), 'exact totals');
    } finally {
      await store.close();
    }
  });
});
