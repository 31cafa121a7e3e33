import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { loadConfig } from '@dlog/config';
import { avroType, inputHash } from '@dlog/contracts';
import { createKafka, ensurePipelineTopics, replayDeadLetters } from '@dlog/kafka';
import { createGate, type Gate } from '@dlog/gate';
import { collect, log, tempDir, unique, waitFor } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');

function event(id: string, ts: number, note: string) {
  const input = { note };
  return {
    event_id: id,
    request_id: `req-${id}`,
    ts,
    endpoint: 'dlq-api',
    decision_type: 'loan_approval',
    model: { name: 'dlq-model', version: '1.0.0' },
    input_json: JSON.stringify(input),
    input_hash: inputHash(input),
    output: { decision: 'approved', confidence: 0.8 },
    producer: { service: 'test', sdk: 'custom' },
  };
}

describe('dlog dlq replay: dead letters go back once, with their original time', () => {
  it('replays what a raised limit now accepts, once, and leaves other reasons alone', async () => {
    const prefix = `${unique('dlq')}.`;
    const dir = tempDir('dlq');
    // A first gate whose policy takes events of at most 2,000 bytes.
    const small = path.join(dir, 'small.yaml');
    writeFileSync(small, readFileSync(path.join(root, 'infra/policies/default.yaml'), 'utf8').replace(/max_event_bytes: \d+/, 'max_event_bytes: 2000'));
    const env = { ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' };
    const kafka = createKafka({ brokers: loadConfig(env).kafkaBrokers, clientId: 'test-dlq', log });
    await ensurePipelineTopics(kafka, prefix);
    // Ten days ago: the gate checks ts against the record's time, which a replay must keep. The
    // raw topic keeps records 3 days, so a record that old lasts there until the broker's next
    // retention check: raised here, as an operator would before such a replay (said below).
    const setRetention = async (ms: number) => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        await admin.alterConfigs({ validateOnly: false, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: `${prefix}inference.raw`, configEntries: [{ name: 'retention.ms', value: String(ms) }, { name: 'compression.type', value: 'producer' }] }] });
      } finally {
        await admin.disconnect();
      }
    };
    await setRetention(30 * 86_400_000);
    const then = Date.now() - 10 * 86_400_000;
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({
      topic: `${prefix}inference.raw`,
      messages: [
        // A binary header: librdkafka, writing the dead letter, made ff 00 fe into U+FFFD.
        { key: 'k1', value: JSON.stringify(event('big-1', then, 'x'.repeat(3000))), timestamp: String(then), headers: { traceparent: 'tp-1', bin: Buffer.from([0xff, 0x00, 0xfe]) } },
        { key: 'k2', value: JSON.stringify(event('big-2', then, 'y'.repeat(3000))), timestamp: String(then) },
        { key: 'k3', value: '{"event_id": ', timestamp: String(then) },
        { key: 'k4', value: JSON.stringify(event('small-1', then, 'ok')), timestamp: String(then) },
      ],
    });
    await producer.disconnect();

    let gate: Gate | undefined = await createGate({ kafka, config: loadConfig({ ...env, DLOG_POLICY_FILE: small }), log });
    await gate.start();
    const dlq = await collect(`${prefix}inference.dlq`);
    const decisions = await collect(`${prefix}decisions.v1`);
    const raw = await collect(`${prefix}inference.raw`);
    try {
      await waitFor(() => dlq.messages.length >= 3 && decisions.messages.length >= 1, { timeoutMs: 60_000, what: 'three dead letters and one decision' });
      await gate.stop();
      gate = undefined;
      const letter = dlq.messages.find((m) => String(m.key) === 'k1')!;
      assert.equal(String(letter.headers?.['dlog.source.timestamp']), String(then), 'a dead letter keeps the original record time');

      // The CLI says what to type, and a dry run writes nothing.
      const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', 'dlq', 'replay', ...args], { cwd: root, env, encoding: 'utf8' });
      const bare = cli('inference.dlq');
      assert.equal(bare.status, 1);
      assert.match(bare.stderr, /--reason <code>.*or --all/);
      // With the raw topic's own 3 days, letters of 10 days ago are not written back: the broker
      // would delete them before the gate read them, while the replay log marked them done.
      await setRetention(259_200_000);
      const tooOld = cli('inference.dlq', '--reason', 'payload_too_large', '--dry-run');
      assert.equal(tooOld.status, 0, tooOld.stderr);
      assert.match(tooOld.stdout, /would replay 0\b/);
      assert.match(tooOld.stdout, /not replayed: 2 letter\(s\) for \S+inference\.raw up to 10 days old, and \S+inference\.raw keeps records 3 days.*retention\.ms=/);
      await setRetention(30 * 86_400_000);
      const dry = cli('inference.dlq', '--reason', 'payload_too_large', '--dry-run');
      assert.equal(dry.status, 0, dry.stderr);
      assert.match(dry.stdout, /would replay 2 \(payload_too_large 2\)/);
      assert.match(dry.stdout, /1 of other reasons/);

      // The default policy takes them: replay, then a second replay that finds nothing to do.
      gate = await createGate({ kafka, config: loadConfig(env), log });
      await gate.start();
      const first = await replayDeadLetters({ kafka, log, topic: `${prefix}inference.dlq`, replayLog: `${prefix}dlq.replays`, reasons: ['payload_too_large'] });
      assert.deepEqual(first.replayed, { payload_too_large: 2 });
      assert.equal(first.otherReason, 1);
      const again = cli('inference.dlq', '--reason', 'payload_too_large');
      assert.equal(again.status, 0, again.stderr);
      assert.match(again.stdout, /replayed 0\b/);
      assert.match(again.stdout, /left alone 2 replayed before/);

      await waitFor(() => decisions.messages.length >= 3, { timeoutMs: 60_000, what: 'the replayed events as decisions' });
      await new Promise((r) => setTimeout(r, 2_000)); // a second copy would show up now
      const type = avroType('decision-record');
      const ids = decisions.messages.map((m) => (type.fromBuffer(m.value!.subarray(5)) as { event_id: string }).event_id).sort();
      assert.deepEqual(ids, ['big-1', 'big-2', 'small-1'], 'each replayed event became one decision');
      assert.equal(dlq.messages.length, 3, 'nothing failed again');
      const replayed = raw.messages.find((m) => String(m.key) === 'k1' && m.headers?.['dlog.replay.of'] !== undefined);
      assert.equal(String(replayed?.headers?.traceparent), 'tp-1');
      assert.deepEqual(replayed?.headers?.bin, Buffer.from([0xff, 0x00, 0xfe]), 'the original header bytes, through the dead letter and back');
    } finally {
      await gate?.stop();
      await Promise.all([dlq.stop(), decisions.stop(), raw.stop()]);
    }
  });

  it('two replays at once send no letter twice: the later fences the earlier before it reads what was done', async () => {
    // Before, kafkajs fenced only at the first transaction, after the log was read: with 20,000
    // letters and two runs 2.5 s apart, 4,845 letters went twice.
    const prefix = `${unique('dlq2')}.`;
    const kafka = createKafka({ brokers: loadConfig(process.env).kafkaBrokers, clientId: 'test-dlq2', log });
    await ensurePipelineTopics(kafka, prefix, ['inference.raw', 'inference.dlq', 'dlq.replays']);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const letters = 20_000;
    for (let i = 0; i < letters; i += 1000) {
      await producer.send({
        topic: `${prefix}inference.dlq`,
        messages: Array.from({ length: 1000 }, (_, j) => ({
          key: `k${i + j}`,
          value: `{"n":${i + j}}`,
          headers: { 'dlog.reason': 'unknown_schema_id', 'dlog.source.topic': `${prefix}inference.raw`, 'dlog.source.partition': '0', 'dlog.source.offset': String(i + j) },
        })),
      });
    }
    await producer.disconnect();
    const replay = () => replayDeadLetters({ kafka, log, topic: `${prefix}inference.dlq`, replayLog: `${prefix}dlq.replays`, reasons: ['unknown_schema_id'] });
    const first = replay();
    await new Promise((r) => setTimeout(r, 300));
    const results = await Promise.allSettled([first, replay()]);
    for (const r of results) if (r.status === 'rejected') assert.match(String((r.reason as Error).message), /took over|epoch|fenced/i);
    await replay(); // finishes whatever a fenced run left
    const raw = await collect(`${prefix}inference.raw`);
    try {
      await waitFor(() => raw.messages.length >= letters, { timeoutMs: 60_000, what: 'every letter replayed' });
      await new Promise((r) => setTimeout(r, 2_000)); // a second copy would show up now
      const of = raw.messages.map((m) => String(m.headers?.['dlog.replay.of']));
      assert.equal(new Set(of).size, letters, 'every letter replayed');
      assert.equal(raw.messages.length, letters, 'and none twice');
    } finally {
      await raw.stop();
    }
  });

  it('reads a dead-letter partition that ends in an aborted transaction to its end, and says nothing stopped short', async () => {
    const prefix = `${unique('dlq3')}.`;
    const kafka = createKafka({ brokers: loadConfig(process.env).kafkaBrokers, clientId: 'test-dlq3', log });
    await ensurePipelineTopics(kafka, prefix, ['inference.dlq', 'dlq.replays']);
    const topic = `${prefix}inference.dlq`;
    const letter = (i: number) => ({ key: `k${i}`, value: `letter ${i}`, partition: 0, headers: { 'dlog.reason': 'schema_invalid' } });
    const plain = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await plain.connect();
    await plain.send({ topic, messages: [letter(1), letter(2)] });
    await plain.disconnect();
    // The partition's tail: three letters of a transaction that was aborted, and its marker.
    const tx = kafka.producer({ transactionalId: `${prefix}aborter`, idempotent: true, maxInFlightRequests: 1 });
    await tx.connect();
    const t = await tx.transaction();
    await t.send({ topic, messages: [letter(3), letter(4), letter(5)] });
    await t.abort();
    await tx.disconnect();

    const report = await replayDeadLetters({ kafka, log, topic, replayLog: `${prefix}dlq.replays`, dryRun: true, idleMs: 15_000 });
    assert.equal(report.unknownSource, 2, 'the two committed letters were read (they name no source, so are not replayed)');
    assert.deepEqual(report.stoppedShort, [], 'the aborted tail is the end of the partition, not a read cut short');
  });
});
