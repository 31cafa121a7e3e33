import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { KafkaMessage } from 'kafkajs';
import { loadConfig } from '@dlog/config';
import { avroType, canonicalJson, encodeFramed, inputHash, sha256Tagged, type DecisionRecordRecord } from '@dlog/contracts';
import { createLogger } from '@dlog/runtime';
import { gateDeps } from './create-gate.js';
import { decodeEvent } from './decode.js';
import { scrubText } from './detectors.js';
import { processBatch, type GateDeps, type GateStats } from './gate.js';
import { KeyError, parseKeyRing } from './keys.js';
import { loadPolicy, parsePolicy, PolicyError, detectorNames } from './policy.js';
import { createProtector } from './protect.js';
import { hash32, keep, sampleKey } from './sample.js';

const policy = loadPolicy(new URL('../../../infra/policies/default.yaml', import.meta.url).pathname);
const keys = parseKeyRing(`k1:${randomBytes(32).toString('base64')}`);
const protector = createProtector(policy.doc.pii, keys);
const inputType = avroType('inference-event');
const noSchemas = { get: () => undefined };

function event(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event_id: 'e-1',
    request_id: 'r-1',
    ts: 1_780_000_000_000,
    endpoint: 'loan-api',
    decision_type: 'loan_approval',
    model: { name: 'loan-approver', version: '2.4.1' },
    input: { applicant: { email: 'Jane.Doe@example.com', name: 'Jane Doe', ssn: '123-45-6789' }, amount: 5000, note: 'call +44 20 7946 0958 or card 4111 1111 1111 1111' },
    output: { decision: 'approved', confidence: 0.9, output_json: 'mail jane.doe@example.com' },
    producer: { service: 'loan-api', sdk: 'custom' },
    ...over,
  };
}

function msg(value: Buffer | null, offset: number, ts = 1_780_000_000_000): KafkaMessage {
  return { key: Buffer.from('k'), value, offset: String(offset), timestamp: String(ts), attributes: 0, headers: {} } as unknown as KafkaMessage;
}

const deps: GateDeps = {
  policy,
  protector,
  inputType,
  schemas: noSchemas,
  decisionType: { type: avroType('decision-record'), id: 7 },
  countsType: { type: avroType('decision-counts'), id: 8 },
  topics: { decisions: 'd', counts: 'c', deadLetters: 'q' },
  now: () => 1_780_000_000_500,
};

describe('policy', () => {
  it('classifies by first matching rule, else defaults', () => {
    assert.equal(policy.classify({ model: 'm', endpoint: 'x', decisionType: 'loan_approval', tenant: null }).tier, 'full');
    assert.equal(policy.classify({ model: 'm', endpoint: 'x', decisionType: 'recommendation', tenant: null }).sampleRate, 0.1);
    assert.deepEqual(policy.classify({ model: 'm', endpoint: 'x', decisionType: 'other', tenant: null }), {
      tier: 'standard',
      sampleRate: 1,
      rule: 'defaults',
    });
    assert.match(policy.id, /^default@1\+[0-9a-f]{12}$/);
  });

  it('refuses a bad policy naming the path', () => {
    const bad = 'name: p\nversion: "1"\nlimits: {max_event_bytes: 10, max_ts_skew_past_ms: 1, max_ts_skew_future_ms: 1}\ndefaults: {tier: gold, sample_rate: 1}\npii: {}\n';
    assert.throws(() => parsePolicy(bad, 'p.yaml'), (err: unknown) => err instanceof PolicyError && err.path === 'defaults.tier');
    const unknownKey = bad.replace('tier: gold', 'tier: full').replace('pii: {}', 'pii: {}\nsampling: 3');
    assert.throws(() => parsePolicy(unknownKey, 'p.yaml'), /sampling/);
  });
});

describe('sampling', () => {
  it('is deterministic and close to the rate', () => {
    assert.equal(hash32('trace-1'), hash32('trace-1'));
    let kept = 0;
    for (let i = 0; i < 100_000; i++) if (keep(`trace-${i}`, 0.1)) kept++;
    assert.ok(kept > 9_500 && kept < 10_500, `kept ${kept} of 100000 at 0.1`);
    for (let i = 0; i < 1000; i++) if (keep(`t${i}`, 0.2)) assert.ok(keep(`t${i}`, 0.5), 'a higher rate keeps a superset');
  });

  it('an empty trace or request id (a zero value) does not put every such event in one bucket', () => {
    assert.equal(sampleKey('trace-1', 'req-1', 'e1'), 'trace-1');
    assert.equal(sampleKey('', 'req-1', 'e1'), 'req-1');
    assert.equal(sampleKey(null, '', 'e1'), 'e1');
    let kept = 0;
    for (let i = 0; i < 10_000; i++) if (keep(sampleKey('', '', `event-${i}`), 0.5)) kept++;
    assert.ok(kept > 4_700 && kept < 5_300, `kept ${kept} of 10000 at 0.5`);
  });
});

describe('detectors', () => {
  const all = new Set(detectorNames);
  const tok = (type: string) => `<${type}>`;
  it('finds emails, phones, valid card numbers, IBANs and national ids', () => {
    assert.equal(scrubText('write to a.b+c@mail.example.org now', all, tok), 'write to <email> now');
    assert.equal(scrubText('card 4111-1111-1111-1111 ok', all, tok), 'card <card> ok');
    assert.equal(scrubText('not a card 4111 1111 1111 1112', all, tok).includes('<card>'), false, 'Luhn rejects');
    assert.equal(scrubText('iban GB82 WEST 1234 5698 7654 32', all, tok), 'iban <iban>');
    assert.equal(scrubText('ssn 078-05-1120', all, tok), 'ssn <national_id>');
    assert.equal(scrubText('nino AB 12 34 56 C', all, tok), 'nino <national_id>');
    assert.equal(scrubText('call +1 (415) 555-2671 today', all, tok), 'call <phone> today');
    assert.equal(scrubText('order 42 shipped', all, tok), 'order 42 shipped');
  });
});

describe('key ring', () => {
  it('computes standard HMAC-SHA256 with the active key, and names keys, never secrets, in errors', () => {
    const secret = randomBytes(40);
    const ring = parseKeyRing(`new:${secret.toString('base64')},old:${randomBytes(32).toString('base64')}`);
    assert.equal(ring.active.id, 'new');
    assert.equal(ring.hmac('email', 'a@b.c'), createHmac('sha256', secret).update('email:a@b.c').digest('hex'));
    const long = randomBytes(100);
    assert.equal(parseKeyRing(`l:${long.toString('base64')}`).hmac('d', 'v'), createHmac('sha256', long).update('d:v').digest('hex'));
    const short = randomBytes(8).toString('base64');
    assert.throws(() => parseKeyRing(`k:${short}`), (err: unknown) => /at least 32 bytes/.test(String(err)) && !String(err).includes(short));
    assert.throws(() => parseKeyRing(''), /DLOG_PII_KEYS/);
  });
});

