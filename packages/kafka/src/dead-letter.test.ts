import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deadLetterMessage, ENCODED_HEADERS, MAX_RECORD_BYTES, originalHeaders, recordBytes } from './dead-letter.js';

const source = { topic: 'inference.raw', partition: 4 };
const failure = { reason: 'payload_too_large', message: 'event is 3000000 bytes; the policy allows 262144', step: 'decode' };

test('a dead letter keeps the original key, bytes and headers, and says why and where from', () => {
  const value = Buffer.from('{"event_id":"e1"}');
  const m = deadLetterMessage({ key: 'k1', value, offset: '17', timestamp: '1780000000000', headers: { traceparent: 'abc' } }, source, failure, 'gate', 5);
  assert.equal(m.key, 'k1');
  assert.equal(m.value, value);
  assert.equal(m.headers?.['dlog.source.timestamp'], '1780000000000', 'a replay writes the original time back');
  assert.equal(m.headers?.traceparent, 'abc');
  assert.equal(m.headers?.['dlog.reason'], 'payload_too_large');
  assert.equal(m.headers?.['dlog.source.offset'], '17');
  assert.equal(m.headers?.['dlog.source.partition'], '4');
  assert.equal(m.headers?.['dlog.value_dropped'], undefined);
});

test('headers no client carries as they are (not UTF-8, a zero byte, null) travel encoded and come back for a replay', () => {
  // librdkafka wrote ff 00 fe as U+FFFD and a null as ''; kafkajs could not send a null at all.
  const bin = Buffer.from([0xff, 0x00, 0xfe]);
  const original = { traceparent: Buffer.from('abc'), bin, trace: null, multi: [Buffer.from('a'), null, 'b'], zero: 'x\u0000y', lone: '\ud800' } as unknown as Record<string, unknown>;
  const m = deadLetterMessage({ key: 'k1', value: Buffer.from('{}'), offset: '3', headers: original }, source, failure, 'gate', 5);
  const sent = m.headers ?? {};
  assert.equal(String(sent.traceparent), 'abc', 'what every client carries stays as it is');
  for (const k of ['bin', 'trace', 'multi', 'zero', 'lone']) assert.equal(sent[k], undefined, k);
  for (const v of Object.values(sent)) for (const x of Array.isArray(v) ? v : [v]) assert.ok(x !== null && !String(x).includes('\u0000'));
  const back = originalHeaders(sent);
  assert.deepEqual(back.bin, bin);
  assert.deepEqual(back.trace, Buffer.alloc(0), 'a null comes back empty: kafkajs sends no null');
  assert.deepEqual((back.multi as Buffer[]).map(String), ['a', '', 'b']);
  assert.equal(String(back.zero), 'x\u0000y');
  assert.equal(String(back.traceparent), 'abc');
  assert.equal(back[ENCODED_HEADERS], undefined);
  assert.equal(Object.keys(back).some((k) => k.startsWith('dlog.')), false);
  // A producer's own header of our name is not taken for ours, and a malformed one restores nothing.
  const own = deadLetterMessage({ key: 'k', value: null, offset: '1', headers: { [ENCODED_HEADERS]: 'not json', ok: 'x' } }, source, failure, 'gate', 5);
  assert.equal(own.headers?.[ENCODED_HEADERS], undefined);
  assert.deepEqual(originalHeaders({ [ENCODED_HEADERS]: 'not json', ok: 'x' }), { ok: 'x' });
  assert.deepEqual(originalHeaders({ [ENCODED_HEADERS]: JSON.stringify({ 'dlog.reason': ['eA=='], b: ['AP8='] }) }), { b: Buffer.from([0x00, 0xff]) });
  // A letter written before the encoding, holding a null: sent back as an empty value.
  assert.deepEqual(originalHeaders({ h: null, a: [null, Buffer.from('x')] } as unknown as Record<string, Buffer>), { h: Buffer.alloc(0), a: [Buffer.alloc(0), Buffer.from('x')] });
});

test('an original too large for a record goes without its value, so the dead letter can be written at all', () => {
  const value = Buffer.alloc(3_000_000, 0x61);
  const m = deadLetterMessage({ key: 'k1', value, offset: '17', headers: { traceparent: 'abc' } }, source, failure, 'gate', 5);
  assert.equal(m.value, null);
  assert.equal(m.key, 'k1');
  assert.equal(m.headers?.traceparent, 'abc');
  assert.match(String(m.headers?.['dlog.value_dropped']), /3000000 bytes.*source offset/);
  assert.equal(m.headers?.['dlog.source.topic'], 'inference.raw');
  assert.equal(m.headers?.['dlog.source.offset'], '17');
  assert.ok(recordBytes(m) <= MAX_RECORD_BYTES);
});

test('a value just under the limit is kept; the limit counts key and headers too', () => {
  const headers = { big: 'h'.repeat(1000) };
  const fits = deadLetterMessage({ key: 'k', value: Buffer.alloc(MAX_RECORD_BYTES - 2000), offset: '1', headers }, source, failure, 'gate', 5);
  assert.notEqual(fits.value, null);
  assert.ok(recordBytes(fits) <= MAX_RECORD_BYTES);
  const over = deadLetterMessage({ key: 'k', value: Buffer.alloc(MAX_RECORD_BYTES - 500), offset: '1', headers }, source, failure, 'gate', 5);
  assert.equal(over.value, null);
  assert.equal(over.headers?.big, headers.big);
});

test('original headers too large to keep are dropped as well, ours stay', () => {
  const headers = { huge: Buffer.alloc(MAX_RECORD_BYTES) };
  const m = deadLetterMessage({ key: 'k', value: Buffer.from('x'), offset: '9', headers }, source, failure, 'enricher', 5);
  assert.equal(m.value, null);
  assert.equal(m.headers?.huge, undefined);
  assert.ok(m.headers?.['dlog.headers_dropped']);
  assert.equal(m.headers?.['dlog.reason'], 'payload_too_large');
  assert.equal(m.headers?.['dlog.source.offset'], '9');
  assert.ok(recordBytes(m) <= MAX_RECORD_BYTES);
});

test('a repeated header counts its name for every value, so 5,000 copies cannot carry a letter past the limit', () => {
  const headers = { 'x-repeated-header-name-forty-one-bytes-ab': Array.from({ length: 5_000 }, () => 'v') };
  const m = deadLetterMessage({ key: 'k', value: Buffer.alloc(850_000), offset: '3', headers }, source, failure, 'gate', 5);
  assert.equal(m.value, null, 'the value goes: with the names counted the letter is over the limit');
  assert.ok(recordBytes(m) <= MAX_RECORD_BYTES);
});

test('the record overhead is counted: key and value of 999,965 bytes are over a limit librdkafka applies with 36 bytes of its own', () => {
  assert.ok(recordBytes({ key: null, value: Buffer.alloc(999_965) }) > MAX_RECORD_BYTES);
  assert.ok(recordBytes({ key: null, value: Buffer.alloc(999_000) }) <= MAX_RECORD_BYTES);
});
