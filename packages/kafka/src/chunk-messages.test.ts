import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chunkMessages } from './transactional-processor.js';

describe('chunkMessages', () => {
  it('keeps every message, in order, in pieces under the limit (a lone oversized message alone)', () => {
    const messages = Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: Buffer.alloc(i === 50 ? 5_000 : 300) }));
    const parts = [...chunkMessages(messages, 2_000)];
    assert.deepEqual(parts.flat(), messages);
    for (const p of parts) {
      const size = p.reduce((s, m) => s + (m.value?.length ?? 0) + String(m.key).length + 64, 0);
      assert.ok(size <= 2_000 || p.length === 1, `piece of ${p.length} is ${size} bytes`);
    }
    assert.deepEqual([...chunkMessages([], 10)], []);
  });
});
