/**
 * The alerter's work per batch, without Kafka: each batch works on a copy of the state (so an
 * aborted transaction changes nothing), adds its decisions and closes the windows they complete.
 * Prints, for states of growing size, the median time of one batch's copy and first write with
 * `cloneState` next to a deep copy (`structuredClone`, what it did before) in the same run, and
 * the engine's cost per decision on a stream of batches.
 *
 *   npm run bench:alerter [-- batch=200 runs=7]
 *
 * State sizes: model versions live in the ten minutes a window holds × distinct decisions per
 * version (agent steps are free text: up to 200 are kept) × baselines kept (a month of versions).
 */
import { readFileSync } from 'node:fs';
import { emptyAgg } from '../services/alerter/src/aggregate.js';
import { cloneState, createEngine, type AlerterState } from '../services/alerter/src/engine.js';
import { subjectKey } from '../services/alerter/src/evaluate.js';
import { parseRules } from '../services/alerter/src/rules.js';
import type { DecisionObservation } from '../services/alerter/src/aggregate.js';

const arg = (name: string, def: number) => Number(process.argv.find((a) => a.startsWith(`${name}=`))?.split('=')[1] ?? def);
const batchSize = arg('batch', 200);
const runs = arg('runs', 7);

const rules = parseRules(readFileSync(new URL('../infra/alerts/rules.yaml', import.meta.url), 'utf8'));
const engine = createEngine(rules);
const now = Date.UTC(2026, 10, 27, 12, 0, 0);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const decision = (i: number, ts: number, versions: number, distinct: number): DecisionObservation => ({
  ts,
  endpoint: `ep${i % 10}`,
  model: `m${i % versions}`,
  version: '1.0',
  decision: `decision ${(i * 7) % distinct}`,
  confidence: 0.8 + (i % 20) / 100,
  weight: 1,
  resolved: true,
  unresolvedRefs: [],
});

function state(versions: number, distinct: number, baselines: number): AlerterState {
  const s = engine.newState();
  for (let m = 0; m < 11; m++) for (let i = 0; i < versions * distinct; i++) engine.observeDecision(s, 'p0', decision(i, now - m * 60_000, versions, distinct), now);
  for (const rule of ['confidence-drop', 'decision-mix-shift']) {
    const h = new Map();
    for (let i = 0; i < baselines / 2; i++) {
      const agg = emptyAgg();
      agg.n = 500;
      for (let d = 0; d < 10; d++) agg.decisions.set(`decision ${d}`, d + 1);
      h.set(subjectKey('ep', `old${i}`, '1.0'), { windowEnd: now - 86_400_000, subject: { endpoint: 'ep', model: `old${i}`, version: '1.0', agg } });
    }
    s.history.set(rule, h);
  }
  return s;
}

/** Median ms of `fn` over `runs` rounds of at least 200 ms each. */
function time(fn: () => void): number {
  const per: number[] = [];
  for (let r = 0; r < runs; r++) {
    let n = 0;
    const t = performance.now();
    while (performance.now() - t < 200) {
      fn();
      n++;
    }
    per.push((performance.now() - t) / n);
  }
  return median(per);
}

console.log(`alerter state copy per batch (copy + a first decision into the newest pane), median of ${runs} rounds`);
console.log('  versions × decisions, baselines   cloneState    structuredClone (before)   ratio');
for (const [versions, distinct, baselines] of [
  [10, 3, 20],
  [50, 20, 200],
  [100, 200, 1000],
] as const) {
  const s = state(versions, distinct, baselines);
  const write = (c: AlerterState) => engine.observeDecision(c, 'p0', decision(1, now, versions, distinct), now);
  const cow = time(() => write(cloneState(s)));
  const deep = time(() => write(structuredClone(s)));
  console.log(`  ${`${versions} × ${distinct}, ${baselines}`.padEnd(32)} ${cow.toFixed(3).padStart(8)} ms   ${deep.toFixed(3).padStart(8)} ms                ${(deep / cow).toFixed(1)}×`);
}

// A stream: batches of `batchSize` decisions, 50 versions × 20 decisions, one minute of event
// time every 6,000 decisions; each batch copied, fed and advanced as the alerter does.
const total = 120_000;
const decisions = Array.from({ length: total }, (_, i) => decision(i, now + Math.floor(i / 6_000) * 60_000 + (i % 6_000) * 10, 50, 20));
function stream(copy: (s: AlerterState) => AlerterState): number {
  const perDecision: number[] = [];
  for (let r = 0; r < runs; r++) {
    let s = engine.newState();
    const t = performance.now();
    for (let i = 0; i < total; i += batchSize) {
      const next = copy(s);
      for (let j = i; j < Math.min(total, i + batchSize); j++) engine.observeDecision(next, `p${j % 6}`, decisions[j]!, decisions[j]!.ts);
      engine.advance(next, decisions[Math.min(total, i + batchSize) - 1]!.ts);
      next.baselineChanges.clear();
      s = next;
    }
    perDecision.push(((performance.now() - t) * 1000) / total);
  }
  return median(perDecision);
}
const cow = stream(cloneState);
const deep = stream((s) => structuredClone(s));
console.log(`engine on a stream of ${total} decisions in batches of ${batchSize} (50 versions × 20 decisions), median of ${runs}:`);
console.log(`  cloneState ${cow.toFixed(2)} µs a decision; structuredClone (before) ${deep.toFixed(2)} µs; ratio ${(deep / cow).toFixed(1)}×`);
