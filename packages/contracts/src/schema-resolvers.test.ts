import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroType, loadSchema } from './schemas.js';
import { AvroDecoder, encodeFramed } from './schema-resolvers.js';

const alert = {
  alert_id: 'run-alert-1',
  rule: 'confidence_drop',
  severity: 'warning',
  endpoint: 'loan-api',
  model_name: 'loan-approver',
  model_version: '2.5.0',
  window_start: 1_780_000_000_000,
  window_end: 1_780_000_300_000,
  summary: 'confidence dropped',
  evidence: { mean: '0.65' },
  evidence_json: null,
  scope_command: 'dlog scope --model loan-approver:2.5.0',
  ts: 1_780_000_300_000,
};

describe('AvroDecoder', () => {
  const type = avroType('alert');
  const fetch = async (id: number) => (id === 7 ? JSON.stringify(loadSchema('alert')) : undefined);

  it('decodes framed Avro by schema id, and returns results instead of throwing', async () => {
    const decoder = new AvroDecoder(type, fetch);
    const good = encodeFramed(type, 7, alert);
    const unknown = encodeFramed(type, 8, alert);
    await decoder.prepare([good, unknown, null]);
    const r = decoder.decode(good);
    assert.ok(r.ok && (r.value as { alert_id: string }).alert_id === 'run-alert-1');
    assert.deepEqual(decoder.decode(unknown), { ok: false, reason: 'unknown_schema_id', message: 'schema id 8 is not in the registry' });
    assert.equal((decoder.decode(null) as { reason: string }).reason, 'empty_message');
    assert.equal((decoder.decode(Buffer.from('{"json":1}')) as { reason: string }).reason, 'wrong_magic_byte');
    assert.equal((decoder.decode(good.subarray(0, good.length - 3)) as { reason: string }).reason, 'invalid_avro');
  });

  it('reads a writer schema that is the contract under another namespace', async () => {
    const own = { ...(loadSchema('alert') as object), namespace: 'com.acme.alerts' };
    const decoder = new AvroDecoder(type, async (id: number) => (id === 9 ? JSON.stringify(own) : undefined));
    const framed = encodeFramed(avroType('alert'), 9, alert);
    await decoder.prepare([framed]);
    const r = decoder.decode(framed);
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal((r.value as { alert_id: string }).alert_id, 'run-alert-1');
  });
});
