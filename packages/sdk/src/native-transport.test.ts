import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { NativeKafka } from '@dlog/kafka';
import { createLogger, waitFor } from '@dlog/runtime';
import { nativeTransport, SessionLostError } from './native-transport.js';

/**
 * Stands in for node-rdkafka's Producer, with its callback and event shapes: a delivery report
 * carries the opaque given to produce(), and errors come as node-rdkafka builds them (a fatal
 * error as code -150 or only as text, never with isFatal).
 */
class FakeProducer extends EventEmitter {
  static made: FakeProducer[] = [];
  static connectDelayMs = 0;
  produced: { topic: string; value: Buffer; key: string; opaque: unknown }[] = [];
  throwOnProduce: unknown;
  disconnected = false;
  connected = false;
  constructor() {
    super();
    FakeProducer.made.push(this);
  }
  connect(_opts: unknown, cb: (err: Error | null) => void): void {
    const done = () => {
      this.connected = true;
      cb(null);
    };
    // Negative: the connect hangs until the test calls completeConnect().
    if (FakeProducer.connectDelayMs < 0) this.completeConnect = done;
    else setTimeout(done, FakeProducer.connectDelayMs);
  }
  completeConnect: (() => void) | undefined;
  isConnected(): boolean {
    return this.connected;
  }
  setPollInterval(): void {}
  produce(topic: string, _partition: null, value: Buffer, key: string, _ts: number, opaque: unknown): void {
    if (this.throwOnProduce) throw this.throwOnProduce;
    this.produced.push({ topic, value, key, opaque });
  }
  deliver(i: number, err: object | null = null): void {
    const m = this.produced[i]!;
    this.emit('delivery-report', err, { topic: m.topic, partition: 0, offset: i, opaque: m.opaque });
  }
  disconnect(_timeout: number, cb: (err: Error | null) => void): void {
    // node-rdkafka's flush() throws on a producer that is not connected.
    if (!this.connected) throw new Error('Producer not connected');
    this.disconnected = true;
    setImmediate(() => cb(null));
  }
}

const fresh = () => {
  FakeProducer.made = [];
  FakeProducer.connectDelayMs = 0;
  return nativeTransport({
    brokers: ['127.0.0.1:1'],
    registryUrl: 'http://127.0.0.1:1',
    clientId: 'test',
    log: createLogger({ name: 'test', level: 'silent' }),
    compression: 'none',
    requestTimeoutMs: 1_000,
    native: { Producer: FakeProducer } as unknown as NativeKafka,
  });
};
const msg = (n: number) => ({ key: `k${n}`, value: Buffer.from(`v${n}`) });
/** Until the producer has been handed `n` messages in all. */
async function produced(p: () => FakeProducer | undefined, n: number): Promise<FakeProducer> {
  for (const until = Date.now() + 5_000; Date.now() < until; ) {
    const got = p();
    if (got && got.produced.length >= n) return got;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`the producer was not handed ${n} message(s)`);
}

describe('native transport', () => {
  it('a retried batch waits for its messages still in flight instead of producing them again', async () => {
    const t = fresh();
    const [a, b, c] = [msg(1), msg(2), msg(3)];
    await assert.rejects(t.send('raw', [a, b]), /not acknowledged within 1000 ms; they stay in flight/);
    const p = FakeProducer.made[0]!;
    p.deliver(0);
    const retry = t.send('raw', [a, b, c]);
    await produced(() => p, 3);
    assert.deepEqual(p.produced.map((m) => m.key), ['k1', 'k2', 'k3'], 'a delivered, b joined, only c produced');
    p.deliver(1);
    p.deliver(2);
    await retry;
  });

  it('delivered() tells what landed after its send gave up; after a reset a message still pending is produced again', async () => {
    const t = fresh();
    const [a, b] = [msg(1), msg(2)];
    await assert.rejects(t.send('raw', [a, b]), /not acknowledged/);
    const first = FakeProducer.made[0]!;
    first.deliver(0);
    assert.equal(t.delivered!(a.value), true);
    assert.equal(t.delivered!(b.value), false);
    await t.reset();
    const retry = t.send('raw', [a, b]);
    const second = await produced(() => FakeProducer.made[1], 1);
    assert.deepEqual(second.produced.map((m) => m.key), ['k2'], 'a is in the topic; b is sent again in the new session');
    second.deliver(0);
    await retry;
    assert.equal(t.delivered!(b.value), true);
  });

  it('a message refused (not fatally) is produced again on the retry, with where it failed in the error', async () => {
    const t = fresh();
    const [a, b] = [msg(1), msg(2)];
    const first = t.send('raw', [a, b]);
    const p = await produced(() => FakeProducer.made[0], 2);
    p.deliver(0);
    p.deliver(1, { message: 'Broker: Topic authorization failed', code: 29 });
    await assert.rejects(first, (err: Error) => !(err instanceof SessionLostError) && /delivery to raw \[0\] failed: Broker: Topic authorization failed/.test(err.message));
    const retry = t.send('raw', [a, b]);
    await produced(() => p, 3);
    assert.deepEqual(p.produced.map((m) => m.key), ['k1', 'k2', 'k2']);
    p.deliver(2);
    await retry;
  });

  for (const [how, fail] of [
    ['event.error with code -150', (p: FakeProducer) => p.emit('event.error', { message: 'Local: Fatal error', code: -150 })],
    ['event.error with only the text', (p: FakeProducer) => p.emit('event.error', { message: 'fatal error', code: -1 })],
    ['produce() throwing ERR__FATAL', (p: FakeProducer) => (p.throwOnProduce = Object.assign(new Error('Local: Fatal error'), { code: -150 }))],
  ] as const) {
    it(`a fatal producer error (${how}) fails sends with SessionLostError until reset`, async () => {
      const t = fresh();
      await t.send('raw', []);
      fail(FakeProducer.made[0]!);
      await assert.rejects(t.send('raw', [msg(1)]), (err: Error & { sessionLost?: boolean }) => err instanceof SessionLostError && err.sessionLost === true);
      await t.reset();
      assert.equal(FakeProducer.made[0]!.disconnected, true);
      const next = t.send('raw', [msg(1)]);
      (await produced(() => FakeProducer.made[1], 1)).deliver(0);
      assert.equal(FakeProducer.made.length, 2, 'a new producer');
      await next;
    });
  }

  it('disconnect() during a connect: stops waiting at once, closes the producer once its connect ends, produces nothing', async () => {
    const t = fresh();
    // Hangs (an unreachable broker): disconnect() must not wait for it.
    FakeProducer.connectDelayMs = -1;
    const sending = t.send('raw', [msg(1)]);
    await waitFor(() => FakeProducer.made.length === 1, { timeoutMs: 5_000, what: 'the producer' });
    const connecting = FakeProducer.made[0]!;
    await t.disconnect();
    await assert.rejects(sending, /abandoned/);
    assert.equal(connecting.produced.length, 0);
    assert.equal(connecting.disconnected, false, 'not connected: nothing to disconnect yet');
    // The connect completes after all: that producer must not be left connected.
    connecting.completeConnect!();
    await waitFor(() => connecting.disconnected, { timeoutMs: 5_000, what: 'the late producer closed' });
    await assert.rejects(t.send('raw', [msg(2)]), /closed/);
    assert.equal(FakeProducer.made.length, 1, 'no producer after disconnect');
  });
});