describe('protector', () => {
  it('applies field rules by path and detectors to the rest', () => {
    const { value, fields } = protector.protectInput({
      applicant: { email: 'Jane@Example.com', name: 'Jane', ssn: '1', tags: ['x jane@example.com'] },
      model_features: { raw: 'keep me 4111111111111111' },
    });
    const v = value as { applicant: Record<string, unknown>; model_features: Record<string, unknown> };
    assert.match(String(v.applicant.email), /^hmac:k1:[0-9a-f]{32}$/);
    assert.equal(fields['applicant.email'], v.applicant.email);
    assert.equal(v.applicant.name, '[redacted]');
    assert.equal('ssn' in v.applicant, false);
    assert.match(String((v.applicant.tags as string[])[0]), /^x \[email:[0-9a-f]{16}\]$/);
    assert.equal(v.model_features.raw, 'keep me 4111111111111111', 'keep rule skips detectors');
    // Same value, same key: same token, so hashes join across events.
    assert.equal(protector.protectInput({ email: 'jane@example.com ' }).fields.email, fields['applicant.email']);
  });
});

describe('decodeEvent', () => {
  const max = policy.doc.limits.max_event_bytes;
  const json = (o: unknown) => Buffer.from(JSON.stringify(o));
  const reason = (b: Buffer | null) => {
    const r = decodeEvent(b, inputType, noSchemas, max);
    return r.ok ? 'ok' : r.reason;
  };
  it('accepts JSON with defaults filled and input given as an object', () => {
    const r = decodeEvent(json(event()), inputType, noSchemas, max);
    assert.ok(r.ok);
    assert.equal(r.value.event.tenant, null);
    assert.deepEqual(r.value.input, event().input);
  });
  it('refuses integers a JSON number cannot carry exactly, in input_json or an input object; keeps them in strings', () => {
    const big = '12345678901234567890';
    const bad = (b: Buffer) => {
      const r = decodeEvent(b, inputType, noSchemas, max);
      return r.ok ? 'ok' : `${r.reason}: ${r.message}`;
    };
    assert.match(bad(Buffer.from(JSON.stringify(event({ input: undefined, input_json: `{"account":${big}}` })))), new RegExp(`^invalid_input: input_json holds the number ${big}.*string`));
    assert.match(bad(Buffer.from(JSON.stringify(event()).replace('"amount":5000', `"amount":-${big}`))), /^invalid_input: the event holds the number -12345678901234567890/);
    // Exact as doubles, in strings, or not integers: accepted as before.
    assert.equal(bad(Buffer.from(JSON.stringify(event({ input: { a: 9007199254740992, b: 1e21, card: '4111111111111111', s: `x${big}` } })))), 'ok');
    assert.equal(bad(Buffer.from(JSON.stringify(event({ input: undefined, input_json: `{"a":"${big}","b":1.2345678901234567890}` })))), 'ok');
    assert.equal(bad(Buffer.from(JSON.stringify(event({ input: undefined, input_json: `{"a":"\\\"${big}"}` })))), 'ok');
    // A double's own shortest form reads back as the same text: the hash is the producer's. The
    // SDK writes a nanosecond clock read into a number so, as does every RFC 8785 writer.
    const nanos = Number(1764330123456789012n);
    assert.equal(String(nanos), '1764330123456789000');
    assert.equal(bad(Buffer.from(JSON.stringify(event({ input: { t: nanos, u: -12345678901234567000, v: 2 ** 64 } })))), 'ok');
    assert.match(bad(Buffer.from(JSON.stringify(event({ input: undefined, input_json: '{"n":9007199254740993}' })))), /holds the number 9007199254740993/);
    // Held exactly, though not a double's shortest form: kept as before (an int64 producer's 2^60).
    assert.equal(bad(Buffer.from(JSON.stringify(event({ input: undefined, input_json: '{"n":1152921504606846976}' })))), 'ok');
  });
  it('refuses an event that gives both input and input_json instead of silently using one', () => {
    const r = decodeEvent(json(event({ input_json: '{"amount":1}' })), inputType, noSchemas, max);
    assert.ok(!r.ok && r.reason === 'invalid_input' && /both input and input_json/.test(r.message));
  });
  it('names each kind of bad input', () => {
    assert.equal(reason(null), 'empty_message');
    assert.equal(reason(Buffer.from([1, 2, 3])), 'wrong_magic_byte');
    assert.equal(reason(Buffer.from([0, 0, 0, 0, 99, 1])), 'unknown_schema_id');
    assert.equal(reason(Buffer.from([0, 0, 0])), 'truncated_avro');
    assert.equal(reason(Buffer.from('{"event_id": ')), 'invalid_json');
    assert.equal(reason(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 'invalid_utf8');
    // Valid JSON, valid UTF-8 bytes, but a lone surrogate in a string: no Unicode text.
    assert.equal(reason(Buffer.from(JSON.stringify(event()).replace('"loan-api"', '"loan-api\\ud800"'))), 'invalid_utf8');
    // In a long string too (the Avro encoder wrote those as U+FFFD, and the event passed), in a
    // key, and deep in the input; a pair, and an escaped backslash before u, are fine.
    assert.equal(reason(Buffer.from(JSON.stringify(event()).replace('"loan-api"', `"${'x'.repeat(100)}\\udc00"`))), 'invalid_utf8');
    assert.equal(reason(json(event({ input: { a: [{ ['k\ud800']: 1 }] } }))), 'invalid_utf8');
    assert.notEqual(reason(Buffer.from(JSON.stringify(event()).replace('"loan-api"', '"loan-api\\ud83d\\ude00 \\\\ud800"'))), 'invalid_utf8');
    const { endpoint: _e, ...noEndpoint } = event();
    assert.equal(reason(json(noEndpoint)), 'missing_field');
    assert.equal(reason(json(event({ ts: 'yesterday' }))), 'wrong_type');
    assert.equal(reason(Buffer.from(`{"a":"${'x'.repeat(max)}"}`)), 'payload_too_large');
    assert.equal(reason(Buffer.from('{"__proto__": {"polluted": true}}')), 'forbidden_key');
    assert.equal(reason(json(event({ attributes: { constructor: 'x' } }))), 'forbidden_key');
    assert.equal(reason(json(event({ input_json: '{not json' , input: undefined }))), 'invalid_input');
  });
  it('reads Avro with a resolver for the writer schema', () => {
    const raw = inputType.clone({ ...event(), input: undefined, input_json: '{"a":1}', input_hash: inputHash({ a: 1 }) }, { skipMissingFields: true } as never);
    const body = inputType.toBuffer(raw);
    const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 5]), body]);
    const schemas = { get: (id: number) => (id === 5 ? { resolver: inputType.createResolver(inputType) } : undefined) };
    const r = decodeEvent(framed, inputType, schemas, max);
    assert.ok(r.ok);
    assert.equal(r.value.format, 'avro');
    const truncated = decodeEvent(framed.subarray(0, framed.length - 4), inputType, schemas, max);
    assert.equal(truncated.ok ? 'ok' : truncated.reason, 'truncated_avro');
  });
});

