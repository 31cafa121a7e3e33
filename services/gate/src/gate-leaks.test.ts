import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { KafkaMessage } from 'kafkajs';
import { avroType, encodeFramed, type DecisionRecordRecord } from '@dlog/contracts';
import { scrubText } from './detectors.js';
import { processBatch, type GateDeps } from './gate.js';
import { parseKeyRing } from './keys.js';
import { detectorNames, loadPolicy } from './policy.js';
import { createProtector } from './protect.js';

/**
 * Ways raw personal data, or a single event, once got past or stuck the gate (found in review):
 * each test fails on the gate before these fixes.
 */

const policy = loadPolicy(new URL('../../../infra/policies/default.yaml', import.meta.url).pathname);
const keys = parseKeyRing(`k1:${randomBytes(32).toString('base64')}`);
const inputType = avroType('inference-event');
const decisionType = avroType('decision-record');

function deps(over: Partial<GateDeps> = {}): GateDeps {
  return {
    policy,
    protector: createProtector(policy.doc.pii, keys),
    inputType,
    schemas: { get: () => undefined },
    decisionType: { type: decisionType, id: 7 },
    countsType: { type: avroType('decision-counts'), id: 8 },
    topics: { decisions: 'd', counts: 'c', deadLetters: 'q' },
    now: () => 1_780_000_000_500,
    ...over,
  };
}

function event(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event_id: 'e-1',
    request_id: 'r-1',
    ts: 1_780_000_000_000,
    endpoint: 'loan-api',
    decision_type: 'loan_approval',
    model: { name: 'loan-approver', version: '2.4.1' },
    input: { amount: 5000 },
    output: { decision: 'approved', confidence: 0.9 },
    producer: { service: 'loan-api', sdk: 'custom' },
    ...over,
  };
}

const msg = (value: Buffer, offset: number): KafkaMessage =>
  ({ key: Buffer.from('k'), value, offset: String(offset), timestamp: '1780000000000', attributes: 0, headers: {} }) as unknown as KafkaMessage;

function run(events: (Record<string, unknown> | Buffer)[], d = deps()) {
  const out = processBatch(events.map((e, i) => msg(Buffer.isBuffer(e) ? e : Buffer.from(JSON.stringify(e)), i)), { topic: 'inference.raw', partition: 0 }, d);
  const [decisions, counts, dead] = out;
  return {
    records: decisions!.messages.map((m) => decisionType.fromBuffer((m.value as Buffer).subarray(5)) as DecisionRecordRecord),
    counts: counts!.messages.map((m) => avroType('decision-counts').fromBuffer((m.value as Buffer).subarray(5)) as { model_name: string; endpoint: string; kept: number }),
    dead: dead!.messages.map((m) => ({ reason: String(m.headers!['dlog.reason']), step: String(m.headers!['dlog.step']), bytes: m.value as Buffer })),
  };
}

const raw = ['Jane Doe', 'jane.doe@example.com', 'jane@example.com', '1 Main St', '+14155551234', '4111111111111111'];
function assertNoRaw(record: unknown): void {
  const text = JSON.stringify(record);
  for (const r of raw) assert.ok(!text.includes(r), `raw "${r}" in ${text}`);
}

