/**
 * The audit commands over 10 million decisions in embedded ClickHouse: `dlog trace` (by event_id
 * and by request_id), `dlog scope` and `dlog diff`, each the median of several runs, next to
 * its target. The decisions are generated in SQL (INSERT ... SELECT FROM numbers), not through
 * Kafka: this measures the queries, the pipeline has its own benches.
 *
 *   npm run bench:audit [-- rows=10000000 runs=5]
 *
 * Traffic: loan-approver 2.4.1 (40%) and its canary 2.5.0 (10%) on the same 200k applicants
 * (the canary declines more), a recommender kept at 10% (30% of stored rows), and agent
 * trajectories of 4 steps (20%), spread over 30 days.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '@dlog/runtime';
import { createStore, migrate } from '@dlog/store';
import { storeQuery } from '../packages/cli/src/audit-query.js';
import { computeScope } from '../packages/cli/src/scope.js';
import { computeDiff } from '../packages/cli/src/diff.js';
import { traceDecision } from '../packages/cli/src/trace.js';

const arg = (name: string, def: number) => Number(process.argv.find((a) => a.startsWith(`${name}=`))?.split('=')[1] ?? def);
const rows = arg('rows', 10_000_000);
const runs = arg('runs', 5);
const chunk = 2_000_000;

const log = createLogger({ name: 'bench-audit', level: process.env.LOG_LEVEL ?? 'warn' });
// keep=<dir>: generate once into <dir> and reuse it on later runs (for tuning queries).
const keep = process.argv.find((a) => a.startsWith('keep='))?.slice(5);
const dir = keep ?? mkdtempSync(path.join(tmpdir(), 'dlog-bench-audit-'));
const reuse = keep !== undefined && existsSync(path.join(keep, 'clickhouse', 'store'));
const store = await createStore({ database: 'dlog', dataDir: path.join(dir, 'clickhouse'), createDatabase: true, log });
await migrate(store);
const raw = storeQuery(store);
// BENCH_PROFILE=1 prints each query's time: which part of a command misses its target.
const q: typeof raw = process.env.BENCH_PROFILE
  ? async (sql, params) => {
      const t = performance.now();
      const r = await raw(sql, params);
      process.stderr.write(`    ${(performance.now() - t).toFixed(0).padStart(6)} ms  ${sql.replace(/\s+/g, ' ').slice(0, 150)}\n`);
      return r;
    }
  : raw;
const say = (s: string) => process.stdout.write(`${s}\n`);

let peakRss = process.memoryUsage.rss();
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 100);

// Deterministic ids: event n's UUID is computable from n, so an agent step names its parent.
const uuid = (n: string) => `toString(reinterpretAsUUID(concat(reinterpretAsString(cityHash64(${n}, 1)), reinterpretAsString(cityHash64(${n}, 2)))))`;
const hex64 = (x: string) => `concat('sha256-', lower(hex(cityHash64(${x}, 11))), lower(hex(cityHash64(${x}, 12))), lower(hex(cityHash64(${x}, 13))), lower(hex(cityHash64(${x}, 14))))`;
const digest = (s: string) => `'sha256:${Buffer.from(s).toString('hex').padEnd(64, '0').slice(0, 64)}'`;
const registered = "toDateTime64('2026-10-01 00:00:00', 3, 'UTC')";
const art = (role: string, ref: string, kind: string, version: string) => `(${`'${role}'`}, '${ref}', '${kind}', '${version}', ${digest(ref)}, ${registered})`;
const lin = (ref: string, kind: string, via: string, depth: number) => `('${ref}', '${kind}', '${via}', ${depth})`;
const env = art('environment', 'env://sha256:5e1f', 'environment', '5e1f');

// Block of 4 events: 0-3 stable, 4 canary, 5-7 recommender, 8-9 agent (a 4-step trajectory).
const insert = (from: number, count: number) => `
INSERT INTO decisions (event_id, request_id, ts, endpoint, decision_type, model_name, model_version, model_digest,
  image_ref, image_digest, config_ref, temperature, thresholds, preprocessing_ref, environment_digest,
  input_hash, input_fields, decision, confidence, scores, trace_id, step, parent_event_id, tool_name, tool_args_hash,
  producer_service, producer_sdk, tier, sample_rate, policy_version, policy_rule, pii_key_id, source_partition, source_offset, gate_ts,
  resolved, artifacts, lineage, enriched_at)
SELECT
  ${uuid('number')} AS event_id,
  concat(multiIf(kind < 5, 'loan-', kind < 8, 'rec-', 'chat-'), toString(number)) AS request_id,
  toDateTime64('2026-10-27 00:00:00', 3, 'UTC') + toIntervalMillisecond(intDiv(number * 2592000000, ${rows})) AS ts,
  multiIf(kind < 5, 'loan-api', kind < 8, 'recommendations', 'support-chat') AS endpoint,
  multiIf(kind < 5, 'loan_approval', kind < 8, 'recommendation', 'agent_step') AS decision_type,
  multiIf(kind < 5, 'loan-approver', kind < 8, 'item-recommender', 'support-agent') AS model_name,
  multiIf(kind < 4, '2.4.1', kind = 4, '2.5.0', kind < 8, '7.1.0', '1.3.0') AS model_version,
  ${digest('model')} AS model_digest,
  multiIf(kind < 4, 'registry.example/inference-loan:2.4.1', kind = 4, 'registry.example/inference-loan:2.5.0', '') AS image_ref,
  if(kind < 5, ${digest('image')}, '') AS image_digest,
  if(kind < 5, 'configs/prod/loan-params:v3', '') AS config_ref,
  if(kind < 5, 0.1, NULL) AS temperature,
  if(kind < 5, map('approve', if(kind = 4, 0.55, 0.4)), map()) AS thresholds,
  if(kind < 5, 'registry://preprocessing/loan-features:v7', '') AS preprocessing_ref,
  '5e1f' AS environment_digest,
  ${hex64('multiIf(kind < 5, applicant, kind < 8, 1000000 + number % 50000, 2000000 + number)')} AS input_hash,
  if(kind < 5, map('applicant.customer_id', concat('hmac:', toString(applicant))), map()) AS input_fields,
  multiIf(kind < 4, if(score > 0.4, 'approved', 'declined'), kind = 4, if(score > 0.55, 'approved', 'declined'),
          kind < 8, concat('item-', toString(number % 200)), step = 3, 'answer', concat('call:', ['search_orders', 'lookup_customer', 'refund'][1 + number % 3])) AS decision,
  multiIf(kind < 4, 0.8 + r * 0.18, kind = 4, 0.55 + r * 0.2, 0.3 + r * 0.6) AS confidence,
  if(kind < 5, map('approved', score, 'declined', 1 - score), map()) AS scores,
  if(kind >= 8, concat('trace-', toString(intDiv(number, 4))), '') AS trace_id,
  if(kind >= 8, toInt32(step), NULL) AS step,
  if(kind >= 8 AND step > 0, ${uuid('number - 1')}, '') AS parent_event_id,
  if(kind >= 8 AND step < 3, ['search_orders', 'lookup_customer', 'refund'][1 + number % 3], '') AS tool_name,
  if(kind >= 8 AND step < 3, ${hex64('number + 7')}, '') AS tool_args_hash,
  'bench' AS producer_service, 'dlog-sdk-ts/0.1.0' AS producer_sdk,
  multiIf(kind < 5, 'standard', kind < 8, 'minimal', 'full') AS tier,
  if(kind >= 5 AND kind < 8, 0.1, 1.0) AS sample_rate,
  'policies@v3' AS policy_version, multiIf(kind < 5, 'loans', kind < 8, 'recs', 'agents') AS policy_rule, 'k1' AS pii_key_id,
  toInt32(number % 6) AS source_partition, toInt64(number) AS source_offset, ts AS gate_ts,
  true AS resolved,
  multiIf(
    kind < 4, [${art('model', 'registry://models/loan-approver:2.4.1', 'model', '2.4.1')}, ${art('image', 'registry.example/inference-loan:2.4.1', 'image', '2.4.1')}, ${art('config', 'configs/prod/loan-params:v3', 'config', 'v3')}, ${art('preprocessing', 'registry://preprocessing/loan-features:v7', 'preprocessing', 'v7')}, ${env}],
    kind = 4, [${art('model', 'registry://models/loan-approver:2.5.0', 'model', '2.5.0')}, ${art('image', 'registry.example/inference-loan:2.5.0', 'image', '2.5.0')}, ${art('config', 'configs/prod/loan-params:v3', 'config', 'v3')}, ${art('preprocessing', 'registry://preprocessing/loan-features:v7', 'preprocessing', 'v7')}, ${env}],
    kind < 8, [${art('model', 'registry://models/item-recommender:7.1.0', 'model', '7.1.0')}, ${env}],
    [${art('model', 'registry://models/support-agent:1.3.0', 'model', '1.3.0')}, ${env}]) AS artifacts,
  multiIf(
    kind < 4, [${lin('registry://datasets/loan-applications:v5', 'dataset', 'registry://models/loan-approver:2.4.1', 1)}, ${lin('git://example.com/acme/loan-model@3f2a1c9', 'code', 'registry://models/loan-approver:2.4.1', 1)}],
    kind = 4, [${lin('registry://datasets/loan-applications:v6', 'dataset', 'registry://models/loan-approver:2.5.0', 1)}, ${lin('git://example.com/acme/loan-model@8d41e07', 'code', 'registry://models/loan-approver:2.5.0', 1)}, ${lin('registry://datasets/loan-applications:v5', 'dataset', 'registry://models/loan-approver:2.5.0', 2)}],
    kind < 8, [${lin('registry://datasets/clicks:2026-11', 'dataset', 'registry://models/item-recommender:7.1.0', 1)}],
    []) AS lineage,
  ts AS enriched_at
FROM
(
  SELECT number, intDiv(number, 4) % 10 AS kind, number % 4 AS step,
         cityHash64(number, 3) % 200000 AS applicant,
         least(0.99, greatest(0.01, (applicant % 1000) / 1000)) AS score,
         (cityHash64(number, 4) % 10000) / 10000 AS r
  FROM numbers(${from}, ${count})
)`;

say(`bench:audit — ${rows.toLocaleString('en')} decisions in embedded ClickHouse (${dir})`);
const t0 = performance.now();
for (let from = 0; !reuse && from < rows; from += chunk) {
  await store.client.command({ query: insert(from, Math.min(chunk, rows - from)) });
  if (process.stdout.isTTY) process.stdout.write(`  generated ${Math.min(rows, from + chunk).toLocaleString('en')}\r`);
}
// Exact counts as the gate would send them: the recommender's kept 10% stand for all of it.
if (!reuse) await store.client.command({
  query: `INSERT INTO decision_counts (minute, model_name, model_version, endpoint, decision_type, tier, decision, policy_version, kept, dropped, batch_id, row_key)
          SELECT toStartOfMinute(ts) AS minute, model_name, model_version, endpoint, decision_type, tier, decision, policy_version,
                 count() AS kept, if(any(sample_rate) < 1, toUInt64(count() * 9), 0) AS dropped, 'bench' AS batch_id,
                 concat('bench/', toString(minute), model_name, model_version, decision) AS row_key
          FROM decisions GROUP BY minute, model_name, model_version, endpoint, decision_type, tier, decision, policy_version`,
});
if (!reuse) await store.client.command({
  query: `INSERT INTO deployments (event_id, action, endpoint, environment, model_ref, previous_model_ref, traffic_share, ts, actor, reason) VALUES
    ('d1', 'deploy', 'loan-api', 'prod', 'registry://models/loan-approver:2.4.1', '', 1, '2026-10-20 00:00:00', 'bench', ''),
    ('d2', 'canary', 'loan-api', 'prod', 'registry://models/loan-approver:2.5.0', 'registry://models/loan-approver:2.4.1', 0.2, '2026-10-27 00:00:00', 'bench', ''),
    ('d3', 'deploy', 'recommendations', 'prod', 'registry://models/item-recommender:7.1.0', '', 1, '2026-10-01 00:00:00', 'bench', '')`,
});
const loadS = (performance.now() - t0) / 1000;
// Let background merges of the fresh parts finish (bounded): a store in use is mostly merged, and
// a merge running next to a query halves its CPU on two cores.
const settleUntil = Date.now() + 90_000;
while (!reuse && Date.now() < settleUntil) {
  const [m] = await q("SELECT count() AS n FROM system.merges WHERE database = 'dlog' AND table = 'decisions'");
  if (Number(m?.n ?? 0) === 0) break;
  await new Promise((r) => setTimeout(r, 500));
}
const [{ parts, bytes } = { parts: 0, bytes: 0 }] = (await q("SELECT count() AS parts, sum(bytes_on_disk) AS bytes FROM system.parts WHERE database = 'dlog' AND table = 'decisions' AND active")) as { parts: number; bytes: number }[];
say(`  generated ${rows.toLocaleString('en')} decisions + counts in ${loadS.toFixed(1)} s, merges settled after ${((performance.now() - t0) / 1000 - loadS).toFixed(1)} s (${parts} parts, ${(Number(bytes) / 2 ** 30).toFixed(2)} GiB on disk)`);

// Ids to trace, spread over the table: a loan decision, an agent step, a recommendation.
const picks = await q(
  `SELECT event_id, request_id FROM decisions WHERE source_offset IN {offsets:Array(Int64)}`,
  { offsets: Array.from({ length: runs * 2 }, (_, i) => Math.floor(((i + 0.5) / (runs * 2)) * rows) + 32 + (i % 10)) },
);

async function median(name: string, fn: (i: number) => Promise<unknown>): Promise<number> {
  await fn(runs); // warm-up: the first read loads marks and primary index
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn(i);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  log.debug({ name, times }, 'runs');
  return times[Math.floor(times.length / 2)]!;
}

const pick = (i: number) => picks[i % picks.length]!;
const canary = { name: 'loan-approver', version: '2.5.0' };
const stable = { name: 'loan-approver', version: '2.4.1' };
const results: { what: string; ms: number; target: number }[] = [];
results.push({ what: 'trace <event_id> (with trajectory when an agent)', ms: await median('trace-event', (i) => traceDecision(q, String(pick(i).event_id))), target: 200 });
results.push({ what: 'trace <request_id>', ms: await median('trace-request', (i) => traceDecision(q, String(pick(i + 1).request_id))), target: 200 });
let scopeN = 0;
results.push({
  what: 'scope --model loan-approver:2.5.0',
  ms: await median('scope', async () => (scopeN = (await computeScope(q, { model: canary })).exact ?? 0)),
  target: 1000,
});
results.push({
  what: "scope --model ... --since 7d --where 'decision=declined and confidence<0.6'",
  ms: await median('scope-where', () => computeScope(q, { model: canary, since: Date.parse('2026-11-19T00:00:00Z'), where: 'decision=declined and confidence<0.6' })),
  target: 1000,
});
let agreement = 0;
let paired = 0;
results.push({
  what: 'diff --model loan-approver:2.4.1 --vs 2.5.0',
  ms: await median('diff', async () => {
    const d = await computeDiff(q, { a: stable, b: canary });
    agreement = d.paired.agreement ?? 0;
    paired = d.paired.inputs;
  }),
  target: 1000,
});
results.push({
  what: 'diff ... --since 7d',
  ms: await median('diff-7d', () => computeDiff(q, { a: stable, b: canary, since: Date.parse('2026-11-19T00:00:00Z') })),
  target: 1000,
});
clearInterval(sampler);

say('');
say(`median of ${runs} runs after one warm-up (canary scope: ${scopeN.toLocaleString('en')} decisions; diff: ${paired.toLocaleString('en')} paired inputs, agreement ${(agreement * 100).toFixed(1)}%)`);
say(`${'query'.padEnd(78)} ${'median'.padStart(9)}  ${'target'.padStart(8)}`);
for (const r of results) say(`${r.what.padEnd(78)} ${`${r.ms.toFixed(0)} ms`.padStart(9)}  ${`≤ ${r.target} ms`.padStart(8)}  ${r.ms <= r.target ? 'ok' : 'MISSED'}`);
say(`peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);

await store.close();
if (!keep) rmSync(dir, { recursive: true, force: true });
