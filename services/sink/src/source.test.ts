import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { Kafka } from 'kafkajs';
import { kafkajsSource, type BatchHandler } from './source.js';

/**
 * A stand-in for the kafkajs consumer with its real pause/resume contract: both throw while no
 * consumer group exists (before run, and while kafkajs rebuilds the group after a crash), and a
 * rebuilt group starts with nothing paused.
 */
function fakeKafka() {
  const emitter = new EventEmitter();
  let group = false;
  let pausedNow = new Set<string>();
  let handler: ((p: unknown) => Promise<void>) | undefined;
  const notInitialized = () => new Error('Consumer group was not initialized, consumer#run must be called first');
  const consumer = {
    events: { GROUP_JOIN: 'consumer.group_join', CRASH: 'consumer.crash' },
    connect: async () => undefined,
    disconnect: async () => undefined,
    subscribe: async () => undefined,
    on: (event: string, listener: (e: unknown) => void) => emitter.on(event, listener),
    run: async (opts: { eachBatch: (p: unknown) => Promise<void> }) => {
      handler = opts.eachBatch;
    },
    pause: (tps: { topic: string }[]) => {
      if (!group) throw notInitialized();
      for (const t of tps) pausedNow.add(t.topic);
    },
    resume: (tps: { topic: string }[]) => {
      if (!group) throw notInitialized();
      for (const t of tps) pausedNow.delete(t.topic);
    },
    commitOffsets: async () => undefined,
  };
  return {
    kafka: { consumer: () => consumer } as unknown as Kafka,
    paused: () => [...pausedNow].sort(),
    /** kafkajs joined (again): a new group, nothing paused, GROUP_JOIN emitted. */
    join() {
      group = true;
      pausedNow = new Set();
      emitter.emit('consumer.group_join', { payload: { memberAssignment: { t1: [0] } } });
    },
    /** A crash with restart: the group is gone until the next join. */
    crash() {
      group = false;
    },
    /** Hands one batch to the source's handler, with kafkajs's own isRunning answering true; returns what the sink's handler was told. */
    async deliver(): Promise<boolean> {
      await handler!({
        batch: { topic: 't1', partition: 0, messages: [] },
        resolveOffset: () => undefined,
        isRunning: () => true,
        isStale: () => false,
      } as unknown);
      return lastRunning;
    },
  };
}

let lastRunning = true;
const recordRunning: BatchHandler = async (_batch, ctl) => {
  lastRunning = ctl.isRunning();
};

function source(k: ReturnType<typeof fakeKafka>, assigned: string[] = []) {
  return kafkajsSource(k.kafka, { groupId: 'g', maxFetchBytes: 1 << 20, maxBytesPerPartition: 1 << 20 }, {
    onAssigned: () => assigned.push(`assigned with ${k.paused().join(',') || 'nothing'} paused`),
    onCrash: () => undefined,
  });
}

describe('kafkajs sink source', () => {
  it('after pauseAll (stopping) hands nothing out and never resumes, whatever a table asks', async () => {
    const k = fakeKafka();
    const src = source(k);
    await src.start(['t1', 't2'], recordRunning);
    k.join();
    assert.equal(await k.deliver(), true);
    src.pauseAll();
    assert.deepEqual(k.paused(), ['t1', 't2']);
    // A table that wrote its batch and fell below half its limit asks to resume.
    src.resume('t1');
    assert.deepEqual(k.paused(), ['t1', 't2'], 'still paused');
    assert.equal(await k.deliver(), false, 'the handler is told to stop taking messages');
  });

  it('applies the tables’ pauses again when kafkajs rejoins after a crash, before the assignment is handled', async () => {
    const k = fakeKafka();
    const assigned: string[] = [];
    const src = source(k, assigned);
    await src.start(['t1', 't2'], recordRunning);
    k.join();
    src.pause('t1');
    k.crash();
    // While kafkajs has no group, pause and resume are refused; the source keeps the wish.
    src.pause('t2');
    src.resume('t1');
    k.join();
    assert.deepEqual(k.paused(), ['t2']);
    assert.deepEqual(assigned, ['assigned with nothing paused', 'assigned with t2 paused']);
  });

  it('pauses every topic at a join after pauseAll', async () => {
    const k = fakeKafka();
    const src = source(k);
    await src.start(['t1', 't2'], recordRunning);
    k.crash();
    src.pauseAll();
    k.join();
    assert.deepEqual(k.paused(), ['t1', 't2']);
  });
});
