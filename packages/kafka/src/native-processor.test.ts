import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KafkaMessage } from 'kafkajs';
import pino from 'pino';
import type RdKafka from 'node-rdkafka';
import { Writable } from 'node:stream';
import type { NativeKafka } from './native.js';
import { createNativeProcessor, fromNative, RebalanceBarrier, workUnits } from './native-processor.js';

const msgs = (n: number, from = 0): KafkaMessage[] =>
  Array.from({ length: n }, (_, i) => ({ key: null, value: Buffer.from(String(from + i)), timestamp: '0', attributes: 0, offset: String(from + i), headers: {} }));

describe('workUnits', () => {
  it('keeps one unit per partition when there are at least as many partitions as units wanted', () => {
    const groups = [0, 1, 2].map((partition) => ({ ctx: { topic: 't', partition }, messages: msgs(2_000), last: 1_999 }));
    const units = workUnits(groups, 2);
    assert.deepEqual(units.map((u) => [u.ctx.partition, u.messages.length]), [[0, 2_000], [1, 2_000], [2, 2_000]]);
  });

  it('splits one big partition into ordered pieces, and never below the minimum piece', () => {
    const big = workUnits([{ ctx: { topic: 't', partition: 0 }, messages: msgs(3_001), last: 3_000 }], 3);
    assert.equal(big.length, 3);
    assert.deepEqual(big.flatMap((u) => u.messages.map((m) => m.offset)), msgs(3_001).map((m) => m.offset), 'all messages, in order');
    const small = workUnits([{ ctx: { topic: 't', partition: 0 }, messages: msgs(700), last: 699 }], 3);
    assert.equal(small.length, 1, '700 messages are not worth splitting into pieces under 500');
  });
});

describe('fromNative', () => {
  it('gives the kafkajs shape: string offset and timestamp, headers as an object, no timestamp when librdkafka has none', () => {
    const m = fromNative({ topic: 't', partition: 1, offset: 42, value: Buffer.from('v'), key: Buffer.from('k'), size: 1, timestamp: 1_700_000_000_000, headers: [{ a: Buffer.from('1') }, { b: 'two' }] });
    assert.equal(m.offset, '42');
    assert.equal(m.timestamp, '1700000000000');
    assert.equal(m.key!.toString(), 'k');
    assert.equal((m.headers!.a as Buffer).toString(), '1');
    assert.equal(m.headers!.b, 'two');
    const bare = fromNative({ topic: 't', partition: 0, offset: 0, value: null, size: 0, timestamp: -1 });
    assert.equal(bare.timestamp, undefined);
    assert.equal(bare.key, null);
    assert.deepEqual(bare.headers, {});
  });
});

describe('RebalanceBarrier', () => {
  it('gives partitions up only after the work on them has ended; takes new ones at once', async () => {
    const calls: string[] = [];
    const consumer = { assign: () => void calls.push('assign'), unassign: () => void calls.push('unassign') } as unknown as RdKafka.KafkaConsumer;
    let finish!: () => void;
    const barrier = new RebalanceBarrier(pino({ level: 'silent' }), () => consumer, undefined, () => new Promise<void>((r) => (finish = r)));
    barrier.callback({ code: -174 } as RdKafka.LibrdKafkaError, []); // ERR__REVOKE_PARTITIONS
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(calls, [], 'an insert on the revoked partitions is still in flight');
    finish();
    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(calls, ['unassign']);
    barrier.callback({ code: -175 } as RdKafka.LibrdKafkaError, [{ topic: 't', partition: 0 }]); // ERR__ASSIGN_PARTITIONS
    assert.deepEqual(calls, ['unassign', 'assign']);
  });

  it('when the work ends during a batch, gives the partitions up only after that batch', async () => {
    const calls: string[] = [];
    const consumer = { assign: () => void calls.push('assign'), unassign: () => void calls.push('unassign') } as unknown as RdKafka.KafkaConsumer;
    let finish!: () => void;
    const barrier = new RebalanceBarrier(pino({ level: 'silent' }), () => consumer, undefined, () => new Promise<void>((r) => (finish = r)));
    barrier.callback({ code: -174 } as RdKafka.LibrdKafkaError, []);
    await barrier.around(async () => {
      finish();
      await new Promise((r) => setTimeout(r, 10));
      // The batch still seeks its partitions back here: they must still be assigned.
      calls.push('seek');
    });
    assert.deepEqual(calls, ['seek', 'unassign']);
  });
});

/**
 * A librdkafka stand-in whose every commit fails. Each new consumer's first poll is empty (as
 * after a reconnect, before the group has assigned anything), its later polls return one message.
 */
function failingCommits(): NativeKafka {
  const done = (cb: (err: null) => void) => setImmediate(() => cb(null));
  class Producer {
    on() {}
    connect(_o: unknown, cb: (err: null) => void) { done(cb); }
    initTransactions(_t: number, cb: (err: null) => void) { done(cb); }
    beginTransaction(cb: (err: null) => void) { done(cb); }
    produce() {}
    poll() {}
    sendOffsetsToTransaction(_o: unknown, _c: unknown, _t: number, cb: (err: null) => void) { done(cb); }
    commitTransaction(_t: number, cb: (err: { message: string; code: number }) => void) { setImmediate(() => cb({ message: 'Broker: Message size too large', code: 10 })); }
    abortTransaction(_t: number, cb: (err: null) => void) { done(cb); }
    isConnected() { return true; }
    disconnect(cb: (err: null) => void) { done(cb); }
  }
  class KafkaConsumer {
    private polls = 0;
    on() {}
    connect(_o: unknown, cb: (err: null) => void) { done(cb); }
    setDefaultConsumeTimeout() {}
    subscribe() {}
    consume(_n: number, cb: (err: null, m: RdKafka.Message[]) => void) {
      const m: RdKafka.Message = { topic: 'in', partition: 3, offset: 7, value: Buffer.from('secret payload'), size: 14, timestamp: 0 };
      setImmediate(() => cb(null, this.polls++ === 1 ? [m] : []));
    }
    isConnected() { return true; }
    disconnect(cb: (err: null) => void) { done(cb); }
  }
  return { Producer, KafkaConsumer, librdkafkaVersion: 'fake' } as unknown as NativeKafka;
}

describe('createNativeProcessor', () => {
  it('backs off further for a batch that keeps failing, though the poll after each reconnect is empty, and names the batch', async () => {
    const lines: { msg: string; retryInMs?: number; batches?: unknown }[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString())), cb()) });
    const failures = () => lines.filter((l) => l.msg.startsWith('batch failed'));
    const processor = createNativeProcessor({
      native: failingCommits(),
      brokers: ['fake:9092'],
      clientId: 'test',
      log: pino({ level: 'warn' }, sink),
      groupId: 'g',
      topics: ['in'],
      transactionalId: 't',
      process: async () => [],
    });
    await processor.start();
    const deadline = Date.now() + 5_000;
    while (failures().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await processor.stop();
    // The empty poll after each reconnect reset the backoff: the batch was retried every 200 ms.
    assert.deepEqual(failures().slice(0, 3).map((l) => l.retryInMs), [200, 400, 800]);
    assert.deepEqual(failures()[0]!.batches, [{ topic: 'in', partition: 3, firstOffset: '7', lastOffset: '7', count: 1 }]);
    assert.ok(!JSON.stringify(failures()).includes('secret'), 'no payload in the log');
  });
});
