import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { avroType } from '@dlog/contracts';
import { createKafka, ensureTopics, loadTopicDefinitions, withPrefix } from '@dlog/kafka';
import { collect, config, log, unique, waitFor } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');

function startGate(prefix: string): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'services/gate/src/main.ts'], {
    cwd: root,
    env: { ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: process.env.GATE_CHILD_LOGS ?? 'warn' },
    stdio: ['ignore', process.env.GATE_CHILD_LOGS ? 'inherit' : 'ignore', 'inherit'],
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null ? Promise.resolve(child.exitCode) : new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('gate crash', () => {
  it('killed with SIGKILL mid-stream and restarted: nothing lost, nothing duplicated downstream', async () => {
    const prefix = `${unique('crash')}.`;
    const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-crash', log });
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, withPrefix(loadTopicDefinitions(), prefix));
    await admin.disconnect();

    const total = 40_000;
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const pad = 'x'.repeat(600);
    for (let i = 0; i < total; i += 2_000) {
      await producer.send({
        topic: `${prefix}inference.raw`,
        messages: Array.from({ length: 2_000 }, (_, j) => {
          const n = i + j;
          return {
            key: `r${n}`,
            value: JSON.stringify({
              event_id: `ev-${n}`,
              request_id: `r${n}`,
              ts: Date.now(),
              endpoint: 'e',
              decision_type: n % 5 === 0 ? 'recommendation' : 'classification',
              model: { name: 'm', version: '1' },
              input: { n, pad, email: `user${n}@example.com` },
              output: { decision: n % 2 ? 'yes' : 'no' },
              producer: { service: 'test', sdk: 'custom' },
            }),
          };
        }),
      });
    }
    await producer.disconnect();

    const decisions = await collect(`${prefix}decisions.v1`);
    const counts = await collect(`${prefix}decision.counts.v1`);
    const countsType = avroType('decision-counts');
    const totals = () =>
      counts.messages.reduce(
        (acc, m) => {
          const c = countsType.fromBuffer(m.value!.subarray(5)) as { kept: number; dropped: number };
          return { kept: acc.kept + c.kept, dropped: acc.dropped + c.dropped };
        },
        { kept: 0, dropped: 0 },
      );
    try {
      const first = startGate(prefix);
      await waitFor(() => decisions.messages.length >= 3_000, { timeoutMs: 90_000, what: 'the first gate to commit some batches' });
      first.kill('SIGKILL');
      await exited(first);
      const atKill = totals();
      assert.ok(atKill.kept + atKill.dropped < total, `the kill must land mid-stream (processed ${atKill.kept + atKill.dropped} of ${total})`);

      const second = startGate(prefix);
      try {
        await waitFor(() => totals().kept + totals().dropped >= total, { timeoutMs: 120_000, what: 'the restarted gate to finish' });
        await new Promise((r) => setTimeout(r, 2_000)); // duplicates, if any, would arrive now
      } finally {
        second.kill('SIGTERM');
        assert.equal(await exited(second), 0, 'a graceful stop exits 0');
      }
      const { kept, dropped } = totals();
      assert.equal(kept + dropped, total, 'every event counted exactly once');
      const type = avroType('decision-record');
      const ids = decisions.messages.map((m) => (type.fromBuffer(m.value!.subarray(5)) as { event_id: string }).event_id);
      assert.equal(new Set(ids).size, ids.length, 'no decision record twice');
      assert.equal(ids.length, kept, 'every kept decision present');
      assert.equal(kept, total - total / 5 + ids.filter((id) => Number(id.slice(3)) % 5 === 0).length);
    } finally {
      await Promise.all([decisions.stop(), counts.stop()]);
    }
  });
});
