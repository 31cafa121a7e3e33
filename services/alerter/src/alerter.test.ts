import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { AssignerProtocol, type GroupDescription } from 'kafkajs';
import type { DeadLetterObservation, DecisionObservation } from './aggregate.js';
import { addDecision, compareVersions, emptyAgg, meanConfidence } from './aggregate.js';
import { applyBaseline, decodeBaseline, encodeBaseline, maxDecisionBytes, maxRecordBytes } from './baselines.js';
import { CheckpointPicker, checkpointKey, decodeCheckpoint, encodeCheckpoint, maxCheckpointBytes, type CheckpointRecord } from './checkpoint.js';
import { baselineKey, cloneState, createEngine, pruneBaselines, type AlerterState, type Checkpoint, type Engine } from './engine.js';
import { parseSubjectKey, pickBaseline, splitKey, subjectKey } from './evaluate.js';
import { toDeadLetterObservation } from './decode.js';
import { joinKey, type AlertRecord } from '@dlog/contracts';
import { soleOwner } from './ownership.js';
import { psi } from './psi.js';
import { parseDuration, parseRules, RulesError, type RulesDocument } from './rules.js';
import { admit, expire } from './suppression.js';
import { watermark } from './watermark.js';
import { closingWindowEnds, paneSize } from './windows.js';

const rulesYaml = `
watermark: { allowed_lateness: 0s, idle_partition_after: 1h }
rules:
  - { name: conf, kind: confidence_drop, window: { size: 10m, hop: 5m }, min_samples: 50, min_drop: 0.05, suppress_for: 1h }
  - { name: mix, kind: decision_mix_shift, window: { size: 10m, hop: 5m }, min_samples: 50, min_psi: 0.2, suppress_for: 1h }
  - { name: unresolved, kind: unresolved_artifacts, severity: critical, window: { size: 10m }, min_samples: 50, max_rate: 0.05, suppress_for: 1h }
  - { name: dlq, kind: dead_letters, window: { size: 10m }, min_samples: 50, max_rate: 0.05, suppress_for: 1h }
`;
const rules: RulesDocument = parseRules(rulesYaml);
const min = 60_000;
const t0 = Date.UTC(2026, 0, 1, 12, 0, 0);

describe('psi', () => {
  const m = (o: Record<string, number>) => new Map(Object.entries(o));
  it('is 0 for the same mix, whatever the totals', () => {
    assert.equal(psi(m({ a: 70, b: 30 }), m({ a: 7, b: 3 })).psi, 0);
  });
  it('matches the textbook value', () => {
    // (0.4-0.7)ln(0.4/0.7) + (0.6-0.3)ln(0.6/0.3)
    const expected = -0.3 * Math.log(0.4 / 0.7) + 0.3 * Math.log(2);
    assert.ok(Math.abs(psi(m({ a: 70, b: 30 }), m({ a: 40, b: 60 })).psi - expected) < 1e-12);
  });
  it('is symmetric and finite when a category is missing on one side', () => {
    const x = psi(m({ a: 50, b: 50 }), m({ a: 100 }));
    const y = psi(m({ a: 100 }), m({ a: 50, b: 50 }));
    assert.ok(Number.isFinite(x.psi) && x.psi > 1);
    assert.ok(Math.abs(x.psi - y.psi) < 1e-12);
  });
  it('pools the tail beyond max categories', () => {
    const many = new Map(Array.from({ length: 50 }, (_, i) => [`d${i}`, 10] as const));
    const r = psi(many, many, { maxCategories: 5 });
    assert.equal(r.bins.length, 5);
    assert.ok(r.bins.some((b) => b.category === '(other)'));
    assert.equal(r.psi, 0);
  });
  it('is 0 for an empty side', () => {
    assert.equal(psi(new Map(), m({ a: 1 })).psi, 0);
  });
  it('pools categories seen too rarely on both sides: unique free-text decisions of two like versions are no shift', () => {
    const unique = (tag: string, n: number) => new Map(Array.from({ length: n }, (_, i) => [`${tag} ${i}`, 1] as const));
    for (const n of [50, 200, 5_000]) assert.equal(psi(unique('a', n), unique('b', n)).psi, 0, `n=${n}`);
    // Common decisions beside the free text are still compared, and a real shift still shows.
    const mixed = (approved: number, tag: string) => new Map([['approved', approved], ['declined', 100 - approved], ...unique(tag, 100)]);
    assert.equal(psi(mixed(70, 'a'), mixed(70, 'b')).psi, 0);
    assert.ok(psi(mixed(70, 'a'), mixed(20, 'b')).psi > 0.2);
    // Counted in decisions seen, not weights: 4 records sampled at 1 % are 4, not 400.
    const weighted = new Map([['x', 400], ['y', 9_600]]);
    assert.equal(psi(weighted, m({ y: 96 }), { counts: { baseline: 100, actual: 96 } }).bins.length, 2);
    assert.equal(psi(weighted, m({ y: 96 }), { counts: { baseline: 100, actual: 96 } }).bins.find((b) => b.category === '(other)')?.baseline, 0.04);
  });
});

describe('windows and watermark', () => {
  it('pane is the gcd of sizes and hops', () => {
    assert.equal(paneSize([{ size: 10 * min, hop: 5 * min }, { size: 6 * min, hop: 3 * min }]), min);
  });
  it('lists each closing window holding data once, ascending, and no empty ones', () => {
    const w = { size: 10 * min, hop: 5 * min };
    // A pane at 12:03 sits in windows ending 12:05 and 12:10; one at 14:00 in 14:05 and 14:10.
    const panes = [t0 + 3 * min, t0 + 4 * min, t0 + 120 * min];
    assert.deepEqual(closingWindowEnds(panes, w, -Infinity, t0 + 200 * min), [t0 + 5 * min, t0 + 10 * min, t0 + 125 * min, t0 + 130 * min]);
    assert.deepEqual(closingWindowEnds(panes, w, t0 + 5 * min, t0 + 126 * min), [t0 + 10 * min, t0 + 125 * min]);
    assert.deepEqual(closingWindowEnds(panes, { size: 10 * min, hop: 10 * min }, -Infinity, t0 + 9 * min), []);
  });
  it('watermark follows the slowest active partition minus lateness; quiet partitions stop counting', () => {
    assert.equal(watermark(new Map(), 0, 0, 1), undefined);
    const parts = new Map([
      ['a', { newest: 1_000, seenAt: 100 }],
      ['b', { newest: 900, seenAt: 100 }],
    ]);
    assert.equal(watermark(parts, 150, 10, 500), 890);
    parts.set('c', { newest: 100, seenAt: 100 }); // slow but delivering: holds windows open
    assert.equal(watermark(parts, 150, 10, 500), 90);
    parts.set('a', { newest: 1_000, seenAt: 700 });
    parts.set('b', { newest: 900, seenAt: 700 }); // c has been quiet for 600 ms
    assert.equal(watermark(parts, 700, 10, 500), 890);
    assert.equal(watermark(parts, 5_000, 10, 500), 990); // all quiet: the newest counts
  });
});

describe('aggregate', () => {
  it('leaves confidences outside [0, 1] out of the mean: one 1e308 made the baseline Infinity', () => {
    const agg = emptyAgg();
    const d = (confidence: number | null): DecisionObservation => ({ ts: 0, endpoint: 'e', model: 'm', version: '1', decision: 'a', confidence, weight: 1, resolved: true, unresolvedRefs: [] });
    for (const c of [0.9, 0.7, 1e308, -3, Number.NaN, null]) addDecision(agg, d(c));
    assert.equal(agg.n, 6);
    assert.equal(agg.confN, 2);
    assert.ok(Math.abs(meanConfidence(agg)! - 0.8) < 1e-12);
  });
});

describe('suppression', () => {
  it('admits the first, drops repeats within the window, admits again after it', () => {
    const last = new Map<string, number>();
    assert.equal(admit(last, 'k', 1_000, 500), true);
    assert.equal(admit(last, 'k', 1_400, 500), false);
    assert.equal(admit(last, 'other', 1_400, 500), true);
    assert.equal(admit(last, 'k', 1_500, 500), true);
    expire(last, 2_100, 500);
    assert.deepEqual([...last.keys()], []);
  });
});