describe('processBatch', () => {
  it('reconciles: every message is kept, counted as dropped, or dead-lettered', () => {
    const messages: KafkaMessage[] = [];
    let offset = 0;
    for (let i = 0; i < 200; i++) {
      messages.push(msg(Buffer.from(JSON.stringify(event({ event_id: `e${i}`, request_id: `r${i}`, decision_type: i % 2 ? 'recommendation' : 'loan_approval' }))), offset++));
    }
    messages.push(msg(Buffer.from('garbage'), offset++));
    messages.push(msg(Buffer.from(JSON.stringify(event({ ts: 1 }))), offset++));
    messages.push(msg(Buffer.from(JSON.stringify(event({ input_hash: 'sha256-00' }))), offset++));
    // A record without a timestamp: refused on either client (librdkafka's none, kafkajs's -1).
    messages.push({ ...msg(Buffer.from(JSON.stringify(event({ event_id: 'no-ts-1' }))), offset++), timestamp: undefined as unknown as string });
    messages.push(msg(Buffer.from(JSON.stringify(event({ event_id: 'no-ts-2' }))), offset++, -1));
    const stats: GateStats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} };
    const [decisions, counts, dead] = processBatch(messages, { topic: 'raw', partition: 0 }, deps, stats);
    assert.equal(stats.kept + stats.dropped + stats.deadLettered, messages.length);
    assert.equal(decisions!.messages.length, stats.kept);
    assert.equal(dead!.messages.length, 5);
    assert.deepEqual(stats.byReason, { wrong_magic_byte: 1, timestamp_out_of_range: 3, input_hash_mismatch: 1 });
    assert.ok(stats.dropped > 0, 'recommendations are sampled at 0.1');

    const countRows = counts!.messages.map((m) => deps.countsType.type.fromBuffer(Buffer.from(m.value as Buffer).subarray(5)) as { kept: number; dropped: number; batch_id: string });
    assert.equal(countRows.reduce((s, c) => s + c.kept, 0), stats.kept);
    assert.equal(countRows.reduce((s, c) => s + c.dropped, 0), stats.dropped);
    assert.ok(countRows.every((c) => c.batch_id === 'raw/0/0'));

    const dl = dead!.messages[0]!;
    assert.equal(String(dl.value), 'garbage', 'dead letters keep the original bytes');
    assert.equal(dl.headers?.['dlog.reason'], 'wrong_magic_byte');
    assert.equal(dl.headers?.['dlog.source.offset'], '200');
  });

  it('lets no canary personal data through, in any tier', () => {
    const out = processBatch([msg(Buffer.from(JSON.stringify(event())), 0)], { topic: 'raw', partition: 0 }, deps);
    const bytes = Buffer.concat(out.flatMap((o) => o.messages.map((m) => Buffer.from(m.value as Buffer))));
    const text = bytes.toString('latin1');
    for (const canary of ['Jane.Doe@example.com', 'jane.doe@example.com', 'Jane Doe', '123-45-6789', '4111 1111 1111 1111', '7946 0958']) {
      assert.equal(text.includes(canary), false, `${canary} leaked`);
    }
    const record = deps.decisionType.type.fromBuffer(Buffer.from(out[0]!.messages[0]!.value as Buffer).subarray(5)) as { input_hash: string; tier: string };
    assert.equal(record.input_hash, inputHash(event().input), 'input_hash is over the raw input, before redaction');
    assert.equal(record.tier, 'full');
  });
});

// Ways raw personal data, or a single event, once got past or stuck the gate (found in review):
// each test below fails on the gate before those fixes.
function runLeaks(events: (Record<string, unknown> | Buffer)[], d: GateDeps = deps) {
  const out = processBatch(events.map((e, i) => msg(Buffer.isBuffer(e) ? e : Buffer.from(JSON.stringify(e)), i)), { topic: 'inference.raw', partition: 0 }, d);
  const [decisions, counts, dead] = out;
  return {
    records: decisions!.messages.map((m) => avroType('decision-record').fromBuffer((m.value as Buffer).subarray(5)) as DecisionRecordRecord),
    counts: counts!.messages.map((m) => avroType('decision-counts').fromBuffer((m.value as Buffer).subarray(5)) as { model_name: string; endpoint: string; kept: number }),
    dead: dead!.messages.map((m) => ({ reason: String(m.headers!['dlog.reason']), step: String(m.headers!['dlog.step']), message: String(m.headers!['dlog.message']), bytes: m.value as Buffer })),
  };
}

/** The schema-id-1 resolver and an Avro-framed event with the given output fields. */
const avroSchemas = { get: (id: number) => (id === 1 ? { resolver: inputType.createResolver(inputType) } : undefined) } as unknown as GateDeps['schemas'];
function framedEvent(output: Record<string, unknown>, config: Record<string, unknown> | null = null): Buffer {
  const { input: _input, ...plain } = event();
  return encodeFramed(inputType, 1, {
    ...plain,
    input_json: '{"amount":5000}',
    input_hash: '',
    tenant: null,
    image: null,
    config,
    preprocessing: null,
    environment_digest: null,
    trajectory: null,
    attributes: {},
    output: { decision: 'approved', confidence: 0.9, scores: {}, token_logprobs: null, output_json: null, ...output },
    producer: { service: 'p', sdk: 's', host: null },
  });
}

const raw = ['Jane Doe', 'jane.doe@example.com', 'jane@example.com', '1 Main St', '+14155551234', '4111111111111111'];
function assertNoRaw(record: unknown): void {
  const text = JSON.stringify(record);
  for (const r of raw) assert.ok(!text.includes(r), `raw "${r}" in ${text}`);
}

