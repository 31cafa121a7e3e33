import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
const wiring = (policyFile: string, policyText = readFileSync(policyFile, 'utf8')) => ({
  config: { ...loadConfig({ DLOG_PII_KEYS: `t1:${Buffer.alloc(32, 7).toString('base64')}` }), policyFile },
  policyText,
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
    const threads = new GateThreads(1, wiring('/nonexistent/policy.yaml', 'rules: ['), { kept: 0, dropped: 0, deadLettered: 0, byReason: {} }, log);
    await assert.rejects(threads.ready(), /gate thread 0 did not start: .*policy/i);
    await assert.rejects(threads.run([], { topic: 't', partition: 0 }), /no gate thread is running/);
    await threads.close();
  });
});

describe('gate threads: a stuck thread', () => {
  it('is terminated after the batch deadline, its batch fails (to be read again), and a new thread takes its place', async () => {
    const threads = new GateThreads(1, wiring('infra/policies/default.yaml'), { kept: 0, dropped: 0, deadLettered: 0, byReason: {} }, log, { batchTimeoutMs: 20 });
    await threads.ready();
    const slots = (threads as unknown as { slots: { worker: object; started: boolean }[] }).slots;
    const first = slots[0]!.worker;
    // Far more work than fits in 20 ms: stands in for a thread that does not answer.
    const junk = Array.from({ length: 200_000 }, (_, i) => ({ key: null, value: Buffer.from('not an event'), headers: {}, offset: String(i), timestamp: String(Date.now()), attributes: 0 }));
    await assert.rejects(threads.run(junk, { topic: 'raw', partition: 3 }), /gate batch raw\[3\] offsets 0\.\.199999 on thread 0: gate thread 0 stopped with the batch in hand/);
    const deadline = Date.now() + 30_000;
    while (!(slots[0]!.worker !== first && slots[0]!.started) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.notEqual(slots[0]!.worker, first, 'a new thread was started');
    assert.equal(slots[0]!.started, true, 'and it is running');
    await threads.close();
  });

  it('a replacement runs the policy the gate started with, not the file as it is now', async () => {
    // Before, a replacement read the file again: edited on disk, one process ran two policies;
    // gone or invalid, the replacement never started and every batch failed.
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-gate-policy-'));
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, readFileSync('infra/policies/default.yaml', 'utf8'));
    const threads = new GateThreads(1, wiring(file), { kept: 0, dropped: 0, deadLettered: 0, byReason: {} }, log, { batchTimeoutMs: 20 });
    await threads.ready();
    writeFileSync(file, 'rules: [');
    const slots = (threads as unknown as { slots: { worker: object; started: boolean }[] }).slots;
    const first = slots[0]!.worker;
    const junk = Array.from({ length: 200_000 }, (_, i) => ({ key: null, value: Buffer.from('not an event'), headers: {}, offset: String(i), timestamp: String(Date.now()), attributes: 0 }));
    await assert.rejects(threads.run(junk, { topic: 'raw', partition: 0 }), /stopped with the batch in hand/);
    const deadline = Date.now() + 30_000;
    while (!(slots[0]!.worker !== first && slots[0]!.started) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(slots[0]!.started, true, 'the replacement started on the policy read at start');
    await threads.close();
  });
});

describe('gate threads: a message that stops every thread', () => {
  it('is found by halving the batch and dead-lettered with its bytes; the rest of the batch goes through', async () => {
    // Read again whole, such a batch stopped every new thread, and the partition for good.
    const stats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} as Record<string, number> };
    const threads = new GateThreads(1, wiring('infra/policies/default.yaml'), stats, log, { threadUrl: new URL('./gate-thread-poisoned.fixture.ts', import.meta.url) });
    await threads.ready();
    try {
      const messages = Array.from({ length: 8 }, (_, i) => ({
        key: Buffer.from(`k${i}`),
        value: Buffer.from(i === 5 ? 'poison' : 'not an event'),
        headers: {},
        offset: String(100 + i),
        timestamp: String(Date.now()),
        attributes: 0,
      }));
      const outputs = await threads.process(messages, { topic: 'raw', partition: 2 });
      const letters = outputs.filter((o) => o.topic === 'q').flatMap((o) => o.messages);
      assert.deepEqual(
        letters.map((l) => l.headers!['dlog.source.offset']),
        ['100', '101', '102', '103', '104', '105', '106', '107'],
        'every message once, in order',
      );
      const poison = letters.find((l) => l.headers!['dlog.reason'] === 'gate_thread_failed');
      assert.equal(poison?.headers!['dlog.source.offset'], '105');
      assert.equal(poison?.value?.toString(), 'poison', 'with its bytes');
      assert.equal(letters.filter((l) => l.headers!['dlog.reason'] === 'gate_thread_failed').length, 1, 'the others are dead-lettered for what they are');
      assert.equal(stats.byReason['gate_thread_failed'], 1);
      assert.equal(stats.deadLettered, 8, 'each message counted once');
      assert.equal(outputs.filter((o) => o.topic === 'q').length, 1, 'one output per topic');
    } finally {
      await threads.close();
    }
  });

  it('blames no message of another batch that shared the thread (a diff review found one dead-lettered)', async () => {
    const stats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} as Record<string, number> };
    const threads = new GateThreads(1, wiring('infra/policies/default.yaml'), stats, log, { threadUrl: new URL('./gate-thread-poisoned.fixture.ts', import.meta.url) });
    await threads.ready();
    const message = (offset: number, value: string) => ({ key: null, value: Buffer.from(value), headers: {}, offset: String(offset), timestamp: String(Date.now()), attributes: 0 });
    try {
      for (let trial = 0; trial < 4; trial++) {
        // Side by side on the one thread, as the gate runs partitions: the poison stops it with both in hand.
        const [a, b] = await Promise.all([
          threads.process([message(1000, 'not an event'), message(1001, 'poison')], { topic: 'raw', partition: 0 }),
          threads.process(Array.from({ length: 1 + trial }, (_, i) => message(2000 + i, 'not an event')), { topic: 'raw', partition: 1 }),
        ]);
        const reasons = (out: typeof a) => out.filter((o) => o.topic === 'q').flatMap((o) => o.messages.map((l) => `${l.headers!['dlog.source.offset']}:${l.headers!['dlog.reason'] === 'gate_thread_failed' ? 'gate_thread_failed' : 'malformed'}`));
        assert.deepEqual(reasons(a), ['1000:malformed', '1001:gate_thread_failed']);
        assert.deepEqual(reasons(b), Array.from({ length: 1 + trial }, (_, i) => `${2000 + i}:malformed`));
      }
    } finally {
      await threads.close();
    }
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
