import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AlertRecord } from '@dlog/contracts';
import { createEngine } from './engine.js';
import { psi } from './psi.js';
import { parseRules, RulesError } from './rules.js';

const mixRule = (maxCategories: number) => `
watermark: { allowed_lateness: 0s, idle_partition_after: 1h }
rules:
  - { name: mix, kind: decision_mix_shift, window: { size: 10m }, min_samples: 200, min_psi: 0.2, max_categories: ${maxCategories}, suppress_for: 1h }
`;

describe('decision mix over more categories than a window keeps', () => {
  it('does not alert on two versions drawing from the same mix over 300 categories', () => {
    // Each side kept the first 200 distinct decisions it met: different sets, and PSI compared a
    // category kept on one side against 0 on the other (PSI 1.8).
    const engine = createEngine(parseRules(mixRule(200)));
    const s = engine.newState();
    const t0 = Date.UTC(2026, 0, 1, 12);
    let seed = 42;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const obs = (ts: number, version: string, decision: string) => ({ ts, endpoint: 'rec', model: 'recommender', version, decision, confidence: 0.8, weight: 1, resolved: true, unresolvedRefs: [] });
    for (let i = 0; i < 12_000; i++) {
      const ts = t0 + Math.floor((i / 12_000) * 10 * 60_000);
      engine.observeDecision(s, 'p0', obs(ts, i % 2 === 0 ? '1.0' : '1.1', `item-${Math.floor(rnd() * 300)}`), ts);
    }
    engine.observeDecision(s, 'p0', obs(t0 + 11 * 60_000, '1.0', 'item-0'), t0 + 11 * 60_000);
    const alerts: AlertRecord[] = engine.advance(s, t0 + 11 * 60_000);
    assert.deepEqual(alerts.map((a) => a.summary), []);
  });

  it('compares one by one only the categories both sides track, while a side pools into (other)', () => {
    const baseline = new Map([['a', 100], ['b', 100], ['(other)', 200]]);
    const actual = new Map([['a', 100], ['c', 100], ['(other)', 200]]);
    const r = psi(baseline, actual);
    assert.ok(r.psi < 1e-9, String(r.psi));
    assert.deepEqual(r.bins.map((b) => b.category), ['(other)', 'a']);
    // Without (other) on the baseline side it tracked everything: a new category is a shift.
    assert.ok(psi(new Map([['a', 200], ['b', 200]]), new Map([['a', 200], ['b', 100], ['c', 100]])).psi > 0.2);
  });

  it('refuses max_categories above what a window keeps, naming the field', () => {
    assert.throws(
      () => parseRules(mixRule(1000), 'r.yaml'),
      (err: unknown) => err instanceof RulesError && err.path === 'rules[0].max_categories' && /max_categories: at most 200; windows keep the first 200 distinct decisions/.test(err.message),
    );
    assert.equal(parseRules(mixRule(200)).rules[0]!.kind, 'decision_mix_shift');
  });
});