describe('rules', () => {
  it('the shipped rules file is valid', () => {
    const doc = parseRules(readFileSync(new URL('../../../infra/alerts/rules.yaml', import.meta.url), 'utf8'));
    assert.ok(doc.rules.length >= 4);
    assert.deepEqual(new Set(doc.rules.map((r) => r.kind)), new Set(['confidence_drop', 'decision_mix_shift', 'unresolved_artifacts', 'dead_letters']));
  });
  it('parses durations', () => {
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration(1500), 1500);
    assert.equal(parseDuration('5 minutes'), undefined);
  });
  const bad = (text: string, path: RegExp, message: RegExp) =>
    assert.throws(
      () => parseRules(text, 'r.yaml'),
      (err: unknown) => err instanceof RulesError && path.test(err.path) && message.test(err.message),
    );
  const ok = 'watermark: { allowed_lateness: 0s, idle_partition_after: 1m }\nrules:\n';
  const conf = '{ name: c, kind: confidence_drop, window: { size: 10m }, min_samples: 5, min_drop: 0.1, suppress_for: 1h';
  it('refuses unknown keys, naming the path', () => {
    bad(`${ok}  - ${conf}, min_dorp: 0.1 }`, /^rules\[0\]$/, /min_dorp/);
    bad(`${ok}  - ${conf} }\nextra: 1`, /^$/, /extra/);
  });
  it('refuses a wrong kind, a bad duration, a window that is not a multiple of its hop, duplicate names', () => {
    bad(`${ok}  - { name: c, kind: latency, window: { size: 10m }, min_samples: 5, suppress_for: 1h }`, /^rules\[0\]/, /kind must be one of/);
    bad(`${ok}  - ${conf.replace('suppress_for: 1h', 'suppress_for: soon')} }`, /^rules\[0\]\.suppress_for$/, /not a duration/);
    bad(`${ok}  - ${conf.replace('{ size: 10m }', '{ size: 10m, hop: 3m }')} }`, /^rules\[0\]\.window$/, /multiple/);
    bad(`${ok}  - ${conf} }\n  - ${conf} }`, /^rules\[1\]\.name$/, /duplicate/);
    bad(`${ok}  - ${conf.replace('min_drop: 0.1', 'min_drop: 2')} }`, /^rules\[0\]\.min_drop$/, /./);
    bad('rules: [', /^$/, /not valid YAML/);
  });
});

it('compares versions numerically', () => {
  assert.ok(compareVersions('2.10.0', '2.9.1') > 0);
  assert.ok(compareVersions('2.4.1', '2.5.0') < 0);
  assert.equal(compareVersions('1.0', '1.0'), 0);
});

// ---- the engine on simulated traffic ----