describe('gate: personal data outside the obvious places', () => {
  it('a dotted key does not decide the rule of a nested path (a shared cache entry once did, for good)', () => {
    const d: GateDeps = { ...deps, protector: createProtector(policy.doc.pii, keys) };
    const { records } = runLeaks([event({ input: { 'applicant.name': 'x' } }), event({ input: { applicant: { name: 'Jane Doe' } } })], d);
    assert.equal(JSON.parse(records[1]!.input_json!).applicant.name, '[redacted]');
  });

  it('field rules match keys whatever their case, and keys holding personal data are scrubbed', () => {
    const { records } = runLeaks([
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
    const { records } = runLeaks([
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

  it('hash tokens stay what they were for keys written with capitals (stored pseudonyms keep joining)', () => {
    // The domain is `field:<key as written>`, as before keys matched rules case-insensitively.
    const ring = parseKeyRing(`k1:${Buffer.alloc(32, 9).toString('base64')}`);
    const p = createProtector({ fields: [{ path: 'applicant.fullName', rule: 'hash' }], detectors: [] }, ring);
    const expected = `hmac:k1:${ring.hmac('field:fullName', 'jane doe').slice(0, 32)}`;
    assert.equal((p.protectInput({ applicant: { fullName: 'Jane Doe' } }).value as { applicant: { fullName: string } }).applicant.fullName, expected);
  });

  it('full-tier output_json with nothing to protect keeps the producer\'s own text', () => {
    const outputJson = '{"id": 12345678901234567890, "score": 1.0, "p": 0.30000000000000004}';
    const { records } = runLeaks([event({ output: { decision: 'approved', confidence: 0.9, output_json: outputJson } })]);
    assert.equal(records[0]!.output.output_json, outputJson);
  });

  it('full-tier output_json that is JSON gets the field rules, escapes included', () => {
    const outputJson = JSON.stringify({ name: 'Jane Doe', address: '1 Main St' }).replace('}', ',"email":"jane\\u0040example.com"}');
    const { records } = runLeaks([event({ output: { decision: 'approved', confidence: 0.9, output_json: outputJson } })]);
    const out = JSON.parse(records[0]!.output.output_json!);
    assert.equal(out.name, '[redacted]');
    assert.match(out.email, /^hmac:k1:/);
    assertNoRaw(records[0]);
  });

  it('full-tier output_json the field rules cannot walk is withheld, not passed with its named fields as they are', () => {
    const outputJson = '{"constructor":"Ferrari","customer":{"name":"Jane Doe","address":"1 Main St","phone":"+14155551234"}}';
    const { records } = runLeaks([event({ output: { decision: 'approved', confidence: 0.9, output_json: outputJson } })]);
    assert.equal(records[0]!.output.output_json, null);
    assert.equal(records[0]!.output.decision, 'approved');
    assertNoRaw(records[0]);
  });

  it('full-tier output_json with escapes is written out again, so a duplicate key cannot keep an escaped address', () => {
    const outputJson = '{"note":"jane\\u0040example.com","note":"x"}';
    const { records } = runLeaks([event({ output: { decision: 'approved', confidence: 0.9, output_json: outputJson } })]);
    assert.equal(records[0]!.output.output_json, '{"note":"x"}');
    assert.ok(!JSON.stringify(records[0]).includes('u0040example'), JSON.stringify(records[0]));
  });

  it('hashed fields inside arrays keep a token per element, named by index', () => {
    const p = createProtector({ fields: [{ path: 'applicants.email', rule: 'hash' }], detectors: [] }, keys);
    const { fields } = p.protectInput({ applicants: [{ email: 'a@example.com' }, { email: 'b@example.com' }] });
    assert.deepEqual(Object.keys(fields).sort(), ['applicants[0].email', 'applicants[1].email']);
    assert.equal(fields['applicants[1].email'], p.protectInput({ applicants: { email: 'b@example.com' } }).fields['applicants.email'], 'the same join token as outside an array');
    assert.notEqual(fields['applicants[0].email'], fields['applicants[1].email']);
  });

  it('an id with a full-width at is scrubbed like one with @', () => {
    const { records } = runLeaks([event({ request_id: 'jane\uFF20example.com', tenant: 'ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ' })]);
    assert.match(records[0]!.request_id, /^\[email:[0-9a-f]{16}\]$/);
    assert.match(String(records[0]!.tenant), /^\[email:[0-9a-f]{16}\]$/);
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
    // A local part past the pattern's 64 characters is replaced whole, not cut at 64.
    const long = `${'x'.repeat(70)}.${'y'.repeat(30)}`;
    assert.equal(scrubText(`to ${long}@example.com now`, all, tok), 'to <email> now');
    const seen: string[] = [];
    scrubText(`${long}@example.com, b@example.org`, all, (type, value) => (seen.push(value), `<${type}>`));
    assert.deepEqual(seen, [`${long}@example.com`, 'b@example.org']);
    assert.equal(scrubText(`𝒳${'a'.repeat(64)}@example.com`, all, tok), '<email>');
    // Still not a card: Luhn fails for the run and for every window at a separator.
    assert.equal(scrubText('ref 1234 5678 9012 3456 78', all, tok).includes('<card>'), false);
  });

  it('finds IBANs written in lower case, held to their country\'s length', () => {
    const all = new Set(detectorNames);
    const tok = (type: string) => `<${type}>`;
    // Check digits for any country code and BBAN, so the checksum is right in every case below.
    const iban = (country: string, bban: string) => {
      let rem = 0;
      for (const ch of `${bban}${country}00`.toUpperCase()) {
        const v = ch >= 'A' ? String(ch.charCodeAt(0) - 55) : ch;
        for (const c of v) rem = (rem * 10 + Number(c)) % 97;
      }
      return `${country}${String(98 - rem).padStart(2, '0')}${bban}`;
    };
    assert.equal(scrubText('my iban is de89 3704 0044 0532 0130 00 thanks', all, tok), 'my iban is <iban> thanks');
    assert.equal(scrubText('gb82west12345698765432', all, tok), '<iban>');
    // A word of the same shape just before it is not taken for its start.
    assert.equal(scrubText('ref ab12 GB82WEST12345698765432', all, tok), 'ref ab12 <iban>');
    assert.equal(scrubText('order xy99 de89 3704 0044 0532 0130 00', all, tok), 'order xy99 <iban>');
    assert.equal(scrubText('ID AB12 GB82 WEST 1234 5698 7654 32', all, tok), 'ID AB12 <iban>');
    const seen: string[] = [];
    scrubText('pay gb82 west 1234 5698 7654 32', all, (type, value) => (seen.push(`${type} ${value}`), `<${type}>`));
    assert.deepEqual(seen, ['iban GB82WEST12345698765432'], 'the token is of the IBAN in capitals, as written in capitals');
    // A right checksum alone is not enough in lower case: the country and its length must fit.
    const unknownCountry = iban('zz', '12345678901234567');
    const tooLongForGb = iban('gb', 'west123456987654321');
    for (const text of [unknownCountry, tooLongForGb]) {
      assert.equal(scrubText(`ref ${text}`, all, tok), `ref ${text}`, text);
      // In capitals the checksum still suffices, as before.
      assert.equal(scrubText(`ref ${text.toUpperCase()}`, all, tok), 'ref <iban>', text);
    }
  });

  it('reads full-width forms and other scripts\' digits as the ASCII they stand for', () => {
    const all = new Set(detectorNames);
    const tok = (type: string) => `<${type}>`;
    const cases: [written: string, stored: string][] = [
      ['電話 ０９０－１２３４－５６７８ まで', '電話 <phone> まで'],
      ['メール ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ', 'メール <email>'],
      ['ＩＢＡＮ ＧＢ８２ ＷＥＳＴ １２３４ ５６９８ ７６５４ ３２', 'IBAN <iban>'],
      ['رقم ٤١١١١١١١١١١١١١١١', 'رقم <card>'],
      ['कार्ड ४१११ ११११ ११११ ११११', 'कार्ड <card>'],
    ];
    for (const [written, stored] of cases) assert.equal(scrubText(written, all, tok), stored, written);
    // The value tokenized is the ASCII one, so the pseudonym joins with the same number written plainly.
    const seen: string[] = [];
    scrubText('ｓｓｎ ０７８－０５－１１２０', all, (type, value) => (seen.push(`${type} ${value}`), `<${type}>`));
    assert.deepEqual(seen, ['national_id 078-05-1120']);
    // Nothing found: the text stays as written, full-width digits and all.
    assert.equal(scrubText('注文番号１２３ 普通', all, tok), '注文番号１２３ 普通');
  });
});

describe('gate: card numbers among the numbers stored as numbers', () => {
  // Found in a security review: scores, thresholds and log-probabilities are stored as numbers,
  // where no token can stand in, and a card number there was stored as it came.
  it('dead-letters the event, naming the field and not the number; ordinary numbers pass', () => {
    const card = 4111111111111111;
    const { records, dead } = runLeaks([
      event({ output: { decision: 'approved', confidence: 0.9, scores: { approved: 0.9, ref: card } } }),
      event({ config: { ref: 'configs/prod/x:v1', params: { temperature: 0.1, top_p: null, max_tokens: null, thresholds: { approve: card }, extra: {} } } }),
      event({ output: { decision: 'approved', confidence: 0.9, token_logprobs: [-0.1, -card] } }),
      event({ output: { decision: 'approved', confidence: 0.9, scores: { approved: 0.9, epoch_ms: 1_764_288_000_123 }, token_logprobs: [-0.25, -1e13] } }),
    ]);
    assert.deepEqual(dead.map((d) => d.reason), ['personal_data_in_numbers', 'personal_data_in_numbers', 'personal_data_in_numbers']);
    assert.deepEqual(dead.map((d) => d.message.split(' ')[0]), ['output.scores', 'config.params.thresholds', 'output.token_logprobs']);
    for (const d of dead) assert.ok(!d.message.includes('4111'), d.message);
    assert.equal(records.length, 1, 'an epoch and a large log-probability are no card');
  });
});

// Found in the third review of the gate: each fails on the gate before it.
describe('gate: ids, JSON in strings and text that hides what it holds', () => {
  it('ids and names a producer chose pass every detector, not only the email one; UUIDs and plain numbered ids stay', () => {
    const uuid = '0192f3a4-5b6c-7d8e-9f01-23456789abcd';
    const { records, counts, dead } = runLeaks([
      event({
        event_id: 'evt-9f01',
        request_id: '+44 20 7946 0958',
        endpoint: '/users/jane@example.com/score',
        decision_type: 'call +14155551234',
        tenant: '078-05-1120',
        trajectory: { trace_id: 'GB82WEST12345698765432', step: 1, tool_name: 'dial +14155551234', parent_event_id: 'evt-9f00', tool_args_hash: null },
        producer: { service: 'svc jane@example.com', sdk: 'custom', host: 'jane﹫example.com' },
      }),
      event({ event_id: uuid, request_id: 'order-1234567890', trajectory: { trace_id: `t-${uuid}`, step: 0, tool_name: null, parent_event_id: uuid, tool_args_hash: null } }),
      // Event ids are keys (the sink's, and what parent ids name): personal data there is refused, unquoted.
      event({ event_id: 'evt-4111 1111 1111 1111' }),
      event({ trajectory: { trace_id: 't', step: 1, tool_name: null, parent_event_id: 'jane@example.com', tool_args_hash: null } }),
    ]);
    assert.deepEqual(dead.map((d) => d.reason), ['personal_data_in_id', 'personal_data_in_id']);
    assert.equal(records.length, 2);
    const [r, plain] = records;
    assertNoRaw(r);
    for (const raw of ['4111 1111 1111 1111', '7946 0958', '078-05-1120', 'GB82WEST12345698765432', 'example.com']) {
      assert.ok(!JSON.stringify(r).includes(raw), `raw "${raw}" in ${JSON.stringify(r)}`);
      assert.ok(!JSON.stringify(counts).includes(raw), `raw "${raw}" in the counts`);
    }
    assert.equal(r!.trajectory!.parent_event_id, 'evt-9f00');
    assert.equal(counts.find((c) => c.endpoint.startsWith('/users/'))!.endpoint, r!.endpoint, 'counts group with the records');
    assert.equal(plain!.event_id, uuid);
    assert.equal(plain!.request_id, 'order-1234567890', 'a bare number in an id is not a phone number');
    assert.equal(plain!.trajectory!.trace_id, `t-${uuid}`);
  });

  it('a model name with a colon is dead-lettered: its registry ref would be another model\'s', () => {
    const { records, dead } = runLeaks([event({ model: { name: 'fraud:eu', version: '3' } }), event({ model: { name: 'fraud-eu', version: '3' } })]);
    assert.deepEqual(dead.map((d) => d.reason), ['wrong_type']);
    assert.equal(records.length, 1);
  });

  it('a tool_args_hash becomes a keyed token in every tier, digest or not (an unkeyed digest of likely arguments can be looked up)', () => {
    // As the SDK sends it: the unkeyed SHA-256 of the canonical arguments.
    const sdkHash = sha256Tagged(canonicalJson({ email: 'jane.doe@example.com' }));
    // The minimal tier (recommendations) samples at 0.1: a trace it keeps.
    const trace = Array.from({ length: 100 }, (_, i) => `t${i}`).find((t) => keep(t, 0.1))!;
    const step = (decision_type: string, h: string) => event({ decision_type, trajectory: { trace_id: trace, step: 1, tool_name: 'x', parent_event_id: null, tool_args_hash: h } });
    const { records, dead } = runLeaks([
      ...['loan_approval', 'other', 'recommendation'].map((t) => step(t, sdkHash)),
      ...[sdkHash, 'ab'.repeat(32), `md5:${'0f'.repeat(16)}`, '{"ssn":"078-05-1120"}'].map((h) => step('loan_approval', h)),
    ]);
    assert.deepEqual(dead, []);
    assert.deepEqual(records.slice(0, 3).map((r) => r.tier), ['full', 'standard', 'minimal']);
    const hashes = records.map((r) => r.trajectory!.tool_args_hash!);
    for (const h of hashes) assert.match(h, /^hmac:k1:[0-9a-f]{32}$/);
    assert.equal(new Set(hashes.slice(0, 4)).size, 1, 'equal arguments, equal tokens, in every tier');
    assert.equal(new Set(hashes.slice(3)).size, 4, 'different arguments, different tokens');
    assert.ok(!JSON.stringify(records).includes(sdkHash.slice(-64)), 'the SDK digest is in no record');
  });

  it('JSON inside a string gets the field rules (tool-call arguments); escapes and invisible characters hide nothing', () => {
    const { records } = runLeaks([
      event({
        input: {
          tool_call: { arguments: JSON.stringify({ name: 'Jane Doe', address: '1 Main St', contact: 'jane@example.com' }) },
          escaped: 'reach me at jane\\u0040example.com',
          zero_width: 'jane\u200b@example.com',
          thin_spaces: 'call +1\u2009415\u2009555\u20091234',
          small_at: 'jane\ufe6bexample.com',
          maths_digits: 'card 𝟒𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏',
          dash_card: 'ref-4111111111111111-exp',
          after_decimal: 'paid 12.50 4111 1111 1111 1111',
          nino: 'ni ab123456c',
          quoted: "o'brien@example.com and jane&john@example.com",
          bang: 'mail jane!doe@example.com or ~mary@example.com',
          social_security_number: 123456789,
          applicant_ssn: '123456789',
          passport_no: 'X1234567',
          negative: -4111111111111111,
          plain_decimal: 'p=0.30000000000000004',
          not_json: '[INST] hello [/INST]',
        },
      }),
    ]);
    // Tokens and hashes are hex made with a random key: one held "1234" by chance and failed a CI
    // run. They are taken out before looking for what the input said.
    const text = JSON.stringify(records[0]).replace(/\[[a-z_]+:[0-9a-f]{16}\]|hmac:k1:[0-9a-f]{32}|sha256-[0-9a-f]{64}/g, '<token>');
    assert.ok(text.includes('<token>'));
    for (const raw of ['Jane Doe', '1 Main St', 'jane', '1234', '4111', '𝟒𝟏𝟏𝟏', 'ab123456c', 'brien', 'john', 'mary', 'X12']) {
      assert.ok(!text.includes(raw), `raw "${raw}" in ${text}`);
    }
    const input = JSON.parse(records[0]!.input_json!);
    assert.equal(JSON.parse(input.tool_call.arguments).name, '[redacted]');
    assert.equal(input.plain_decimal, 'p=0.30000000000000004', 'a decimal is not a card');
    assert.equal(input.not_json, '[INST] hello [/INST]');
  });

  it('numbers that only look like cards or phones stay: epochs, snowflakes, decimals; folded text never outgrows the event', () => {
    const persian = 'می‌خواهم';
    const wide = 'ﷺ'.repeat(1000);
    const { records } = runLeaks([
      event({
        request_id: 'req-1764288000123',
        trajectory: { trace_id: 'trace-1850000000000000000', step: 0, tool_name: null, parent_event_id: null, tool_args_hash: null },
        input: { id: 1764288000123, pi: 'pi is 3.14159265358979', epoch: '1764288000.123456789', persian: `${persian} jane@example.com`, wide: `${wide} jane@example.com` },
      }),
    ]);
    const r = records[0]!;
    assert.equal(r.request_id, 'req-1764288000123');
    assert.equal(r.trajectory!.trace_id, 'trace-1850000000000000000');
    const input = JSON.parse(r.input_json!);
    assert.equal(input.id, 1764288000123);
    assert.equal(input.pi, 'pi is 3.14159265358979');
    assert.equal(input.epoch, '1764288000.123456789');
    assert.ok(input.persian.startsWith(persian), 'a zero-width non-joiner inside a word stays');
    assert.ok(!input.persian.includes('jane') && !input.wide.includes('jane'));
    assert.ok(Buffer.byteLength(input.wide) <= Buffer.byteLength(`${wide} jane@example.com`) + 16, `a compatibility form that would grow is kept as written (${Buffer.byteLength(input.wide)} bytes)`);
  });

  it('full-tier output_json: a duplicate key cannot keep a redacted name, and JSON cut off is withheld', () => {
    const dup = '{"name":"Jane Doe","name":"[redacted]"}';
    const cut = '{"decision":"approved","name":"Jane Doe","address":"1 Main';
    const { records } = runLeaks([
      event({ output: { decision: 'approved', confidence: 0.9, output_json: dup } }),
      event({ output: { decision: 'approved', confidence: 0.9, output_json: cut } }),
      event({ output: { decision: 'approved', confidence: 0.9, output_json: '[1] approved, see note' } }),
      event({ output: { decision: 'approved', confidence: 0.9, output_json: '{"a":1}\n{"name":"Jane Doe"}\n' } }),
    ]);
    assert.equal(records[3]!.output.output_json, '{"a":1}\n{"name":"[redacted]"}\n', 'JSON lines are read line by line');
    assert.equal(records[0]!.output.output_json, '{"name":"[redacted]"}');
    assert.equal(records[1]!.output.output_json, null);
    assert.equal(records[2]!.output.output_json, '[1] approved, see note', 'free text that merely starts with [ stays');
  });
});

// Found in the fourth review of the gate: each fails on the gate before it.
describe('gate: JSON held in strings, encoded text in ids and labels', () => {
  const cut = '{"name": "Jane Doe", "address": "1 Main St", "notes": "VIP';
  const lines = '{"name": "Jane Doe", "address": "1 Main St"}\n{"name": "John Roe", "phone": "+14155551234"}';

  it('JSON cut off in an input string, an attribute or a config extra is withheld, as in output_json', () => {
    const { records } = runLeaks([
      event({
        input: { tool_call: { arguments: cut }, chat: '[INST] hello [/INST]', list: '[1] approved, see note' },
        attributes: { last_args: cut },
        config: { ref: 'configs/prod/x:v1', params: { extra: { args: cut } } },
        output: { decision: 'approved', confidence: 0.9, output_json: cut },
      }),
    ]);
    const r = records[0]!;
    assertNoRaw(r);
    const input = JSON.parse(r.input_json!);
    assert.equal(input.tool_call.arguments, '[redacted]');
    assert.equal(r.attributes.last_args, '[redacted]');
    assert.equal(r.config!.params.extra.args, '[redacted]');
    assert.equal(r.output.output_json, null);
    assert.equal(input.chat, '[INST] hello [/INST]', 'free text that starts with [ stays');
    assert.equal(input.list, '[1] approved, see note');
  });

  it('JSON lines in an input string or an attribute are read line by line, as output_json is', () => {
    const { records } = runLeaks([event({ input: { tool_result: lines }, attributes: { results: lines }, output: { decision: 'approved', confidence: 0.9, output_json: lines } })]);
    const r = records[0]!;
    assertNoRaw(r);
    const byLine = JSON.parse(r.input_json!).tool_result.split('\n').map((l: string) => JSON.parse(l));
    assert.deepEqual(byLine.map((l: Record<string, unknown>) => l.name), ['[redacted]', '[redacted]']);
    assert.match(byLine[1].phone, /^hmac:k1:/);
    assert.equal(r.attributes.results, JSON.parse(r.input_json!).tool_result, 'one treatment wherever the string is');
    assert.equal(r.output.output_json, r.attributes.results);
  });

  it('a truncated JSON string inside output_json is withheld and the JSON around it written out', () => {
    const outputJson = JSON.stringify({ decision: 'approved', args: cut });
    const { records } = runLeaks([event({ output: { decision: 'approved', confidence: 0.9, output_json: outputJson } })]);
    assert.deepEqual(JSON.parse(records[0]!.output.output_json!), { decision: 'approved', args: '[redacted]' });
  });

  // Found in the security review of the gate: fails on the gate before it.
  it('JSON stringified twice (a string literal holding JSON) gets the field rules, in the input and in output_json', () => {
    const twice = JSON.stringify(JSON.stringify({ name: 'Jane Doe', phone: 4155550123, q: 'loans' }));
    const { records } = runLeaks([
      event({
        input: { args: twice, thrice: JSON.stringify(twice), cut: JSON.stringify(cut), quoted: '"hello"', said: '"I agree" she wrote' },
        output: { decision: 'approved', confidence: 0.9, output_json: twice },
      }),
    ]);
    const r = records[0]!;
    assertNoRaw(r);
    assert.ok(!JSON.stringify(r).includes('4155550123'));
    const input = JSON.parse(r.input_json!);
    const args = JSON.parse(JSON.parse(input.args));
    assert.equal(args.name, '[redacted]');
    assert.match(args.phone, /^hmac:k1:/);
    assert.equal(args.q, 'loans');
    assert.equal(JSON.parse(JSON.parse(JSON.parse(input.thrice))).name, '[redacted]');
    assert.equal(input.cut, '[redacted]', 'JSON cut off inside the literal is withheld, as outside one');
    assert.equal(JSON.parse(JSON.parse(r.output.output_json!)).name, '[redacted]');
    assert.equal(input.quoted, '"hello"', 'a quoted word is not JSON to walk');
    assert.equal(input.said, '"I agree" she wrote');
  });

  it('percent-encoded and HTML-escaped addresses and numbers in ids, labels and text are found', () => {
    const { records, counts } = runLeaks([
      event({
        endpoint: '/v1/users/jane.doe%40example.com/score',
        request_id: 'req?phone=%2B14155551234',
        attributes: { user: 'jane&#64;example.com', callback: 'https://x.example/cb?phone=%2B14155551234&next=%2Fhome', client: '203.0.113.45' },
        output: { decision: 'approved', confidence: 0.9, output_json: 'Sent to +33 6 12 34 56 78 and jane%40example.com' },
      }),
    ]);
    const r = records[0]!;
    assertNoRaw(r);
    for (const raw of ['jane', '14155551234', '12 34 56 78', '203.0.113.45']) assert.ok(!JSON.stringify(r).includes(raw), `raw "${raw}" in ${JSON.stringify(r)}`);
    assert.match(r.endpoint, /^\/v1\/users\/\[email:[0-9a-f]{16}\]\/score$/);
    assert.match(r.request_id, /^req\?phone=\[phone:[0-9a-f]{16}\]$/);
    assert.match(r.attributes.callback!, /^https:\/\/x\.example\/cb\?phone=\[phone:[0-9a-f]{16}\]&next=%2Fhome$/, 'other escapes stay');
    assert.match(r.attributes.client!, /^\[ip:[0-9a-f]{16}\]$/);
    assert.equal(counts[0]!.endpoint, r.endpoint);
  });
});

describe('gate: keys for a deployment', () => {
  it('refuses to start against a ClickHouse server without configured keys (replicas would each make their own)', () => {
    const config = loadConfig({ CLICKHOUSE_URL: 'http://127.0.0.1:8123', CLICKHOUSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'dlog-gate-keys-')) });
    const wiring = { config, policyText: readFileSync('infra/policies/default.yaml', 'utf8'), topics: deps.topics, decisionId: 1, countsId: 2 };
    const quiet = createLogger({ name: 't', level: 'silent' });
    assert.throws(() => gateDeps(wiring, quiet), (err: unknown) => err instanceof KeyError && /DLOG_PII_KEYS/.test(err.message));
    const keyed = loadConfig({ CLICKHOUSE_URL: 'http://127.0.0.1:8123', DLOG_PII_KEYS: `k9:${randomBytes(32).toString('base64')}` });
    assert.equal(gateDeps({ ...wiring, config: keyed }, quiet).protector.keyId, 'k9');
  });
});

describe('gate: input no step foresaw goes to the dead-letter topic, never stops the batch', () => {
  it('an input nested deeper than JSON.stringify can write', () => {
    const depth = 100_000;
    const text = JSON.stringify(event({ input: { amount: 5000 } })).replace('"input":{"amount":5000}', `"input":${'['.repeat(depth)}${']'.repeat(depth)}`);
    const { records, dead } = runLeaks([Buffer.from(text), event()]);
    assert.equal(records.length, 1);
    assert.deepEqual(dead.map((d) => d.reason), ['invalid_input']);
    assert.equal(dead[0]!.bytes.toString(), text, 'the dead letter keeps the original bytes');
  });

  it('an Avro event whose array claims a billion items (the process once ran out of memory)', () => {
    const good = framedEvent({ token_logprobs: [0.5] });
    // token_logprobs is the only array: find its count (1, zig-zag 2) followed by the double 0.5.
    const half = Buffer.alloc(8);
    half.writeDoubleLE(0.5);
    const at = good.indexOf(Buffer.concat([Buffer.from([2]), half]));
    assert.ok(at > 0);
    const bomb = Buffer.concat([good.subarray(0, at), Buffer.from([0x80, 0xa8, 0xd6, 0xb9, 0x07]), good.subarray(at + 1)]);
    const { records, dead } = runLeaks([bomb, good], { ...deps, schemas: avroSchemas });
    assert.equal(records.length, 1);
    assert.deepEqual(dead.map((d) => d.reason), ['truncated_avro']);
  });

  it('something that throws inside a step is dead-lettered as unprocessable', () => {
    const broken = { ...deps.protector, protectInput: () => { throw new TypeError('a bug'); } };
    const { records, dead, counts } = runLeaks([event({ decision_type: 'other' }), event()], { ...deps, protector: broken });
    assert.equal(records.length, 0);
    assert.deepEqual(dead.map((x) => `${x.reason}/${x.step}`), ['unprocessable/gate', 'unprocessable/gate']);
    assert.equal(counts.length, 0, 'a failed event is not counted as kept');
  });

  it('an Avro event with NaN or infinite numbers in its output is dead-lettered, a -Infinity log-probability is not', () => {
    const framed = framedEvent;
    const { records, dead } = runLeaks(
      [framed({ confidence: Number.NaN }), framed({ scores: { a: Number.POSITIVE_INFINITY } }), framed({ token_logprobs: [-0.1, Number.NaN] }), framed({ token_logprobs: [-0.1, Number.NEGATIVE_INFINITY] })],
      { ...deps, schemas: avroSchemas },
    );
    assert.deepEqual(dead.map((d) => d.reason), ['wrong_type', 'wrong_type', 'wrong_type']);
    assert.equal(records.length, 1);
  });

  it('a kept event whose record would be too large for Kafka is dead-lettered, not retried for ever', () => {
    // A policy that allows 4 MiB events: the record of a 1.2 MB full-tier input cannot be sent.
    const yaml = readFileSync(new URL('../../../infra/policies/default.yaml', import.meta.url), 'utf8').replace(/max_event_bytes: \d+/, 'max_event_bytes: 4194304');
    const big = parsePolicy(yaml, 'big.yaml');
    const bigDeps = { ...deps, policy: big, protector: createProtector(big.doc.pii, keys) };
    const huge = event({ event_id: 'e-big', request_id: 'r-big', input: { blob: 'a'.repeat(1_200_000) } });
    const out = processBatch([msg(Buffer.from(JSON.stringify(huge)), 0), msg(Buffer.from(JSON.stringify(event({ event_id: 'e-2', request_id: 'r-2' }))), 1)], { topic: 'inference.raw', partition: 0 }, bigDeps);
    const [decisions, counts, dead] = out;
    assert.equal(decisions!.messages.length, 1, 'the event behind it is kept');
    assert.equal(dead!.messages.length, 1);
    const letter = dead!.messages[0]!;
    assert.equal(letter.headers?.['dlog.reason'], 'record_too_large');
    assert.match(String(letter.headers?.['dlog.message']), /at most 1000000/);
    // The original is larger than a record too: the letter says where it is instead of carrying it.
    assert.equal(letter.value, null);
    assert.match(String(letter.headers?.['dlog.value_dropped']), /source offset/);
    assert.equal(letter.headers?.['dlog.source.offset'], '0');
    const kept = counts!.messages.map((m) => avroType('decision-counts').fromBuffer((m.value as Buffer).subarray(5)) as { kept: number });
    assert.equal(kept.reduce((n, c) => n + c.kept, 0), 1, 'only the event that was kept is counted');
  });

  it('an Avro event with a string that is not UTF-8 is dead-lettered as invalid_utf8, as a JSON one is', () => {
    const good = framedEvent({});
    const at = good.indexOf(Buffer.from('r-1'));
    assert.ok(at > 0);
    const bad = Buffer.from(good);
    bad[at + 2] = 0xff;
    const { records, dead } = runLeaks([bad, good], { ...deps, schemas: avroSchemas });
    assert.equal(records.length, 1);
    assert.deepEqual(dead.map((d) => d.reason), ['invalid_utf8']);
  });

  it('an Avro event with NaN or infinite inference parameters is dead-lettered (a server stored them as NULL or 0)', () => {
    const params = (p: Record<string, unknown>) => ({ ref: 'configs/prod/p:v1', params: { temperature: 0.2, top_p: null, max_tokens: null, thresholds: {}, extra: {}, ...p } });
    const { records, dead } = runLeaks(
      [
        framedEvent({}, params({ temperature: Number.POSITIVE_INFINITY })),
        framedEvent({}, params({ top_p: Number.NaN })),
        framedEvent({}, params({ thresholds: { approve: Number.NaN } })),
        framedEvent({}, params({ thresholds: { approve: 0.7 } })),
      ],
      { ...deps, schemas: avroSchemas },
    );
    assert.deepEqual(dead.map((d) => d.reason), ['wrong_type', 'wrong_type', 'wrong_type']);
    assert.equal(records.length, 1);
    assert.equal(records[0]!.config?.params.thresholds.approve, 0.7);
  });

  it('names holding the key separator count apart', () => {
    const { counts } = runLeaks([
      event({ endpoint: 'e\u0000x', decision_type: 'd' }),
      event({ endpoint: 'e', decision_type: 'x\u0000d' }),
    ]);
    const rows = counts.map((c) => JSON.stringify([c.endpoint, c.kept]));
    assert.deepEqual(rows.sort(), [JSON.stringify(['e', 1]), JSON.stringify(['e\u0000x', 1])].sort());
  });
});
