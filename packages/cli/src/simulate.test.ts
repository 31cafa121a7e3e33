import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventsOf, simulatedTraffic, type SimulatedEvent } from './simulate.js';

function traffic(events: number, badShare: number, seed = 42, runId = 'run1') {
  const items: SimulatedEvent[] = [...simulatedTraffic({ events, badShare, applicants: 2000, seed, runId })];
  const sent = items.reduce((n, item) => n + eventsOf(item), 0);
  const malformed = items.filter((i) => i.kind === 'malformed').length;
  // Draws of the good mix: a trajectory is one draw of several events.
  const good = items.filter((i) => i.kind !== 'malformed');
  const loans = good.filter((i) => i.label.startsWith('loan-approver:')).length;
  const requestIds = good.flatMap((i) => (i.kind === 'decision' ? [i.decision.requestId ?? ''] : []));
  return { items, sent, malformed, good: good.length, loans, requestIds };
}

describe('simulated traffic', () => {
  it('sends exactly -n events, malformed ones and every step of a trajectory counted', () => {
    // Before, a trajectory started on the last events ran past -n by up to 4.
    for (let n = 1; n <= 300; n++) assert.equal(traffic(n, 0.005).sent, n, `-n ${n}`);
    assert.equal(traffic(20_000, 0.005).sent, 20_000);
    assert.ok(traffic(20_000, 0).items.some((i) => i.kind === 'trajectory' && i.steps.length > 1), 'agents still run trajectories');
  });

  it('makes --bad-share the share of events sent that are malformed, and keeps the good mix', () => {
    // Before, the share was cut from the loans' end of the same roll: 0.3 halved the loans, 0.6 left none.
    const clean = traffic(20_000, 0);
    for (const share of [0.005, 0.3, 0.6]) {
      const t = traffic(20_000, share);
      assert.equal(t.sent, 20_000);
      assert.equal(t.malformed, Math.round(20_000 * share), `--bad-share ${share}`);
      const loanShare = t.loans / t.good;
      assert.ok(Math.abs(loanShare - 0.6) < 0.03, `loans are ${loanShare} of the good draws at --bad-share ${share}`);
    }
    assert.equal(clean.malformed, 0);
    assert.equal(traffic(50, 1).malformed, 50);
  });

  it('puts the run id in every request id, so runs never share one', () => {
    // Before, the fixed seed sent loan-0, loan-1, ... on every run, and `dlog trace loan-1` found them all.
    const a = traffic(2_000, 0.01, 7, 'aaaa1111');
    const b = traffic(2_000, 0.01, 7, 'bbbb2222');
    assert.ok(a.requestIds.length > 1000);
    assert.ok(a.requestIds.every((id) => /^(loan|rec)-aaaa1111-\d+$/.test(id)));
    const seen = new Set(a.requestIds);
    assert.equal(seen.size, a.requestIds.length, 'unique within a run');
    assert.ok(b.requestIds.every((id) => !seen.has(id)), 'and across runs of one seed');
    // The seed alone decides the traffic: the same seed sends the same decisions again.
    assert.deepEqual(
      a.items.map((i) => (i.kind === 'decision' ? i.decision.output : i.kind)),
      b.items.map((i) => (i.kind === 'decision' ? i.decision.output : i.kind)),
    );
    assert.notDeepEqual(
      traffic(2_000, 0.01, 8).items.map((i) => (i.kind === 'decision' ? i.decision.output : i.kind)),
      a.items.map((i) => (i.kind === 'decision' ? i.decision.output : i.kind)),
    );
  });
});