/** Deterministic pseudo-random in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

interface Traffic {
  partition: string;
  d: DecisionObservation;
}

function traffic(opts: { minutes: number; perMinute: number; version: string; meanConf: number; approve: number; sampleRate?: number; unresolved?: number; seed: number }): Traffic[] {
  const r = rng(opts.seed);
  const out: Traffic[] = [];
  for (let m = 0; m < opts.minutes; m++) {
    for (let i = 0; i < opts.perMinute; i++) {
      const unresolved = r() < (opts.unresolved ?? 0);
      out.push({
        partition: `p${i % 3}`,
        d: {
          ts: t0 + m * min + Math.floor((i / opts.perMinute) * min),
          endpoint: 'loan-api',
          model: 'loan-approver',
          version: opts.version,
          decision: r() < opts.approve ? 'approved' : 'declined',
          confidence: Math.min(1, Math.max(0, opts.meanConf + (r() - 0.5) * 0.1)),
          weight: 1 / (opts.sampleRate ?? 1),
          resolved: !unresolved,
          unresolvedRefs: unresolved ? ['registry://models/loan-approver:' + opts.version] : [],
        },
      });
    }
  }
  return out;
}

function run(engine: Engine, events: Traffic[], batch: number, state: AlerterState = engine.newState()): AlertRecord[] {
  const sorted = [...events].sort((a, b) => a.d.ts - b.d.ts);
  const alerts: AlertRecord[] = [];
  for (let i = 0; i < sorted.length; i += batch) {
    // The wall clock runs with event time, as in a live run.
    const slice = sorted.slice(i, i + batch);
    for (const e of slice) engine.observeDecision(state, e.partition, e.d, e.d.ts);
    alerts.push(...engine.advance(state, slice[slice.length - 1]!.d.ts));
  }
  return alerts;
}

describe('engine', () => {
  const healthy = traffic({ minutes: 31, perMinute: 30, version: '2.4.1', meanConf: 0.9, approve: 0.7, sampleRate: 0.5, seed: 1 });
  const canary = traffic({ minutes: 31, perMinute: 10, version: '2.5.0', meanConf: 0.75, approve: 0.4, seed: 2 });

  it('raises confidence and mix alerts for the worse canary, none for the healthy incumbent; repeats suppressed', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    const alerts = run(engine, [...healthy, ...canary], 97, state);
    const byRule = (r: string) => alerts.filter((a) => a.rule === r);
    assert.equal(byRule('conf').length, 1, JSON.stringify(alerts.map((a) => a.summary)));
    assert.equal(byRule('mix').length, 1);
    assert.ok(alerts.every((a) => a.model_version === '2.5.0'));
    const conf = byRule('conf')[0]!;
    assert.equal(conf.evidence.baseline_version, '2.4.1');
    assert.equal(conf.evidence.baseline_source, 'concurrent');
    assert.equal(conf.window_end - conf.window_start, 10 * min);
    assert.equal(conf.scope_command, `dlog scope --model loan-approver:2.5.0 --endpoint loan-api --since ${new Date(conf.window_start).toISOString()} --until ${new Date(conf.window_end).toISOString()}`);
    assert.ok(Number(conf.evidence.drop) > 0.1 && Number(conf.evidence.drop) < 0.2, conf.evidence.drop);
    // Weighted: 2.4.1 is sampled at 0.5, so 300 observed stand for 600.
    assert.equal(Number(conf.evidence.baseline_weight), 2 * Number(conf.evidence.baseline_n));
    const mix = byRule('mix')[0]!;
    assert.ok(Number(mix.evidence.psi) >= 0.2, mix.evidence.psi);
    assert.ok(JSON.parse(mix.evidence_json!).bins.length === 2);
    // Windows every 5 minutes over 30 minutes: the later firings were suppressed.
    assert.ok(state.counters.suppressed >= 4, String(state.counters.suppressed));
  });

  it('stays silent when both versions behave the same', () => {
    const twin = traffic({ minutes: 31, perMinute: 10, version: '2.5.0', meanConf: 0.9, approve: 0.7, seed: 3 });
    assert.deepEqual(run(createEngine(rules), [...healthy, ...twin], 100), []);
  });

  it('does not fire below the minimum sample size', () => {
    const few = traffic({ minutes: 31, perMinute: 2, version: '2.5.0', meanConf: 0.5, approve: 0.1, seed: 4 });
    assert.deepEqual(run(createEngine(rules), [...healthy, ...few], 100), []);
  });

  it('gives the same alerts whatever the batching (replay is deterministic)', () => {
    const all = [...healthy, ...canary];
    const a = run(createEngine(rules), all, 7).map((x) => x.alert_id);
    const b = run(createEngine(rules), all, 500).map((x) => x.alert_id);
    assert.deepEqual(a, b);
    assert.ok(a.length > 0);
  });

  it('judges a full rollout against its predecessor', () => {
    const before = healthy.filter((e) => e.d.ts < t0 + 15 * min);
    const after = traffic({ minutes: 31, perMinute: 30, version: '2.5.0', meanConf: 0.7, approve: 0.7, seed: 5 }).filter((e) => e.d.ts >= t0 + 25 * min);
    const alerts = run(createEngine(rules), [...before, ...after], 100);
    const conf = alerts.find((a) => a.rule === 'conf');
    assert.ok(conf, 'confidence alert after rollout');
    assert.equal(conf.model_version, '2.5.0');
    assert.equal(conf.evidence.baseline_source, 'predecessor');
    assert.equal(alerts.filter((a) => a.rule === 'mix').length, 0);
  });

  it('still judges a full rollout against its predecessor after a restart, from the baselines it wrote', () => {
    const before = healthy.filter((e) => e.d.ts < t0 + 15 * min);
    const after = traffic({ minutes: 31, perMinute: 30, version: '2.5.0', meanConf: 0.7, approve: 0.7, seed: 5 }).filter((e) => e.d.ts >= t0 + 25 * min);
    const first = createEngine(rules).newState();
    run(createEngine(rules), before, 100, first);
    // What the alerter wrote to the topic, through the same encoding, applied to a new state.
    const records = [...first.baselineChanges].map(([k, entry]) => encodeBaseline(k, entry)!);
    assert.deepEqual(new Set(records.map((r) => JSON.parse(r.key)[0])), new Set(['conf', 'mix']));
    const restarted = createEngine(rules).newState();
    for (const r of records) {
      const b = decodeBaseline(Buffer.from(r.key), r.value === null ? null : Buffer.from(r.value));
      assert.ok(b.ok, JSON.stringify(b));
      applyBaseline(restarted, new Set(['conf', 'mix']), b);
    }
    assert.deepEqual(restarted.history, first.history);
    const conf = run(createEngine(rules), after, 100, restarted).find((a) => a.rule === 'conf');
    assert.ok(conf, 'confidence alert after the restart');
    assert.equal(conf.evidence.baseline_source, 'predecessor');
    assert.equal(conf.evidence.baseline_version, '2.4.1');
    // Without them (what the input replay alone rebuilds when the predecessor retired long ago): silence.
    assert.deepEqual(run(createEngine(rules), after, 100).filter((a) => a.rule === 'conf'), []);
  });

  it('lets old versions\' baselines go after baseline_retention, but never a model\'s two newest', () => {
    const engine = createEngine(parseRules(`${rulesYaml}\nbaseline_retention: 1h\n`));
    const state = engine.newState();
    const entry = (model: string, version: string, windowEnd: number) => ({ windowEnd, subject: { endpoint: 'loan-api', model, version, agg: emptyAgg() } });
    const history = new Map([
      [subjectKey('loan-api', 'm', '1.7.0'), entry('m', '1.7.0', t0)],
      [subjectKey('loan-api', 'm', '1.9.0'), entry('m', '1.9.0', t0)],
      [subjectKey('loan-api', 'm', '1.10.0'), entry('m', '1.10.0', t0)],
      [subjectKey('loan-api', 'm', '1.8.0'), entry('m', '1.8.0', t0 + 2 * 60 * min)],
      [subjectKey('loan-api', 'other', '0.1'), entry('other', '0.1', t0)],
    ]);
    state.history.set('conf', history);
    const names = () => [...history.keys()].map((k) => k.split('\u0000').slice(1).join(':')).sort();
    // A restore that ran out of time: nothing goes.
    state.baselinesComplete = false;
    pruneBaselines(state, t0 + 60 * min);
    assert.equal(history.size, 5);
    state.baselinesComplete = true;
    pruneBaselines(state, t0 + 60 * min);
    // 1.7.0 is old and below m's two newest (1.10.0 and 1.9.0, numerically); 1.8.0 is recent; `other` has one version.
    assert.deepEqual(names(), ['m:1.10.0', 'm:1.8.0', 'm:1.9.0', 'other:0.1']);
    assert.deepEqual([...state.baselineChanges], [[baselineKey('conf', subjectKey('loan-api', 'm', '1.7.0')), null]]);
    // An endpoint named after a pod, gone for longer than the stale bound: its two go too; an
    // endpoint and model that served since keep their two newest, however old.
    const pod = (version: string) => ({ windowEnd: t0, subject: { endpoint: 'pod-7f9c', model: 'm', version, agg: emptyAgg() } });
    history.set(subjectKey('pod-7f9c', 'm', '1.9.0'), pod('1.9.0'));
    history.set(subjectKey('pod-7f9c', 'm', '1.10.0'), pod('1.10.0'));
    // Still serving, below min_samples: in an open pane, never in history since. Its two stay.
    history.set(subjectKey('quiet-api', 'm', '3.0'), { windowEnd: t0, subject: { endpoint: 'quiet-api', model: 'm', version: '3.0', agg: emptyAgg() } });
    state.panes.set(t0 + 3 * 60 * min, { subjects: new Map([[subjectKey('quiet-api', 'm', '3.0'), emptyAgg()]]), deadLetters: { n: 0, byReason: new Map() }, overflow: { n: 0, weight: 0 }, ownAggs: new Set() });
    state.baselineChanges.clear();
    pruneBaselines(state, t0 + 60 * min, t0 + 1);
    assert.deepEqual(names(), ['m:1.10.0', 'm:1.8.0', 'm:1.9.0', 'm:3.0'], '`other` and the pod had no window since the stale bound, and no decision in the open panes');
    assert.deepEqual([...state.baselineChanges.keys()].sort(), [
      baselineKey('conf', subjectKey('loan-api', 'other', '0.1')),
      baselineKey('conf', subjectKey('pod-7f9c', 'm', '1.10.0')),
      baselineKey('conf', subjectKey('pod-7f9c', 'm', '1.9.0')),
    ].sort());
    assert.equal(parseRules(rulesYaml).baseline_retention, 30 * 24 * 60 * min);

    // Through the engine: 2.3.0 and 2.4.1, then two hours of nothing, then 2.5.0, healthy for a
    // while and then worse. 2.4.1 stays the predecessor however long 2.5.0 runs; 2.3.0 goes.
    const live = engine.newState();
    const older = traffic({ minutes: 11, perMinute: 30, version: '2.3.0', meanConf: 0.9, approve: 0.7, seed: 8 });
    const later = (from: number, to: number, meanConf: number, seed: number) =>
      traffic({ minutes: to, perMinute: 30, version: '2.5.0', meanConf, approve: 0.7, seed })
        .filter((e) => e.d.ts >= t0 + from * min)
        .map((e) => ({ ...e, d: { ...e.d, ts: e.d.ts + 120 * min } }));
    const alerts = run(engine, [...older, ...healthy.filter((e) => e.d.ts < t0 + 11 * min), ...later(0, 15, 0.9, 7), ...later(15, 40, 0.7, 9)], 100, live);
    assert.deepEqual([...(live.history.get('conf')?.values() ?? [])].map((h) => h.subject.version).sort(), ['2.4.1', '2.5.0']);
    assert.equal(live.baselineChanges.get(baselineKey('conf', subjectKey('loan-api', 'loan-approver', '2.3.0'))), null);
    const conf = alerts.find((a) => a.rule === 'conf');
    assert.ok(conf, 'the worse 2.5.0 is judged against 2.4.1, retired two hours before');
    assert.equal(conf.evidence.baseline_version, '2.4.1');
    assert.equal(conf.evidence.baseline_source, 'predecessor');
  });

  it('does not let the replay after a restart replace a restored baseline with an earlier window', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    const k = subjectKey('loan-api', 'loan-approver', '2.4.1');
    const restored = { windowEnd: t0 + 15 * min, subject: { endpoint: 'loan-api', model: 'loan-approver', version: '2.4.1', agg: emptyAgg() } };
    state.history.set('conf', new Map([[k, restored]]));
    run(engine, healthy.filter((e) => e.d.ts < t0 + 12 * min), 100, state);
    assert.ok(state.counters.windows > 0);
    assert.equal(state.history.get('conf')?.get(k), restored);
    assert.equal(state.baselineChanges.has(baselineKey('conf', k)), false);
    // A later window does replace it.
    run(engine, healthy.filter((e) => e.d.ts >= t0 + 12 * min), 100, state);
    assert.ok(state.history.get('conf')!.get(k)!.windowEnd > restored.windowEnd);
    assert.equal(state.baselineChanges.get(baselineKey('conf', k)), state.history.get('conf')!.get(k));
  });

  it('works a batch on a copy: whatever the batch does, the state it was copied from stays as it was (an aborted batch)', () => {
    const engine = createEngine(parseRules(`${rulesYaml}\nbaseline_retention: 1m\n`));
    const committed = engine.newState();
    run(engine, healthy.filter((e) => e.d.ts < t0 + 12 * min), 100, committed);
    const versions = (s: AlerterState) => [...s.history.entries()].map(([r, h]) => [r, [...h.values()].map((e) => `${e.subject.version}@${e.windowEnd}`)]);
    const before = { history: versions(committed), panes: structuredClone(committed.panes), counters: { ...committed.counters } };
    const entry = committed.history.get('conf')!.get(subjectKey('loan-api', 'loan-approver', '2.4.1'))!;
    const batch = cloneState(committed);
    assert.notEqual(batch.history, committed.history);
    // The batch closes more windows (replacing 2.4.1's entry), adds 2.3.0 and 2.2.0, prunes 2.2.0.
    // It also adds to a pane the state already had (5-minute panes: the one from minute 10).
    const more = traffic({ minutes: 31, perMinute: 30, version: '2.3.0', meanConf: 0.9, approve: 0.7, seed: 11 });
    const older = traffic({ minutes: 13, perMinute: 30, version: '2.2.0', meanConf: 0.9, approve: 0.7, seed: 12 });
    run(engine, [...healthy.filter((e) => e.d.ts >= t0 + 12 * min), ...more, ...older].filter((e) => e.d.ts >= t0 + 11 * min), 100, batch);
    assert.equal(batch.counters.late, 0);
    assert.notDeepEqual(versions(batch), before.history);
    assert.deepEqual(versions(committed), before.history);
    assert.equal(committed.history.get('conf')!.get(subjectKey('loan-api', 'loan-approver', '2.4.1')), entry);
    assert.deepEqual(committed.panes, before.panes);
    // A pane a batch adds to is copied for it; the others are shared, not copied.
    const probe = cloneState(committed);
    engine.observeDecision(probe, 'p0', { ...healthy[0]!.d, ts: t0 + 11 * min }, t0 + 11 * min);
    assert.ok(committed.panes.has(t0 + 5 * min) && committed.panes.has(t0 + 10 * min));
    assert.equal(probe.panes.get(t0 + 5 * min), committed.panes.get(t0 + 5 * min));
    assert.notEqual(probe.panes.get(t0 + 10 * min), committed.panes.get(t0 + 10 * min));
    assert.deepEqual(committed.panes, before.panes);
    assert.deepEqual(committed.counters, before.counters);
    assert.equal(committed.baselineChanges.size > 0, true);
  });

  it('takes a predecessor only from a window that ended before the one judged (a replay after a restore sees what the first run saw)', () => {
    const subject = (version: string) => ({ endpoint: 'loan-api', model: 'loan-approver', version, agg: emptyAgg() });
    const history = new Map([
      [subjectKey('loan-api', 'loan-approver', '2.3.0'), { windowEnd: t0, subject: subject('2.3.0') }],
      [subjectKey('loan-api', 'loan-approver', '2.4.1'), { windowEnd: t0 + 30 * min, subject: subject('2.4.1') }],
    ]);
    assert.equal(pickBaseline(subject('2.5.0'), [], history)?.baseline.version, '2.4.1');
    assert.equal(pickBaseline(subject('2.5.0'), [], history, t0 + 40 * min)?.baseline.version, '2.4.1');
    assert.equal(pickBaseline(subject('2.5.0'), [], history, t0 + 30 * min)?.baseline.version, '2.3.0');
    assert.equal(pickBaseline(subject('2.5.0'), [], history, t0), undefined);
  });

  it('reads back what it wrote, refuses what it cannot read, and leaves out rules no longer configured', () => {
    const agg = emptyAgg();
    agg.n = 3;
    agg.decisions.set('__proto__', 2).set('approved', 1);
    agg.unresolvedRefs.set('registry://models/x:1', 1);
    const k = baselineKey('conf', subjectKey('api', 'm', '1.0'));
    const rec = encodeBaseline(k, { windowEnd: t0, subject: { endpoint: 'api', model: 'm', version: '1.0', agg } })!;
    const back = decodeBaseline(rec.key, rec.value);
    assert.ok(back.ok && back.entry);
    // A comparison does not read the unresolved refs: they are not kept.
    assert.deepEqual(back.entry.subject.agg, { ...agg, unresolvedRefs: new Map() });
    assert.deepEqual(decodeBaseline(rec.key, null), { ok: true, rule: 'conf', subject: subjectKey('api', 'm', '1.0'), entry: null });
    const bad = (key: string | null, value: string | null, reason: RegExp) => {
      const r = decodeBaseline(key === null ? null : Buffer.from(key), value === null ? null : Buffer.from(value));
      assert.ok(!r.ok && reason.test(r.reason), JSON.stringify(r));
    };
    bad('not json', rec.value, /not JSON/);
    bad(null, rec.value, /key/);
    bad(JSON.stringify(['conf', 'api', 'm']), rec.value, /key/);
    bad(rec.key, rec.value!.replace('"format":1', '"format":2'), /format/);
    bad(rec.key, rec.value!.replace('"n":3', '"n":-1'), /agg\.n/);
    bad(JSON.stringify(['conf', 'api', 'm', '2.0']), rec.value, /another rule or subject/);

    // A rule taken out of the rules file: its baselines are not restored, and not deleted either.
    const state = createEngine(rules).newState();
    applyBaseline(state, new Set(['mix']), back);
    assert.equal(state.history.size, 0);
    assert.equal(state.baselineChanges.size, 0);
    applyBaseline(state, new Set(['conf']), back);
    assert.equal(state.history.get('conf')?.size, 1);
    applyBaseline(state, new Set(['conf']), { ok: true, rule: 'conf', subject: subjectKey('api', 'm', '1.0'), entry: null });
    assert.equal(state.history.get('conf')?.size, 0);
  });

  it('keeps a record within the broker\'s limits: free-text decisions beyond 64 KiB are pooled, absurd identifiers not written', () => {
    const agg = emptyAgg();
    let total = 0;
    for (let i = 0; i < 200; i++) {
      agg.decisions.set(`step ${String(i).padStart(3, '0')} ${'x'.repeat(2_000)}`, 200 - i);
      total += 200 - i;
    }
    const rec = encodeBaseline(baselineKey('mix', subjectKey('agent', 'planner', '1')), { windowEnd: t0, subject: { endpoint: 'agent', model: 'planner', version: '1', agg } })!;
    assert.ok(Buffer.byteLength(rec.value!) <= maxDecisionBytes + 4_096, String(Buffer.byteLength(rec.value!)));
    const back = decodeBaseline(rec.key, rec.value);
    assert.ok(back.ok && back.entry);
    const d = back.entry.subject.agg.decisions;
    assert.ok(d.size > 20 && d.size < 40, String(d.size));
    // The most frequent are kept as they were; the rest is pooled, and nothing is lost from the total.
    assert.equal(d.get(`step 000 ${'x'.repeat(2_000)}`), 200);
    assert.ok(!d.has(`step 199 ${'x'.repeat(2_000)}`));
    assert.equal([...d.values()].reduce((a, b) => a + b, 0), total);
    assert.ok(d.get('(other)')! > 0);
    const huge = 'e'.repeat(maxRecordBytes);
    assert.equal(encodeBaseline(baselineKey('mix', subjectKey(huge, 'planner', '1')), { windowEnd: t0, subject: { endpoint: huge, model: 'planner', version: '1', agg: emptyAgg() } }), undefined);
  });

  it('alerts on unresolved artifacts per version', () => {
    const bad = traffic({ minutes: 11, perMinute: 10, version: '3.0.0', meanConf: 0.9, approve: 0.7, unresolved: 0.5, seed: 6 });
    const alerts = run(createEngine(rules), [...healthy.filter((e) => e.d.ts < t0 + 11 * min), ...bad], 100).filter((a) => a.rule === 'unresolved');
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0]!.model_version, '3.0.0');
    assert.equal(alerts[0]!.severity, 'critical');
    assert.match(alerts[0]!.evidence_json!, /loan-approver:3\.0\.0/);
  });

  it('alerts on the dead-letter rate against weighted decisions', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    const decisions = healthy.filter((e) => e.d.ts < t0 + 10 * min); // 300 observed, weight 600
    for (const e of decisions) engine.observeDecision(state, e.partition, e.d, e.d.ts);
    for (let i = 0; i < 20; i++) engine.observeDeadLetter(state, 'dlq:0', { ts: t0 + i * 1000, reason: 'invalid_json' }, t0 + i * 1000);
    assert.deepEqual(engine.advance(state, t0 + 10 * min), []); // nothing closed yet
    // 20 / 620 ≈ 3.2 %: below 5 %; 40 more make 60 / 660 ≈ 9 %.
    const quiet = createEngine(rules);
    const s2 = structuredClone(state);
    for (const e of healthy.filter((x) => x.d.ts >= t0 + 10 * min && x.d.ts < t0 + 11 * min)) quiet.observeDecision(s2, e.partition, e.d, e.d.ts);
    assert.deepEqual(quiet.advance(s2, t0 + 11 * min).filter((a) => a.rule === 'dlq'), []);
    for (let i = 0; i < 40; i++) engine.observeDeadLetter(state, 'dlq:0', { ts: t0 + i * 1000, reason: 'missing_field' }, t0 + i * 1000);
    for (const e of healthy.filter((x) => x.d.ts >= t0 + 10 * min && x.d.ts < t0 + 11 * min)) engine.observeDecision(state, e.partition, e.d, e.d.ts);
    const alerts = engine.advance(state, t0 + 11 * min).filter((a) => a.rule === 'dlq');
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0]!.evidence.dead_letters, '60');
    assert.equal(alerts[0]!.evidence['reason.missing_field'], '40');
    assert.equal(alerts[0]!.model_name, null);
    // Something an on-call engineer can run as it is (dlog scope needs a model version; dead
    // letters name none): the window's accepted traffic by endpoint and version.
    const w = alerts[0]!;
    const at = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
    assert.equal(
      w.scope_command,
      `dlog query "SELECT endpoint, model_name, model_version, sum(total) AS decisions FROM v_decision_totals WHERE minute >= toDateTime('${at(w.window_start)}', 'UTC') AND minute < toDateTime('${at(w.window_end)}', 'UTC') GROUP BY endpoint, model_name, model_version ORDER BY decisions DESC"`,
    );
  });

  it('places a dead letter at its original record time, so a gate working off a backlog does not pile refusals into the current window', () => {
    const refused = String(t0 + 30 * min);
    const headers = (source?: string) => ({ 'dlog.reason': Buffer.from('invalid_json'), ...(source === undefined ? {} : { 'dlog.source.timestamp': Buffer.from(source) }) });
    assert.deepEqual(toDeadLetterObservation({ timestamp: refused, headers: headers(String(t0 + 2 * min)) }), { ts: t0 + 2 * min, reason: 'invalid_json' });
    // No header (an older gate), a time after the refusal, or one that is not a time: the refusal time.
    assert.equal(toDeadLetterObservation({ timestamp: refused, headers: headers() }).ts, t0 + 30 * min);
    assert.equal(toDeadLetterObservation({ timestamp: refused, headers: headers(String(t0 + 31 * min)) }).ts, t0 + 30 * min);
    assert.equal(toDeadLetterObservation({ timestamp: refused, headers: headers('1e12') }).ts, t0 + 30 * min);
    assert.equal(toDeadLetterObservation({ timestamp: refused, headers: { 'dlog.reason': Buffer.from('') } }).reason, 'unknown');

    // A 30-minute gate outage at a steady 3 % refusal rate, worked off in seconds at 30:30: by
    // refusal time all ~90 refusals fell into the window from 30:00, against its 1000 decisions
    // (8 %), and paged.
    const engine = createEngine(rules);
    const state = engine.newState();
    const catchUp = t0 + 30.5 * min;
    let alerts: AlertRecord[] = [];
    for (let m = 0; m < 41; m++) {
      for (let i = 0; i < 100; i++) {
        const ts = t0 + m * min + i * 600;
        const now = Math.max(ts, catchUp);
        engine.observeDecision(state, 'p0', { ts, endpoint: 'loan-api', model: 'loan-approver', version: '2.4.1', decision: 'approved', confidence: 0.9, weight: 1, resolved: true, unresolvedRefs: [] }, now);
        if (m < 30 && (m * 100 + i) % 33 === 0) engine.observeDeadLetter(state, 'dlq:0', toDeadLetterObservation({ timestamp: String(catchUp), headers: headers(String(ts)) }), now);
      }
      alerts = alerts.concat(engine.advance(state, Math.max(t0 + m * min, catchUp)));
    }
    alerts = alerts.concat(engine.advance(state, t0 + 60 * min));
    assert.ok(state.counters.deadLetters > 80, `${state.counters.deadLetters} dead letters counted`);
    assert.equal(state.counters.late, 0);
    assert.ok(state.counters.windows > 0);
    assert.deepEqual(alerts.filter((a) => a.rule === 'dlq'), [], 'a steady 3 % is below the 5 % limit in every window');
  });

  describe('the enricher down while the gate goes on (its counts say decisions are coming)', () => {
    const quickIdle = parseRules(rulesYaml.replace('idle_partition_after: 1h', 'idle_partition_after: 10s'));
    const decisionAt = (ts: number): DecisionObservation => ({ ts, endpoint: 'loan-api', model: 'loan-approver', version: '2.4.1', decision: 'approved', confidence: 0.9, weight: 1, resolved: true, unresolvedRefs: [] });
    /** Minute m of traffic: 1000 accepted events, 30 refused (3 %, under the 5 % limit), the gate's counts. */
    function gateMinute(engine: Engine, state: AlerterState, m: number, now: number): void {
      engine.observeGateCounts(state, { minute: t0 + m * min, kept: 1000, dropped: 0 });
      for (let i = 0; i < 30; i++) engine.observeDeadLetter(state, 'dlq:0', { ts: t0 + m * min + i * 2000, reason: 'invalid_json' }, now);
    }
    const decisionsOf = (engine: Engine, state: AlerterState, m: number, now: number) => {
      for (let i = 0; i < 1000; i++) engine.observeDecision(state, 'p0', decisionAt(t0 + m * min + i * 60), now);
    };

    it('dead letters do not close windows without the decisions, and the decisions count once they come', () => {
      const engine = createEngine(quickIdle);
      const state = engine.newState();
      let alerts: AlertRecord[] = [];
      for (let m = 0; m < 10; m++) {
        decisionsOf(engine, state, m, t0 + m * min + 30_000);
        gateMinute(engine, state, m, t0 + m * min + 30_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      const before = state.closedUpTo;
      // Minutes 10-17: the enricher is down; refusals and counts go on, no decision arrives.
      for (let m = 10; m < 18; m++) {
        gateMinute(engine, state, m, t0 + m * min + 30_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      assert.ok((state.closedUpTo ?? 0) <= t0 + 10 * min, `held at ${new Date(state.closedUpTo ?? 0).toISOString()} (was ${new Date(before ?? 0).toISOString()})`);
      // Back: the backlog of decisions arrives, then live traffic.
      for (let m = 10; m < 18; m++) decisionsOf(engine, state, m, t0 + 18 * min);
      for (let m = 18; m < 30; m++) {
        decisionsOf(engine, state, m, t0 + m * min + 30_000);
        gateMinute(engine, state, m, t0 + m * min + 30_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      assert.equal(state.counters.late, 0, 'no decision came too late');
      assert.equal(state.counters.decisions, 30_000);
      assert.ok((state.closedUpTo ?? 0) >= t0 + 25 * min, 'windows closed again');
      assert.deepEqual(alerts.filter((a) => a.rule === 'dlq'), [], 'a steady 3 % never pages');
    });

    it('a decision lost on the way holds nothing: the gate refusing everything still pages at once', () => {
      const engine = createEngine(quickIdle);
      const state = engine.newState();
      let alerts: AlertRecord[] = [];
      for (let m = 0; m < 6; m++) {
        decisionsOf(engine, state, m, t0 + m * min + 30_000);
        // One of minute 3's kept decisions never arrives (the enricher dead-lettered it).
        engine.observeGateCounts(state, { minute: t0 + m * min, kept: m === 3 ? 1001 : 1000, dropped: 0 });
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      // From minute 6 the gate refuses everything: dead letters only.
      let pagedAt: number | undefined;
      for (let sec = 6 * 60; sec < 20 * 60 && pagedAt === undefined; sec += 5) {
        for (let i = 0; i < 10; i++) engine.observeDeadLetter(state, 'dlq:0', { ts: t0 + sec * 1000 + i * 500, reason: 'schema_invalid' }, t0 + sec * 1000 + 5000);
        if (engine.advance(state, t0 + sec * 1000 + 5000).some((a) => a.rule === 'dlq')) pagedAt = sec;
      }
      assert.ok(pagedAt !== undefined && pagedAt < 11 * 60, `paged at ${pagedAt} s`);
    });

    it('a window whose edges are not on a minute takes the decisions\' weight, not a minute of counts it half holds', () => {
      const halfMinute = parseRules(`
watermark: { allowed_lateness: 0s, idle_partition_after: 1h }
rules:
  - { name: dlq, kind: dead_letters, window: { size: 30s }, min_samples: 50, max_rate: 0.02, suppress_for: 1s }
`);
      const engine = createEngine(halfMinute);
      const state = engine.newState();
      let alerts: AlertRecord[] = [];
      // 3.8 % refused, every half minute alike.
      for (let m = 0; m < 10; m++) {
        decisionsOf(engine, state, m, t0 + m * min + 59_000);
        engine.observeGateCounts(state, { minute: t0 + m * min, kept: 20_000, dropped: 0 });
        for (let i = 0; i < 40; i++) engine.observeDeadLetter(state, 'dlq:0', { ts: t0 + m * min + i * 1500, reason: 'invalid_json' }, t0 + m * min + 59_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      const paged = alerts.filter((a) => a.rule === 'dlq');
      const onTheMinute = paged.filter((a) => a.window_start % min === 0);
      assert.ok(onTheMinute.length >= 8, `${onTheMinute.length} of the windows starting on the minute paged (${paged.length} in all)`);
      assert.ok(onTheMinute.every((a) => a.evidence.gate_kept === '0'));
    });

    it('an enricher that stays down: windows close after the longest window, and the rate comes from the gate counts', () => {
      const engine = createEngine(quickIdle);
      const state = engine.newState();
      let alerts: AlertRecord[] = [];
      for (let m = 0; m < 5; m++) {
        decisionsOf(engine, state, m, t0 + m * min + 30_000);
        gateMinute(engine, state, m, t0 + m * min + 30_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      for (let m = 5; m < 40; m++) {
        gateMinute(engine, state, m, t0 + m * min + 30_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      assert.ok((state.closedUpTo ?? 0) >= t0 + 30 * min, 'no longer held');
      assert.deepEqual(alerts.filter((a) => a.rule === 'dlq'), [], 'refusals against the gate\'s 1000 a minute: 3 %, no page');
      // And a real rise still pages: 20 % refused with the enricher down.
      for (let m = 40; m < 60; m++) {
        engine.observeGateCounts(state, { minute: t0 + m * min, kept: 1000, dropped: 0 });
        for (let i = 0; i < 250; i++) engine.observeDeadLetter(state, 'dlq:0', { ts: t0 + m * min + i * 200, reason: 'schema_invalid' }, t0 + m * min + 30_000);
        alerts = alerts.concat(engine.advance(state, t0 + (m + 1) * min));
      }
      const paged = alerts.filter((a) => a.rule === 'dlq');
      assert.equal(paged.length, 1);
      assert.equal(paged[0]!.evidence.gate_kept, '10000');
      assert.match(paged[0]!.summary, /^20(\.00)?% of inference events/);
    });
  });

  it('drops input that arrives after its windows closed, and counts it', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    run(engine, healthy, 100, state);
    engine.observeDecision(state, 'p0', { ...healthy[0]!.d }, healthy[healthy.length - 1]!.d.ts);
    assert.equal(state.counters.late, 1);
  });

  it('closes windows on dead letters alone: when the gate refuses everything, the rule still fires', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    let alerts: AlertRecord[] = [];
    // One dead letter a second for 20 minutes, no decision at all.
    for (let i = 0; i < 20 * 60; i++) {
      const ts = t0 + i * 1000;
      engine.observeDeadLetter(state, 'dlq:0', { ts, reason: 'invalid_json' }, ts);
      if (i % 10 === 9) alerts = alerts.concat(engine.advance(state, ts));
    }
    assert.ok(alerts.some((a) => a.rule === 'dlq'), 'the dead-letter rule fired');
    assert.ok(state.panes.size < 40, `closed panes are let go (${state.panes.size} held)`);
  });

  it('a producer clock an hour fast does not close windows still filling', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    const sorted = [...healthy].sort((a, b) => a.d.ts - b.d.ts);
    // A record stamped an hour ahead arrives first on every partition.
    for (const partition of new Set(sorted.map((e) => e.partition))) {
      engine.observeDecision(state, partition, { ...sorted[0]!.d, ts: sorted[0]!.d.ts + 60 * min }, sorted[0]!.d.ts);
    }
    for (const e of sorted) {
      engine.observeDecision(state, e.partition, e.d, e.d.ts);
      engine.advance(state, e.d.ts);
    }
    assert.equal(state.counters.late, 0);
  });
});

// ---- restarts: the checkpoint written with the alerts ----

/**
 * The alerter's batch loop and restart as create-alerter runs them, without Kafka: a batch works
 * on a copy, closes windows unless the startup wait holds them, and "commits" its alerts with the
 * checkpoint record when one is due; a restart observes the committed input again (all of it
 * here: within what the re-read reaches) and resumes from the checkpoint records on the topic.
 * `writes: false` is an alerter from before checkpoints.
 */
class Pipeline {
  state: AlerterState;
  sent: AlertRecord[] = [];
  committed: { partition: string; d?: DecisionObservation; dl?: DeadLetterObservation }[] = [];
  /** The checkpoint records on alerter.baselines, one partition. */
  topic: CheckpointRecord[] = [];
  waiting = new Set<string>();
  resumed: string | undefined;
  constructor(
    readonly engine: Engine,
    public writes = true,
  ) {
    this.state = engine.newState();
  }
  get checkpoint(): string | undefined {
    return this.topic.at(-1)?.value as string | undefined;
  }
  write(value: string, now: number): void {
    this.topic.push({ partition: 0, offset: this.topic.length, timestamp: now, value });
  }
  batch(partition: string, records: { d?: DecisionObservation; dl?: DeadLetterObservation }[], now: number): void {
    const next = cloneState(this.state);
    for (const r of records) {
      if (r.d) this.engine.observeDecision(next, partition, r.d, now);
      else this.engine.observeDeadLetter(next, partition, r.dl!, now);
    }
    this.waiting.delete(partition);
    const alerts = this.waiting.size > 0 ? [] : this.engine.advance(next, now);
    const c = this.writes ? this.engine.checkpointDue(next) : undefined;
    if (c) {
      this.write(encodeCheckpoint(c).value, now);
      next.written = c;
    }
    this.sent.push(...alerts);
    this.committed.push(...records.map((r) => ({ ...r, partition })));
    this.state = next;
  }
  /** `crash`: records of a batch processed but never committed are simply not in `committed`. */
  restart(now: number, unread: string[] = []): void {
    const rebuilt = this.engine.newState();
    for (const r of this.committed) {
      if (r.d) this.engine.observeDecision(rebuilt, r.partition, r.d, now);
      else this.engine.observeDeadLetter(rebuilt, r.partition, r.dl!, now);
    }
    const picker = new CheckpointPicker();
    for (const r of this.topic) picker.add(r);
    this.resumed = this.engine.resume(rebuilt, picker.result(true), this.committed.length > 0, now);
    this.state = rebuilt;
    this.waiting = new Set(unread.filter((p) => !rebuilt.newest.has(p)));
  }
}

describe('restart', () => {
  // Quiet partitions stop holding windows after 30 s, as in the shipped rules.
  const restartRules = parseRules(rulesYaml.replace('idle_partition_after: 1h', 'idle_partition_after: 30s'));
  const dec = (ts: number, version: string, confidence: number, decision = 'approved', endpoint = 'loan-api'): { d: DecisionObservation } => ({
    d: { ts, endpoint, model: 'loan-approver', version, decision, confidence, weight: 1, resolved: true, unresolvedRefs: [] },
  });
  const duplicates = (alerts: AlertRecord[]) => alerts.length - new Set(alerts.map((a) => a.alert_id)).size;

  it('does not send again what it sent before a restart, when a partition had gone quiet (the watermark it held back came back)', () => {
    const p = new Pipeline(createEngine(restartRules));
    // p0: the incumbent and a worse canary for 20 minutes; p1: another endpoint for 3 minutes, then quiet.
    for (let sec = 0; sec < 20 * 60; sec += 5) {
      const ts = t0 + sec * 1000;
      p.batch('p0', [0, 1, 2, 3].flatMap((i) => [dec(ts + i, '2.4.1', 0.9), dec(ts + i, '2.5.0', 0.75)]), ts + 500);
      if (sec < 3 * 60) p.batch('p1', [dec(ts, '1.0.0', 0.8, 'ok', 'other-api')], ts + 501);
    }
    const before = p.sent.map((a) => a.alert_id);
    assert.equal(p.sent.filter((a) => a.rule === 'conf').length, 1);
    const closedBefore = p.state.closedUpTo!;

    const restartAt = t0 + 20 * min + 1000;
    p.restart(restartAt);
    // Written when closedUpTo changes pane: no window ends within one.
    assert.equal(Math.floor(p.state.closedUpTo! / p.engine.pane), Math.floor(closedBefore / p.engine.pane));
    assert.equal(p.state.lastFired.size, 1);
    // p0 goes on; p1 (replayed, so "just heard from") holds windows until it is quiet again.
    for (let sec = 20 * 60; sec < 22 * 60; sec += 5) {
      const ts = t0 + sec * 1000;
      p.batch('p0', [dec(ts, '2.4.1', 0.9), dec(ts, '2.5.0', 0.75)], restartAt + (sec - 20 * 60) * 1000);
    }
    assert.ok(p.state.closedUpTo! > closedBefore + min, 'windows close again after the restart');
    assert.deepEqual(p.sent.map((a) => a.alert_id), before, 'nothing sent after the restart: the canary is still suppressed');
    assert.equal(p.state.counters.late, 0);
  });

  it('does not re-send the dead-letter alert at each restart during an outage', () => {
    const p = new Pipeline(createEngine(restartRules));
    for (let sec = 0; sec < 60; sec += 5) p.batch('d0', [dec(t0 + sec * 1000, '2.4.1', 0.9)], t0 + sec * 1000 + 100);
    const refused = (from: number) => Array.from({ length: 25 }, (_, i) => ({ dl: { ts: from + i * 200, reason: 'invalid_json' } }));
    for (let sec = 60; sec < 15 * 60; sec += 5) p.batch('dlq0', refused(t0 + sec * 1000), t0 + sec * 1000 + 5000);
    assert.equal(p.sent.filter((a) => a.rule === 'dlq').length, 1);
    for (const restartAt of [t0 + 15 * min + 2000, t0 + 17 * min + 2000]) {
      p.restart(restartAt);
      const from = (restartAt - t0 - 2000) / 1000;
      for (let sec = from; sec < from + 120; sec += 5) p.batch('dlq0', refused(t0 + sec * 1000), restartAt + (sec - from) * 1000);
    }
    assert.equal(p.sent.filter((a) => a.rule === 'dlq').length, 1, JSON.stringify(p.sent.map((a) => [a.rule, new Date(a.window_end).toISOString()])));
    assert.equal(duplicates(p.sent), 0);
  });

  it('loses no alert to a crash during the startup wait: windows the other partitions hold input for close once they deliver', () => {
    const p = new Pipeline(createEngine(restartRules));
    const half = (part: number) => Array.from({ length: 6 * 60 }, (_, s) => [dec(t0 + s * 1000 + part, '2.4.1', 0.9), dec(t0 + s * 1000 + part, '2.5.0', 0.75)]).flat();
    // Start with both partitions unread: p0's batch commits while p1 is awaited, then a crash.
    p.waiting = new Set(['p0', 'p1']);
    p.batch('p0', half(0), t0 + 6 * min);
    assert.equal(p.sent.length, 0);
    assert.equal(JSON.parse(p.checkpoint!).closed_up_to, null, 'no window closed, and the checkpoint says so');
    p.restart(t0 + 7 * min, ['p1']);
    assert.equal(p.sent.length, 0, 'nothing closed on p0 alone');
    p.batch('p1', half(1), t0 + 7 * min + 100);
    assert.equal(p.sent.filter((a) => a.rule === 'conf' && a.model_version === '2.5.0').length, 1);
    assert.equal(p.state.counters.late, 0);
    const conf = p.sent.find((a) => a.rule === 'conf')!;
    // Both partitions' input, one 2.5.0 decision a second each: all of the window's in its evidence.
    const seconds = (Math.min(conf.window_end, t0 + 6 * min) - Math.max(conf.window_start, t0)) / 1000;
    assert.equal(Number(conf.evidence.observed_n), seconds * 2);
  });

  /** 20 minutes of the incumbent and a worse canary on p0, a batch every 5 s; returns the restart time. */
  function canaryRun(p: Pipeline, minutes = 20): number {
    for (let sec = 0; sec < minutes * 60; sec += 5) {
      const ts = t0 + sec * 1000;
      p.batch('p0', [0, 1, 2, 3].flatMap((i) => [dec(ts + i, '2.4.1', 0.9), dec(ts + i, '2.5.0', 0.75)]), ts + 500);
    }
    return t0 + minutes * min + 1000;
  }
  /** Two more minutes of the same after a restart at `at`. */
  function goOn(p: Pipeline, at: number, minutes = 20): void {
    for (let sec = minutes * 60; sec < (minutes + 2) * 60; sec += 5) {
      const ts = t0 + sec * 1000;
      p.batch('p0', [dec(ts, '2.4.1', 0.9), dec(ts, '2.5.0', 0.75)], at + (sec - minutes * 60) * 1000);
    }
  }

  it('sends nothing again after an upgrade from an alerter that wrote no checkpoint: windows due at the restart close silently', () => {
    const p = new Pipeline(createEngine(restartRules), false);
    const at = canaryRun(p);
    const before = p.sent.map((a) => a.alert_id);
    assert.equal(before.length, 1);
    p.writes = true;
    p.restart(at);
    assert.equal(p.resumed, 'closed silently');
    assert.ok(p.state.closedUpTo! > t0 + 15 * min, 'the rebuilt windows closed at the restart');
    assert.equal(p.state.lastFired.size, 1, 'and re-armed suppression');
    assert.equal(p.state.counters.fired, 0);
    goOn(p, at);
    assert.deepEqual(p.sent.map((a) => a.alert_id), before);
    assert.equal(decodeCheckpoint(p.checkpoint!).ok, true, 'the first batch after it wrote a checkpoint');
    // A first start (nothing committed) closes nothing.
    const fresh = new Pipeline(createEngine(restartRules));
    fresh.restart(at);
    assert.equal(fresh.resumed, 'first start');
  });

  it('never takes an earlier checkpoint when a later record cannot be read (a newer alerter, then a rollback)', () => {
    const p = new Pipeline(createEngine(restartRules));
    const at = canaryRun(p);
    const before = p.sent.map((a) => a.alert_id);
    const stale = p.topic.find((r) => (decodeCheckpoint(r.value).ok && JSON.parse(String(r.value)).closed_up_to) < t0 + 10 * min)!;
    // What compaction left: a stale checkpoint, then one in a format this alerter cannot read.
    p.topic = [stale, { partition: 0, offset: stale.offset + 1, timestamp: at, value: p.checkpoint!.replace('"format":1', '"format":2') }];
    p.restart(at);
    assert.equal(p.resumed, 'closed silently');
    goOn(p, at);
    assert.deepEqual(p.sent.map((a) => a.alert_id), before);
    assert.equal(duplicates(p.sent), 0);
  });

  it('picks the checkpoint with the largest closedUpTo, and none when a later record is unreadable or the read ended early', () => {
    const value = (closedUpTo: number | undefined) => encodeCheckpoint({ closedUpTo, lastFired: new Map([['k', closedUpTo ?? 0]]) }).value;
    const pick = (records: [number, number, number, string | null][], complete = true) => {
      const picker = new CheckpointPicker();
      for (const [partition, offset, timestamp, v] of records) picker.add({ partition, offset, timestamp, value: v });
      const r = picker.result(complete);
      return r.kind === 'found' ? r.checkpoint.closedUpTo : r.kind;
    };
    assert.equal(pick([]), 'none');
    assert.equal(pick([[0, 0, 10, value(100)], [0, 1, 20, value(200)]]), 200);
    assert.equal(pick([[0, 0, 10, value(undefined)]]), undefined);
    assert.equal(pick([[0, 0, 10, value(100)]], false), 'unreadable');
    // Producers on different clients put the key in different partitions.
    assert.equal(pick([[3, 0, 10, value(300)], [1, 0, 20, value(200)]]), 300);
    // Unreadable after the winner: in its partition, or stamped no earlier in another.
    assert.equal(pick([[0, 0, 10, value(100)], [0, 1, 20, 'nope']]), 'unreadable');
    assert.equal(pick([[0, 0, 10, value(100)], [1, 0, 20, null]]), 'unreadable');
    // Superseded by a readable record after it in its partition, or stamped before the winner in another.
    assert.equal(pick([[0, 0, 10, 'nope'], [0, 1, 20, value(100)]]), 100);
    assert.equal(pick([[1, 0, 5, 'nope'], [0, 0, 10, value(100)]]), 100);
  });

  it('writes the checkpoint when closedUpTo changes pane or suppression changes, not every batch', () => {
    const p = new Pipeline(createEngine(restartRules));
    canaryRun(p);
    const closes = new Set(p.topic.map((r) => JSON.parse(String(r.value)).closed_up_to));
    // 240 batches over 20 minutes of 5-minute panes: a handful of records, each a change.
    assert.ok(p.topic.length <= 8, `${p.topic.length} records`);
    assert.ok(closes.size >= 4);
    // A restart from the last one closes the same windows as from the state itself.
    const rebuilt = p.engine.newState();
    p.engine.restore(rebuilt, decodeCheckpoint(p.checkpoint!).ok ? (decodeCheckpoint(p.checkpoint!) as { checkpoint: Checkpoint }).checkpoint : assert.fail());
    assert.equal(Math.floor(rebuilt.closedUpTo! / p.engine.pane), Math.floor(p.state.closedUpTo! / p.engine.pane));
    assert.equal(p.engine.checkpointDue(p.state), undefined);
  });

  it('takes over a later checkpoint another instance wrote: closedUpTo and every suppression entry, the later of the two', () => {
    const engine = createEngine(restartRules);
    const state = engine.newState();
    state.closedUpTo = t0 + 10 * min;
    state.lastFired = new Map([['a', t0 + 5 * min], ['b', t0 + 10 * min]]);
    const theirs = { closedUpTo: t0 + 12 * min, lastFired: new Map([['a', t0 + 12 * min], ['b', t0 + 5 * min], ['c', t0 + 11 * min]]) };
    assert.equal(engine.restore(state, theirs), true);
    assert.equal(state.closedUpTo, t0 + 12 * min);
    assert.deepEqual(state.lastFired, new Map([['a', t0 + 12 * min], ['b', t0 + 10 * min], ['c', t0 + 11 * min]]));
    // An earlier one changes nothing.
    assert.equal(engine.restore(state, { closedUpTo: t0 + 11 * min, lastFired: new Map([['d', t0 + 11 * min]]) }), false);
    assert.equal(state.lastFired.has('d'), false);
  });

  it('re-reads from the checkpoint\'s first open window, the whole lookback only without one', () => {
    const engine = createEngine(restartRules);
    const now = t0 + 2 * 60 * min;
    const found = { kind: 'found' as const, checkpoint: { closedUpTo: now - 10_000, lastFired: new Map() } };
    assert.equal(engine.replaySince(found, now), now - 10_000 - engine.reopenMs);
    assert.ok(engine.replaySince(found, now) > now - engine.lookbackMs);
    assert.equal(engine.replaySince({ kind: 'none' }, now), now - engine.lookbackMs);
    assert.equal(engine.replaySince({ kind: 'found', checkpoint: { closedUpTo: undefined, lastFired: new Map() } }, now), now - engine.lookbackMs);
  });

  it('restores exactly what it checkpointed, and lets go of the panes it had closed', () => {
    const engine = createEngine(restartRules);
    const live = engine.newState();
    run(engine, [...traffic({ minutes: 31, perMinute: 30, version: '2.4.1', meanConf: 0.9, approve: 0.7, seed: 1 }), ...traffic({ minutes: 31, perMinute: 10, version: '2.5.0', meanConf: 0.75, approve: 0.4, seed: 2 })], 97, live);
    const c = engine.checkpoint(live)!;
    assert.equal(c.closedUpTo, live.closedUpTo);
    assert.ok(c.lastFired.size >= 2);
    const back = decodeCheckpoint(encodeCheckpoint(c).value);
    assert.ok(back.ok);
    assert.deepEqual(back.checkpoint, c);
    const rebuilt = engine.newState();
    for (let m = 0; m < 31; m++) engine.observeDecision(rebuilt, 'p0', { ...dec(t0 + m * min, '2.4.1', 0.9).d }, t0 + 40 * min);
    engine.restore(rebuilt, back.checkpoint);
    assert.equal(rebuilt.closedUpTo, live.closedUpTo);
    assert.deepEqual(rebuilt.lastFired, live.lastFired);
    assert.deepEqual([...rebuilt.panes.keys()].sort(), [...live.panes.keys()].sort());
    assert.equal(rebuilt.counters.late, 0);
    assert.deepEqual(engine.checkpoint(engine.newState()), { closedUpTo: undefined, lastFired: new Map() });
  });

  it('keeps the checkpoint record within bounds and refuses what it cannot read', () => {
    assert.equal(checkpointKey, '"checkpoint"');
    // Never a baseline's key: a baseline reader refuses it.
    assert.equal(decodeBaseline(checkpointKey, '{}').ok, false);
    const lastFired = new Map(Array.from({ length: 10_000 }, (_, i) => [joinKey(['conf', 'model', `1.${i}`], '\u0000'), t0 + i] as [string, number]));
    const big = encodeCheckpoint({ closedUpTo: t0, lastFired });
    assert.ok(Buffer.byteLength(big.value) <= maxCheckpointBytes, String(Buffer.byteLength(big.value)));
    assert.ok(big.dropped > 0);
    const back = decodeCheckpoint(big.value);
    assert.ok(back.ok);
    // The newest are kept: they suppress the longest.
    assert.equal(back.checkpoint.lastFired.get(joinKey(['conf', 'model', '1.9999'], '\u0000')), t0 + 9999);
    assert.equal(back.checkpoint.lastFired.has(joinKey(['conf', 'model', '1.0'], '\u0000')), false);
    for (const [value, reason] of [
      [null, /tombstone/],
      ['nope', /not JSON/],
      ['{"format":2,"closed_up_to":1,"last_fired":[]}', /format/],
      ['{"format":1,"closed_up_to":"x","last_fired":[]}', /closed_up_to/],
    ] as const) {
      const r = decodeCheckpoint(value);
      assert.ok(!r.ok && reason.test(r.reason), JSON.stringify(r));
    }
  });
});

describe('keys', () => {
  it('keep every part apart, whatever characters producers put in endpoints, models and versions', () => {
    const tricky = ['checkout\u0000fraud', 'a\u001bs', '\u001b', '\u0000', '', 'plain'];
    for (const e of tricky) for (const m of tricky) assert.deepEqual(parseSubjectKey(subjectKey(e, m, 'v\u00001')), { endpoint: e, model: m, version: 'v\u00001' });
    assert.notEqual(subjectKey('e', 'm\u0000x', '1'), subjectKey('e\u0000m', 'x', '1'));
    assert.deepEqual(splitKey(baselineKey('conf', subjectKey('a\u0000b', 'm', '1'))), ['conf', subjectKey('a\u0000b', 'm', '1')]);
    // Ordinary names read as before.
    assert.equal(subjectKey('loan-api', 'loan-approver', '2.4.1'), 'loan-api\u0000loan-approver\u00002.4.1');
  });

  it('alert on the endpoint as the producer named it, and store its baseline under it', () => {
    const engine = createEngine(rules);
    const state = engine.newState();
    for (let s = 0; s < 12 * 60; s++) {
      engine.observeDecision(state, 'p0', { ts: t0 + s * 1000, endpoint: 'checkout\u0000fraud', model: 'loan-approver', version: '7', decision: 'ok', confidence: 0.9, weight: 1, resolved: false, unresolvedRefs: ['x'] }, t0 + s * 1000);
    }
    const alerts = engine.advance(state, t0 + 13 * min);
    assert.equal(alerts.length, 1);
    assert.deepEqual([alerts[0]!.endpoint, alerts[0]!.model_name, alerts[0]!.model_version], ['checkout\u0000fraud', 'loan-approver', '7']);
    assert.match(alerts[0]!.evidence.endpoints!, /^checkout\u0000fraud$/);
    const [k, entry] = [...state.baselineChanges].find(([key]) => splitKey(key)[0] === 'conf')!;
    const rec = encodeBaseline(k, entry)!;
    assert.deepEqual(JSON.parse(rec.key), ['conf', 'checkout\u0000fraud', 'loan-approver', '7']);
    const back = decodeBaseline(rec.key, rec.value);
    assert.ok(back.ok && back.subject === subjectKey('checkout\u0000fraud', 'loan-approver', '7'));
  });
});

describe('group ownership', () => {
  const member = (assignment: Record<string, number[]>, i: number) => ({
    clientHost: 'h',
    clientId: 'c',
    memberId: `m${i}`,
    memberMetadata: Buffer.alloc(0),
    memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment, userData: Buffer.alloc(0) }),
  });
  const group = (state: GroupDescription['state'], members: Record<string, number[]>[]): GroupDescription => ({ groupId: 'g', protocol: 'range', protocolType: 'consumer', state, members: members.map(member) });
  const inputs = new Map([['dec', 3], ['dlq', 2]]);

  it('is whole only while one member holds every input partition of a stable group', () => {
    assert.deepEqual(soleOwner(group('Stable', [{ dec: [0, 1, 2], dlq: [0, 1] }]), inputs), { whole: true, holders: 1 });
    // Two alerters, the input split between them.
    assert.equal(soleOwner(group('Stable', [{ dec: [0, 1], dlq: [0] }, { dec: [2], dlq: [1] }]), inputs).whole, false);
    assert.equal(soleOwner(group('Stable', [{ dec: [0, 1], dlq: [0] }, { dec: [2], dlq: [1] }]), inputs).holders, 2);
    // A member with nothing assigned takes nothing away.
    assert.equal(soleOwner(group('Stable', [{ dec: [0, 1, 2], dlq: [0, 1] }, {}]), inputs).whole, true);
    assert.equal(soleOwner(group('Stable', [{ dec: [0, 1, 2], dlq: [0] }]), inputs).reason, 'dlq:1 is not assigned');
    assert.equal(soleOwner(group('PreparingRebalance', [{ dec: [0, 1, 2], dlq: [0, 1] }]), inputs).whole, false);
    assert.equal(soleOwner(undefined, inputs).whole, false);
  });

  it('is not whole for an instance the group evicted: the sole holder must be this member, where the client names it', () => {
    // The successor holds everything; the evicted instance (m9) still runs its last batch.
    const successor = group('Stable', [{ dec: [0, 1, 2], dlq: [0, 1] }]);
    const evicted = soleOwner(successor, inputs, 'm9');
    assert.equal(evicted.whole, false);
    assert.match(evicted.reason!, /held by member m0, not this one \(m9\)/);
    assert.equal(soleOwner(successor, inputs, 'm0').whole, true);
    // librdkafka does not name the member (its commits are fenced instead): the holder is enough.
    assert.equal(soleOwner(successor, inputs, undefined).whole, true);
  });

  it('names the KIP-848 consumer protocol when the group reads as Dead and empty, so the held windows are an error, not a quiet wait', () => {
    const o = soleOwner(group('Dead', []), inputs);
    assert.equal(o.whole, false);
    assert.equal(o.protocol, 'consumer');
    assert.match(o.reason!, /KIP-848/);
    assert.equal(soleOwner(group('PreparingRebalance', [{ dec: [0] }]), inputs).protocol, undefined);
  });
});

describe('a restart without a checkpoint to trust', () => {
  it('closes silently past a partition that had gone quiet, so its windows do not alert a second time', () => {
    // Closing at the re-read input's watermark counted every partition as just heard from: a
    // quiet one held the close back, and once quiet again live its windows alerted twice.
    const min = 60_000;
    const engine = createEngine(
      parseRules(`
watermark: { allowed_lateness: 5s, idle_partition_after: 30s, startup_wait: 5s }
rules:
  - { name: confidence-drop, kind: confidence_drop, window: { size: 2m, hop: 1m }, min_samples: 40, min_drop: 0.05, suppress_for: 1m }
`),
    );
    const t0 = 1_800_000_000_000 - (1_800_000_000_000 % min);
    const d = (ts: number, version: string, confidence: number): DecisionObservation => ({ ts, endpoint: 'e', model: 'm', version, decision: 'ok', confidence, weight: 1, resolved: true, unresolvedRefs: [] });
    const input: { p: string; d: DecisionObservation }[] = [{ p: 'p1', d: d(t0, '2.4.1', 0.9) }];
    for (let i = 0; i < 360; i++) input.push({ p: 'p0', d: d(t0 + i * 1000, '2.4.1', 0.9) }, { p: 'p0', d: d(t0 + i * 1000, '2.5.0', 0.7) });
    const live = engine.newState();
    const sent = new Set<string>();
    for (const e of input) {
      engine.observeDecision(live, e.p, e.d, e.d.ts);
      for (const a of engine.advance(live, e.d.ts)) sent.add(a.alert_id);
    }
    assert.ok(sent.size > 0, 'the old instance alerted');
    const now = t0 + 6 * min + 10_000;
    const rebuilt = engine.newState();
    for (const e of input) engine.observeDecision(rebuilt, e.p, e.d, now);
    assert.equal(engine.resume(rebuilt, { kind: 'none' }, true, now), 'closed silently');
    const again: string[] = [];
    for (let i = 0; i < 60; i++) {
      const ts = now + i * 1000;
      engine.observeDecision(rebuilt, 'p0', d(ts - 10_000, '2.4.1', 0.9), ts);
      for (const a of engine.advance(rebuilt, ts)) again.push(a.alert_id);
    }
    assert.deepEqual(again.filter((id) => sent.has(id)), [], 'no alert the old instance sent goes again');
  });
});
