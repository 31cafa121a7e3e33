import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Message } from 'kafkajs';
import { RetriableError } from '@dlog/runtime';
import { deadLetterSender } from './dead-letter-sender.js';

const letter = (n: number, size = 10): Message => ({ key: `k${n}`, value: Buffer.alloc(size, n), headers: { 'dlog.reason': 'clickhouse_rejected', 'dlog.source.offset': String(n), other: 'x' } });
const tooLarge = Object.assign(new Error('The request included a message larger than the max message size the server will accept'), { type: 'MESSAGE_TOO_LARGE', code: 10 });

test('a broker failure is retriable, never fatal: the writer backs off instead of stopping the sink', async () => {
  const send = deadLetterSender(async () => {
    throw Object.assign(new Error('Connection error: connect ECONNREFUSED'), { name: 'KafkaJSNumberOfRetriesExceeded', code: 16 });
  });
  await assert.rejects(send('sink.dlq', [letter(1)]), (err: unknown) => err instanceof RetriableError && /sink\.dlq/.test((err as Error).message) && (err as { code?: unknown }).code === undefined);
});

test('a dead letter too large for the topic goes without its value, the others as they are', async () => {
  const sent: Message[] = [];
  const send = deadLetterSender(async (_topic, messages) => {
    if (messages.some((m) => m.value !== null && Buffer.byteLength(m.value as Buffer) > 100)) throw Object.assign(new Error('wrapped'), { cause: tooLarge });
    sent.push(...messages);
  });
  await send('sink.dlq', [letter(1), letter(2, 1000), letter(3)]);
  assert.deepEqual(sent.map((m) => m.key), ['k1', 'k2', 'k3']);
  assert.equal(sent[1]!.value, null);
  assert.match(String(sent[1]!.headers!['dlog.value_dropped']), /1000 bytes/);
  assert.equal(sent[1]!.headers!['dlog.source.offset'], '2', 'the headers still say where the original is');
  assert.ok(Buffer.isBuffer(sent[0]!.value) && Buffer.isBuffer(sent[2]!.value));
});

test('still too large without its value: only our headers go, then it is retried, never dropped', async () => {
  let attempts = 0;
  const send = deadLetterSender(async () => {
    attempts++;
    throw tooLarge;
  });
  await assert.rejects(send('sink.dlq', [letter(1, 1000)]), RetriableError);
  assert.equal(attempts, 3, 'with its value, without it, with our headers only');
});
