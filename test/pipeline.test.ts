import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { loadConfig } from '@dlog/config';
import { createPipeline, type Pipeline } from '@dlog/pipeline';
import { simulate, simulatedModels, type SimulateSummary } from '../packages/cli/src/simulate.js';
import { finishes, log, tempDir, unique, waitFor } from './helpers.js';

async function rows<T>(p: Pipeline, sql: string, params: Record<string, unknown> = {}): Promise<T[]> {
  const rs = await p.store.client.query({ query: sql, query_params: params, format: 'JSONEachRow' });
  return (await rs.json()) as T[];
}

function progress(p: Pipeline): string {
  const gate = p.gate ? { ...p.gate.stats, committed: p.gate.committed } : undefined;
  const sink = p.sink.stats().map((w) => ({ table: w.table, rows: w.rowsWritten, buffered: w.bufferedRows, insertFailures: w.insertFailures, paused: w.paused, failing: w.failing }));
  return `gate ${JSON.stringify(gate)}; enricher ${JSON.stringify(p.enricher?.stats)}; sink ${JSON.stringify(sink)}`;
}

describe('pipeline end to end: simulated traffic through gate, enricher and sink into embedded ClickHouse', () => {
  const prefix = `${unique('pipe')}.`;
  const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, CLICKHOUSE_DATA_DIR: `${tempDir('pipe')}/clickhouse`, LOG_LEVEL: 'warn' });
  let pipeline: Pipeline;
  let summary: SimulateSummary;
  let good = 0;

  before(async () => {
    pipeline = await createPipeline({ config, log, queryServer: false });
    summary = await simulate(config, log, { events: 6_000, rate: 0, badShare: 0.01, applicants: 500 });
    good = Object.values(summary.recorded).reduce((s, n) => s + n, 0);
    assert.equal(summary.sdk.sent, good, 'the SDK delivered everything it recorded');
    await waitFor(
      async () => {
        const [t] = await rows<{ kept: number; dropped: number }>(pipeline, 'SELECT sum(kept) AS kept, sum(dropped) AS dropped FROM v_decision_totals');
        const [d] = await rows<{ n: number }>(pipeline, 'SELECT count() AS n FROM v_decisions');
        return t && d && t.kept + t.dropped >= good && d.n >= t.kept ? true : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 500, what: 'all simulated decisions to be queryable' },
    ).catch((err: Error) => {
      // Which stage stopped: the workers' own counters, read without the store.
      throw new Error(`${err.message}\nproduced ${good} decisions and ${summary.bad} bad events; ${progress(pipeline)}`, { cause: err });
    });
  });
  after(async () => {
    // Well past a healthy stop (about a second); the shutdown limit alone is 15 s.
    if (pipeline) await finishes('pipeline.stop()', 90_000, pipeline.stop());
  });

  it('counts every produced decision exactly, and stores each kept one once', async () => {
    const [t] = await rows<{ kept: number; dropped: number }>(pipeline, 'SELECT sum(kept) AS kept, sum(dropped) AS dropped FROM v_decision_totals');
    assert.equal(t!.kept + t!.dropped, good, 'decision_counts totals equal what was produced');
    assert.equal(t!.kept, pipeline.gate!.stats.kept);
    assert.equal(pipeline.gate!.stats.deadLettered, summary.bad);
    const [d] = await rows<{ n: number; distinct: number }>(pipeline, 'SELECT count() AS n, uniqExact(event_id) AS distinct FROM decisions');
    assert.equal(d!.n, t!.kept, 'every kept decision is in ClickHouse');
    assert.equal(d!.distinct, d!.n, 'none twice');
    const perModel = await rows<{ m: string; total: number }>(pipeline, "SELECT concat(model_name, ':', model_version) AS m, sum(kept + dropped) AS total FROM v_decision_totals GROUP BY m");
    assert.deepEqual(Object.fromEntries(perModel.map((r) => [r.m, Number(r.total)])), summary.recorded);
  });

  it('resolves model, image, config and environment of the loan decisions', async () => {
    const [r] = await rows<{ n: number; unresolved: number; roles: string[] }>(
      pipeline,
      `SELECT count() AS n, countIf(NOT resolved) AS unresolved, groupUniqArrayArray(arrayMap(a -> a.role, artifacts)) AS roles
       FROM v_decisions WHERE model_name = {m:String}`,
      { m: simulatedModels.stable.name },
    );
    assert.ok(r!.n > 0);
    assert.equal(r!.unresolved, 0);
    assert.deepEqual([...r!.roles].sort(), ['config', 'environment', 'image', 'model', 'preprocessing']);
  });

  it('traces a decision back to its training dataset and code commit in one query', async () => {
    const [one] = await rows<{ event_id: string }>(pipeline, 'SELECT event_id FROM v_decisions WHERE model_version = {v:String} LIMIT 1', { v: simulatedModels.canary.version });
    const lineage = await rows<{ kind: string; ref: string }>(
      pipeline,
      'SELECT l.kind AS kind, l.ref AS ref FROM v_decisions ARRAY JOIN lineage AS l WHERE event_id = {id:String} ORDER BY l.depth, l.ref',
      { id: one!.event_id },
    );
    const refs = lineage.map((l) => `${l.kind} ${l.ref}`);
    assert.ok(refs.includes('dataset registry://datasets/loan-applications:v6'), refs.join('\n'));
    assert.ok(refs.includes('code git://example.com/acme/loan-model@8d41e07'), refs.join('\n'));
    assert.ok(refs.includes('dataset registry://datasets/loan-applications:v5'), 'and the dataset v6 was derived from');
  });
});

describe('pipeline logging', () => {
  it("gives kafkajs's own log to the library logger, not the host's", async () => {
    // `dlog up` printed kafkajs's error-level retries of new topics ("not the leader") among its
    // status lines: it handed its own logger to kafkajs instead of the quieter library one.
    const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: `${unique('pipe-log')}.`, CLICKHOUSE_DATA_DIR: `${tempDir('pipe-log')}/clickhouse`, LOG_LEVEL: 'warn' });
    const entries = (into: Record<string, unknown>[]) => pino({ level: 'debug' }, { write: (line: string) => void into.push(JSON.parse(line) as Record<string, unknown>) });
    const hostLines: Record<string, unknown>[] = [];
    const libraryLines: Record<string, unknown>[] = [];
    const p = await createPipeline({ config, log: entries(hostLines), libraryLog: entries(libraryLines), queryServer: false });
    await finishes('pipeline.stop()', 90_000, p.stop());
    assert.deepEqual(hostLines.filter((l) => l.component === 'kafkajs'), []);
    assert.ok(libraryLines.some((l) => l.component === 'kafkajs'), 'kafkajs logged through the library logger (its consumers start at info, logged at debug)');
    assert.ok(hostLines.some((l) => l.msg === 'schema current'), 'the host keeps its own lines');
  });
});