describe('gate: personal data outside the obvious places', () => {
  it('a dotted key does not decide the rule of a nested path (a shared cache entry once did, for good)', () => {
    const d = deps();
    const { records } = run([event({ input: { 'applicant.name': 'x' } }), event({ input: { applicant: { name: 'Jane Doe' } } })], d);
    assert.equal(JSON.parse(records[1]!.input_json!).applicant.name, '[redacted]');
  });

  it('field rules match keys whatever their case, and keys holding personal data are scrubbed', () => {
    const { records } = run([
      event({ input: { Name: 'Jane Doe', EMAIL: 'Jane.Doe@example.com', contacts: { '+14155551234': 'mobile', 'jane@example.com': { phone: '+14155551234' } } } }),
    ]);
    const r = records[0]!;
    const input = JSON.parse(r.input_json!);
    assert.equal(input.Name, '[redacted]');
    assert.match(input.EMAIL, /^hmac:k1:/);
    assertNoRaw(r);
    // The hashed field's path names the scrubbed key, not the address.
    assert.equal(Object.keys(r.input_fields).length, 2);
  });

  it('attributes, ids, labels and config extras pass the rules and detectors', () => {
    const { records } = run([
      event({
        request_id: 'jane.doe@example.com',
        tenant: 'jane@example.com',
        attributes: { name: 'Jane Doe', 'jane@example.com': 'x', note: 'call +14155551234' },
        config: { ref: 'configs/prod/x:v1', params: { extra: { user: 'jane@example.com', address: '1 Main St' }, thresholds: { 'jane@example.com': 0.5 } } },
        output: { decision: 'approved', confidence: 0.9, scores: { 'jane@example.com': 1 } },
        trajectory: { trace_id: 'jane@example.com', step: 1, tool_name: 'mail jane@example.com', parent_event_id: null, tool_args_hash: null },
        producer: { service: 'loan-api', sdk: 'custom', host: 'jane@example.com' },
      }),
    ]);
    const r = records[0]!;
    assertNoRaw(r);
    assert.equal(r.attributes.name, '[redacted]');
    assert.equal(r.config!.params.extra.address, '[redacted]');
    assert.match(r.request_id, /^\[email:[0-9a-f]{16}\]$/);
  });

  it('full-tier output_json that is JSON gets the field rules, escapes included', () => {
    const outputJson = JSON.stringify({ name: 'Jane Doe', address: '1 Main St' }).replace('}', ',"email":"jane\\u0040example.com"}');
    const { records } = run([event({ output: { decision: 'approved', confidence: 0.9, output_json: outputJson } })]);
    const out = JSON.parse(records[0]!.output.output_json!);
    assert.equal(out.name, '[redacted]');
    assert.match(out.email, /^hmac:k1:/);
    assertNoRaw(records[0]);
  });

  it('card numbers next to other digits, with other separators, and IBANs before a word are found', () => {
    const all = new Set(detectorNames);
    const tok = (type: string) => `<${type}>`;
    assert.equal(scrubText('card 4111 1111 1111 1111 12/25', all, tok), 'card <card> 12/25');
    assert.equal(scrubText('card 4111 1111 1111 1111 123', all, tok), 'card <card> 123');
    assert.equal(scrubText('card 4111.1111.1111.1111', all, tok), 'card <card>');
    assert.equal(scrubText('card 4111\u00a01111\u00a01111\u00a01111', all, tok), 'card <card>');
    assert.equal(scrubText('IBAN GB82WEST12345698765432 EUR', all, tok), 'IBAN <iban> EUR');
    assert.equal(scrubText('mail jané.doe@exämple.com', all, tok), 'mail <email>');
    // Still not a card: Luhn fails for the run and for every window at a separator.
    assert.equal(scrubText('ref 1234 5678 9012 3456 78', all, tok).includes('<card>'), false);
  });
});

describe('gate: input no step foresaw goes to the dead-letter topic, never stops the batch', () => {
  it('an input nested deeper than JSON.stringify can write', () => {
    const depth = 100_000;
    const text = JSON.stringify(event()).replace('"input":{"amount":5000}', `"input":${'['.repeat(depth)}${']'.repeat(depth)}`);
    const { records, dead } = run([Buffer.from(text), event()]);
    assert.equal(records.length, 1);
    assert.deepEqual(dead.map((d) => d.reason), ['invalid_input']);
    assert.equal(dead[0]!.bytes.toString(), text, 'the dead letter keeps the original bytes');
  });

  it('an Avro event whose array claims a billion items (the process once ran out of memory)', () => {
    const good = encodeFramed(inputType, 1, { ...event(), input_json: '{"amount":5000}', input_hash: '', tenant: null, image: null, config: null, preprocessing: null, environment_digest: null, trajectory: null, attributes: {}, output: { decision: 'approved', confidence: 0.9, scores: {}, token_logprobs: [0.5], output_json: null }, producer: { service: 'p', sdk: 's', host: null } });
    const schemas = { get: (id: number) => (id === 1 ? { resolver: inputType.createResolver(inputType) } : undefined) } as unknown as GateDeps['schemas'];
    // token_logprobs is the only array: find its count (1, zig-zag 2) followed by the double 0.5.
    const half = Buffer.alloc(8);
    half.writeDoubleLE(0.5);
    const at = good.indexOf(Buffer.concat([Buffer.from([2]), half]));
    assert.ok(at > 0);
    const bomb = Buffer.concat([good.subarray(0, at), Buffer.from([0x80, 0xa8, 0xd6, 0xb9, 0x07]), good.subarray(at + 1)]);
    const { records, dead } = run([bomb, good], deps({ schemas }));
    assert.equal(records.length, 1);
    assert.deepEqual(dead.map((d) => d.reason), ['truncated_avro']);
  });

  it('something that throws inside a step is dead-lettered as unprocessable', () => {
    const d = deps();
    const broken = { ...d.protector, protectInput: () => { throw new TypeError('a bug'); } };
    const { records, dead, counts } = run([event({ decision_type: 'other' }), event()], { ...d, protector: broken });
    assert.equal(records.length, 0);
    assert.deepEqual(dead.map((x) => `${x.reason}/${x.step}`), ['unprocessable/gate', 'unprocessable/gate']);
    assert.equal(counts.length, 0, 'a failed event is not counted as kept');
  });

  it('names holding the key separator count apart', () => {
    const { counts } = run([
      event({ endpoint: 'e\u0000x', decision_type: 'd' }),
      event({ endpoint: 'e', decision_type: 'x\u0000d' }),
    ]);
    const rows = counts.map((c) => JSON.stringify([c.endpoint, c.kept]));
    assert.deepEqual(rows.sort(), [JSON.stringify(['e', 1]), JSON.stringify(['e\u0000x', 1])].sort());
  });
});
