import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroType, loadSchema } from '@dlog/contracts';
import { AvroDecoder } from './decode.js';
import { frame, sampleAlert } from './sample-records.js';

describe('AvroDecoder', () => {
  const type = avroType('alert');
  const fetch = async (id: number) => (id === 7 ? JSON.stringify(loadSchema('alert')) : undefined);

  it('decodes framed Avro by schema id, and returns results instead of throwing', async () => {
    const decoder = new AvroDecoder(type, fetch);
    const good = frame(7, type.toBuffer(sampleAlert(1)));
    const unknown = frame(8, type.toBuffer(sampleAlert(1)));
    await decoder.prepare([good, unknown, null]);
    const r = decoder.decode(good);
    assert.ok(r.ok && (r.value as { alert_id: string }).alert_id === 'run-alert-1');
    assert.deepEqual(decoder.decode(unknown), { ok: false, reason: 'unknown_schema_id', message: 'schema id 8 is not in the registry' });
    assert.equal((decoder.decode(null) as { reason: string }).reason, 'empty_message');
    assert.equal((decoder.decode(Buffer.from('{"json":1}')) as { reason: string }).reason, 'wrong_magic_byte');
    assert.equal((decoder.decode(good.subarray(0, good.length - 3)) as { reason: string }).reason, 'invalid_avro');
  });
});
