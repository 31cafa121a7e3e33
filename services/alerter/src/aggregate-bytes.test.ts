import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addDecision, emptyAgg, mergeAgg, type DecisionObservation, type VersionAgg } from './aggregate.js';
import { decodeBaseline, encodeBaseline, maxDecisionBytes } from './baselines.js';
import { baselineKey } from './engine.js';
import { subjectKey } from './evaluate.js';

const t0 = Date.UTC(2026, 0, 1, 12);
const obs = (decision: string, weight = 1): DecisionObservation => ({ ts: t0, endpoint: 'agent', model: 'planner', version: '1', decision, confidence: null, weight, resolved: true, unresolvedRefs: [] });
/** Distinct text of exactly `bytes` bytes (ASCII). */
const text = (i: number, bytes: number) => `answer ${i} `.padEnd(bytes, 'x');
/** What a baseline record counts for the decisions: each key's UTF-8 bytes and 24 for its count. */
const decisionBytes = (agg: VersionAgg) => [...agg.decisions.keys()].reduce((sum, k) => sum + Buffer.byteLength(k) + 24, 0);
const weightOf = (agg: VersionAgg) => [...agg.decisions.values()].reduce((a, b) => a + b, 0);
/** The bins, long keys shortened so a failure stays readable. */
const bins = (agg: VersionAgg) => [...agg.decisions].map(([k, v]) => [k.length > 40 ? `${k.slice(0, 12)}… (${Buffer.byteLength(k)} B)` : k, v]);

describe('a pane keeps its distinct decisions within a byte budget', () => {
  it('keeps a version\'s distinct decisions in a pane within 64 KiB, pooling the rest as (other) with nothing lost', () => {
    // 200 distinct answers of 900 bytes were all kept: 180 KB per version per pane, copied on every batch.
    const agg = emptyAgg();
    for (let i = 0; i < 200; i++) addDecision(agg, obs(text(i, 900), 2));
    assert.ok(decisionBytes(agg) <= maxDecisionBytes, String(decisionBytes(agg)));
    assert.ok(agg.decisions.size > 60 && agg.decisions.size < 80, String(agg.decisions.size));
    assert.equal(agg.decisions.get(text(0, 900)), 2, 'the first answers keep their own bin');
    assert.ok(agg.decisions.get('(other)')! > 0);
    assert.equal(weightOf(agg), 400);
    assert.equal(agg.n, 200);
  });

  it('pools a decision longer than 1 KiB even into an empty pane', () => {
    const agg = emptyAgg();
    addDecision(agg, obs(text(0, 16_384)));
    assert.deepEqual(bins(agg), [['(other)', 1]]);
    // Bytes, not characters: 400 euro signs are 1,200 bytes.
    addDecision(agg, obs('€'.repeat(400)));
    addDecision(agg, obs(text(1, 1_024)));
    assert.deepEqual(bins(agg), [['(other)', 2], ['answer 1 xxx… (1024 B)', 1]]);
  });

  it('lets no few long answers crowd out the categories that follow them', () => {
    const agg = emptyAgg();
    for (let i = 0; i < 8; i++) addDecision(agg, obs(text(i, 60_000)));
    addDecision(agg, obs('approved'));
    addDecision(agg, obs('declined'));
    assert.deepEqual(bins(agg), [['(other)', 8], ['approved', 1], ['declined', 1]]);
  });

  it('keeps short decisions exactly as before: the first 200 distinct values, then (other)', () => {
    const agg = emptyAgg();
    for (let round = 0; round < 3; round++) for (let i = 0; i < 250; i++) addDecision(agg, obs(text(i, 300)));
    assert.equal(agg.decisions.size, 201);
    for (let i = 0; i < 200; i++) assert.equal(agg.decisions.get(text(i, 300)), 3);
    assert.equal(agg.decisions.get('(other)'), 150);
  });
});

describe('a window merged from panes', () => {
  it('stays within the budget, so its baseline record reads back as the window was', () => {
    // Ten panes of 60 distinct 900-byte answers each: merged, 200 of them (180 KB) were kept, and the
    // baseline record pooled them differently from the window the alert was judged on.
    const window = emptyAgg();
    for (let pane = 0; pane < 10; pane++) {
      const agg = emptyAgg();
      for (let i = 0; i < 60; i++) addDecision(agg, obs(text(pane * 60 + i, 900), 1 + (i % 3)));
      mergeAgg(window, agg);
    }
    assert.ok(decisionBytes(window) <= maxDecisionBytes, String(decisionBytes(window)));
    const rec = encodeBaseline(baselineKey('mix', subjectKey('agent', 'planner', '1')), { windowEnd: t0, subject: { endpoint: 'agent', model: 'planner', version: '1', agg: window } })!;
    const back = decodeBaseline(rec.key, rec.value);
    assert.ok(back.ok && back.entry);
    assert.deepEqual(new Map(back.entry.subject.agg.decisions), window.decisions);
  });
});
