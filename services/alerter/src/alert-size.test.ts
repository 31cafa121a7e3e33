import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroType, encodeFramed, type AlertRecord } from '@dlog/contracts';
import { addDecision, boundedRef, emptyAgg, maxRefBytes, type DecisionObservation } from './aggregate.js';
import { maxAlertBytes, toAlertMessage } from './alert-message.js';
import { createEngine } from './engine.js';
import { parseRules } from './rules.js';

const brokerLimit = 1024 * 1024;
const type = avroType('alert');
const encode = (a: AlertRecord) => encodeFramed(type, 1, a);
const t0 = Date.UTC(2026, 0, 1, 12);
const longRef = (i: number) => `configs/prod/loan:v1?${String(i).padStart(4, '0')}${'x'.repeat(60_000)}`;
const obs = (ts: number, resolved: boolean, unresolvedRefs: string[]): DecisionObservation => ({ ts, endpoint: 'loan-api', model: 'loan', version: '9.9.9', decision: 'approved', confidence: 0.9, weight: 1, resolved, unresolvedRefs });

describe('an alert always fits the broker', () => {
  it('keeps the unresolved-artifacts alert of 20 distinct 60 KB refs small, each ref cut and said so', () => {
    // Was 1,141,197 bytes: the broker refused it, and the batch was retried for ever.
    const engine = createEngine(parseRules(`
watermark: { allowed_lateness: 0s, idle_partition_after: 1h }
rules:
  - { name: unresolved-artifacts, kind: unresolved_artifacts, window: { size: 10m }, min_samples: 20, max_rate: 0.01, suppress_for: 1h }
`));
    const s = engine.newState();
    for (let i = 0; i < 200; i++) engine.observeDecision(s, 'p0', obs(t0 + i * 1000, false, ['registry://models/loan:9.9.9', ...(i % 10 === 0 ? [longRef(i)] : [])]), t0 + i * 1000);
    engine.observeDecision(s, 'p0', obs(t0 + 11 * 60_000, true, []), t0 + 11 * 60_000);
    const alerts = engine.advance(s, t0 + 11 * 60_000);
    assert.equal(alerts.length, 1);
    const a = alerts[0]!;
    assert.ok(encode(a).length < 64 * 1024, `alert record ${encode(a).length} bytes`);
    const refs = Object.keys((JSON.parse(a.evidence_json!) as { unresolved_refs: Record<string, number> }).unresolved_refs);
    assert.equal(refs.length, 20, 'every distinct ref kept, each cut');
    assert.ok(refs.every((r) => Buffer.byteLength(r) <= maxRefBytes));
    assert.ok(refs.some((r) => r.startsWith('configs/prod/loan:v1?0000xxx') && / \[cut: 60025 bytes, sha256 [0-9a-f]{16}\]$/.test(r)), refs[1]);
    assert.ok(Buffer.byteLength(a.summary) <= 1024);
  });

  it('cuts a long ref to a prefix and a hash of the whole, so refs that share the prefix stay apart', () => {
    const agg = emptyAgg();
    addDecision(agg, obs(t0, false, [`${'p'.repeat(1000)}a`]));
    addDecision(agg, obs(t0, false, [`${'p'.repeat(1000)}b`]));
    addDecision(agg, obs(t0, false, ['registry://models/loan:9.9.9']));
    assert.equal(agg.unresolvedRefs.size, 3);
    assert.equal(agg.unresolvedRefs.get('registry://models/loan:9.9.9'), 1, 'a short ref is kept as it is');
    assert.ok([...agg.unresolvedRefs.keys()].every((r) => Buffer.byteLength(r) <= maxRefBytes));
    for (const r of agg.unresolvedRefs.keys()) assert.equal(boundedRef(r), r, 'cutting again changes nothing');
    // A multi-byte character is never split.
    assert.ok(!boundedRef('€'.repeat(1000)).includes('\ufffd'));
  });

  it('writes an alert over the limit with its core fields only, saying so', () => {
    const big: AlertRecord = {
      alert_id: 'a'.repeat(32), rule: 'r', severity: 'warning', endpoint: 'e', model_name: 'm', model_version: '1',
      window_start: t0, window_end: t0 + 600_000, summary: `s${'y'.repeat(300_000)}`,
      evidence: { kind: 'unresolved_artifacts', big: 'z'.repeat(500_000) },
      evidence_json: JSON.stringify({ unresolved_refs: { [longRef(0)]: 1, [`${longRef(1)}${'q'.repeat(1_000_000)}`]: 2 } }),
      scope_command: 'dlog scope --model m:1', ts: t0,
    };
    assert.ok(encode(big).length > brokerLimit);
    const { message, shrunkFrom } = toAlertMessage(big, encode);
    assert.equal(shrunkFrom, (message.key as string).length + encode(big).length);
    const value = message.value as Buffer;
    assert.ok(value.length <= maxAlertBytes && value.length < 4096, String(value.length));
    const back = type.fromBuffer(value.subarray(5)) as AlertRecord;
    assert.equal(back.alert_id, big.alert_id);
    assert.equal(back.model_version, '1');
    assert.equal(back.scope_command, big.scope_command);
    assert.match(back.evidence.shrunk!, /over the 921600-byte limit: evidence left out/);
    assert.equal(message.key, 'm:1');
    // One that fits goes as it is.
    const small = { ...big, summary: 's', evidence: {}, evidence_json: null };
    assert.deepEqual(toAlertMessage(small, encode), { message: { key: 'm:1', value: encode(small) } });
  });
});
