import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { Writable } from 'node:stream';
import type { DecisionObservation } from './aggregate.js';
import { cloneState, createEngine, maxSubjectsPerPane } from './engine.js';
import { subjectKey } from './evaluate.js';
import { parseRules } from './rules.js';

const rules = parseRules(`
watermark: { allowed_lateness: 0s, idle_partition_after: 1h }
rules:
  - { name: dl, kind: dead_letters, window: { size: 1m }, min_samples: 1, max_rate: 0.5, suppress_for: 0s }
`);
const t0 = Date.UTC(2026, 0, 1, 12);
const obs = (version: string, i = 0): DecisionObservation => ({ ts: t0 + i, endpoint: 'loan-api', model: 'loan', version, decision: 'approved', confidence: 0.9, weight: 2, resolved: true, unresolvedRefs: [] });

describe('a pane keeps a bounded number of subjects', () => {
  it(`keeps ${maxSubjectsPerPane} subjects a pane and counts the decisions of the rest as overflow, said once`, () => {
    // A request id as the version made one subject per decision, with no bound.
    const lines: { msg: string }[] = [];
    const log = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString())), cb()) }));
    const engine = createEngine(rules, { log });
    const s = engine.newState();
    for (let i = 0; i < maxSubjectsPerPane + 50; i++) engine.observeDecision(s, 'p0', obs(`2.0.0+req-${i}`, i % 1000), t0);
    engine.observeDecision(s, 'p0', obs('2.0.0+req-0'), t0);
    const pane = s.panes.get(t0)!;
    assert.equal(pane.subjects.size, maxSubjectsPerPane);
    assert.equal(pane.subjects.get(subjectKey('loan-api', 'loan', '2.0.0+req-0'))!.n, 2, 'a subject already kept still counts');
    assert.deepEqual(pane.overflow, { n: 50, weight: 100 });
    assert.equal(s.counters.overflow, 50);
    assert.equal(s.counters.decisions, maxSubjectsPerPane + 1);
    assert.equal(lines.filter((l) => l.msg.startsWith('pane holds the most subjects')).length, 1);
  });
});

describe('a batch copies only the aggregates it changes', () => {
  it('shares the others with the committed state, and leaves that state as it was', () => {
    const engine = createEngine(rules);
    const committed = engine.newState();
    engine.observeDecision(committed, 'p0', obs('1.0'), t0);
    engine.observeDecision(committed, 'p0', obs('1.1'), t0);
    const k10 = subjectKey('loan-api', 'loan', '1.0');
    const k11 = subjectKey('loan-api', 'loan', '1.1');
    const before = structuredClone(committed.panes.get(t0)!);

    const batch = cloneState(committed);
    engine.observeDecision(batch, 'p0', obs('1.0', 1), t0);
    engine.observeDecision(batch, 'p0', obs('1.0', 2), t0);
    engine.observeDecision(batch, 'p0', obs('2.0', 3), t0);
    const copied = batch.panes.get(t0)!;
    // Copying the whole pane on every batch that added to it made a batch cost what the pane held.
    assert.equal(copied.subjects.get(k11), committed.panes.get(t0)!.subjects.get(k11), 'an aggregate the batch did not change is shared');
    assert.notEqual(copied.subjects.get(k10), committed.panes.get(t0)!.subjects.get(k10));
    assert.equal(copied.subjects.get(k10)!.n, 3);
    assert.equal(copied.subjects.size, 3);
    // The batch's transaction aborts: the committed state holds none of its changes.
    assert.deepEqual(committed.panes.get(t0), before);

    // The next batch builds on the committed copy: it changes the copied aggregate in place no more.
    const next = cloneState(batch);
    engine.observeDecision(next, 'p0', obs('1.0', 4), t0);
    assert.equal(batch.panes.get(t0)!.subjects.get(k10)!.n, 3);
    assert.equal(next.panes.get(t0)!.subjects.get(k10)!.n, 4);
  });
});
