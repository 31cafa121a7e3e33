import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '@dlog/config';
import { simulate } from '../packages/cli/src/simulate.js';
import { log, unique } from './helpers.js';

describe('dlog simulate', () => {
  it('sends exactly -n events, --bad-share of them malformed, loans among the rest, under its own run id', async () => {
    // Before: -n 60 at --bad-share 0.5 sent the malformed ones from the loans' share of one roll
    // (a tenth of the good traffic was loans, not 60%), and a last trajectory ran past -n.
    const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: `${unique('simulate')}.`, LOG_LEVEL: 'warn' });
    const opts = { events: 60, rate: 0, badShare: 0.5, applicants: 50, seed: 3 };
    const a = await simulate(config, log, opts);
    const decisions = Object.values(a.recorded).reduce((n, x) => n + x, 0);
    assert.equal(decisions + a.bad, 60);
    assert.equal(a.bad, 30);
    assert.equal(a.sdk.sent, decisions);
    const loans = (a.recorded['loan-approver:2.4.1'] ?? 0) + (a.recorded['loan-approver:2.5.0'] ?? 0);
    assert.ok(loans >= 6, `loans ${loans} of ${decisions} decisions`);
    const b = await simulate(config, log, opts);
    assert.match(a.runId, /^[0-9a-f]{8}$/);
    assert.notEqual(a.runId, b.runId, 'a second run of one seed sends other request ids');
    assert.deepEqual(b.recorded, a.recorded, 'the seed decides the traffic');
  });
});
