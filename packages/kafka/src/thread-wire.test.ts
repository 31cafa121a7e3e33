import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import { packMessages, transferables, unpackMessages } from './thread-wire.js';

describe('thread wire', () => {
  it('round-trips keys, values and headers through a real port, copying only the message bytes', () => {
    // Views into one big "fetch response", and small pooled buffers: the cases that would drag
    // whole ArrayBuffers along if posted as they are.
    const response = Buffer.alloc(1 << 20, 7);
    response.write('value-one', 100);
    const pooled = Buffer.from('k2');
    const messages = [
      { key: response.subarray(0, 4), value: response.subarray(100, 109), headers: { a: Buffer.from('x'), multi: [Buffer.from('m1'), 'm2'] }, offset: '41', timestamp: '1700000000000', attributes: 0 },
      { key: pooled, value: null, headers: {}, offset: '42', timestamp: '1700000000001', attributes: 0 },
      { key: 'string-key', value: Buffer.from([0, 1, 2, 255]), headers: { s: 'text', none: null, some: [Buffer.from('p'), null] } as unknown as Record<string, Buffer> },
    ];
    const packed = packMessages(messages);
    assert.equal(packed.blob.byteLength, 4 + 9 + 1 + 2 + 2 + 4 + 1);

    const { port1, port2 } = new MessageChannel();
    port1.postMessage(packed, transferables(packed));
    assert.equal(packed.blob.byteLength, 0, 'the blob is transferred, not cloned');
    const received = receiveMessageOnPort(port2)!.message as typeof packed;
    port1.close();
    const out = unpackMessages(received);

    assert.equal(out.length, 3);
    assert.deepEqual(out[0]!.key, Buffer.alloc(4, 7));
    assert.equal(out[0]!.value!.toString(), 'value-one');
    assert.equal(String(out[0]!.headers!.a), 'x');
    assert.deepEqual((out[0]!.headers!.multi as unknown[]).map(String), ['m1', 'm2']);
    assert.equal(out[0]!.offset, '41');
    assert.equal(out[0]!.timestamp, '1700000000000');
    assert.equal(String(out[1]!.key), 'k2');
    assert.equal(out[1]!.value, null);
    assert.equal(out[2]!.key as unknown, 'string-key');
    assert.deepEqual([...out[2]!.value!], [0, 1, 2, 255]);
    assert.equal(out[2]!.headers!.s, 'text');
    // Null header values as the consumer gave them (a dead letter must say null, not '' or nothing).
    assert.equal(out[2]!.headers!.none as unknown, null);
    assert.deepEqual((out[2]!.headers!.some as unknown[]).map((x) => (x === null ? null : String(x))), ['p', null]);
    // An output message without a timestamp must not come back stamped (kafkajs would send '0': 1970).
    assert.equal(out[2]!.timestamp, undefined);
    assert.equal(out[2]!.offset, '0');
  });

  it('carries string values as their UTF-8 bytes', () => {
    const packed = packMessages([{ key: 'k', value: 'héllo' }, { key: null, value: Buffer.from('b') }]);
    assert.equal(packed.blob.byteLength, Buffer.byteLength('héllo') + 1);
    const out = unpackMessages(packed);
    assert.equal(String(out[0]!.value), 'héllo');
    assert.equal(String(out[1]!.value), 'b');
  });
});
