import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { loadConfig } from '@dlog/config';
import { avroType } from '@dlog/contracts';
import { GateThreads } from './gate-threads.js';
import { parseKeyRing } from './keys.js';
import { loadPolicy } from './policy.js';
import { createProtector } from './protect.js';
import { warmUp } from './warm-up.js';

const log = pino({ level: 'silent' });
const wiring = (policyFile: string) => ({
  config: { ...loadConfig({ DLOG_PII_KEYS: `t1:${Buffer.alloc(32, 7).toString('base64')}` }), policyFile },
  topics: { decisions: 'd', counts: 'c', deadLetters: 'q' },
  decisionId: 1,
  countsId: 2,
});

describe('gate threads', () => {
  it('start with the policy and keys loaded, and close', async () => {
    const threads = new GateThreads(2, wiring('infra/policies/default.yaml'), { kept: 0, dropped: 0, deadLettered: 0, byReason: {} }, log);
    await threads.ready();
    await threads.close();
  });

  it('a thread that cannot start fails the start with the reason, instead of restarting forever', async () => {
    const threads = new GateThreads(1, wiring('/nonexistent/policy.yaml'), { kept: 0, dropped: 0, deadLettered: 0, byReason: {} }, log);
    await assert.rejects(threads.ready(), /gate thread 0 did not start: .*policy/i);
    await assert.rejects(threads.run([], { topic: 't', partition: 0 }), /no gate thread is running/);
    await threads.close();
  });
});

describe('gate warm-up', () => {
  it('takes its synthetic events through the real paths (kept or sampled, none dead-lettered)', async () => {
    const policy = loadPolicy('infra/policies/default.yaml');
    const type = avroType('inference-event');
    const deps = {
      policy,
      protector: createProtector(policy.doc.pii, parseKeyRing(`t1:${Buffer.alloc(32, 7).toString('base64')}`)),
      inputType: type,
      // The warm-up brings its own schema lookup; the real one is never asked.
      schemas: { get: () => assert.fail('warm-up used the live schema registry') },
      decisionType: { type: avroType('decision-record'), id: 1 },
      countsType: { type: avroType('decision-counts'), id: 2 },
      topics: { decisions: 'd', counts: 'c', deadLetters: 'q' },
    };
    const stats = await warmUp(deps, 400);
    assert.equal(stats.deadLettered, 0, JSON.stringify(stats.byReason));
    assert.equal(stats.kept + stats.dropped, 400);
    assert.ok(stats.kept > 0);
  });
});
