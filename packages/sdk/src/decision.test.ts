import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { avroType } from '@dlog/contracts';
import { decodeEvent } from '@dlog/gate';
import { gateForbiddenKeys, InvalidDecisionError, toInferenceEvent, type Decision, type EventDefaults } from './decision.js';

const defaults: EventDefaults = {
  service: 'loan-api',
  sdk: '@dlog/sdk@test',
  host: 'h',
  endpoint: 'loan-approver',
  decisionType: 'loan_approval',
  tenant: null,
  model: { name: 'loan-approver', version: '2.4.1' },
  image: null,
  config: null,
  preprocessing: null,
  attributes: {},
  environmentDigest: 'sha256:0',
  maxEventBytes: 262_144,
};

const ok: Decision = { input: { q: 1 }, output: { decision: 'approved' } };

/** The reason toInferenceEvent refuses `d` with, or undefined when it takes it. */
function refusal(d: Decision, over: Partial<EventDefaults> = {}): string | undefined {
  try {
    toInferenceEvent('e1', 1_764_330_123_456, d, { ...defaults, ...over });
    return undefined;
  } catch (err) {
    assert.ok(err instanceof InvalidDecisionError, String(err));
    return err.reason;
  }
}

/** Half of an emoji: what 'Approved 👍'.slice(0, 10) leaves. */
const cut = 'Approved 👍'.slice(0, 10);

describe('toInferenceEvent refuses what the gate would dead-letter', () => {
  it('a lone surrogate in any string the decision sets, naming the field', () => {
    const cases: [string, Decision][] = [
      ['output.decision', { ...ok, output: { decision: cut } }],
      ['a value of attributes', { ...ok, attributes: { note: cut } }],
      ['a key of attributes', { ...ok, attributes: { [cut]: 'x' } }],
      ['a key of output.scores', { ...ok, output: { decision: 'x', scores: { [cut]: 0.5 } } }],
      ['requestId', { ...ok, requestId: cut }],
      ['tenant', { ...ok, tenant: cut }],
      ['endpoint', { ...ok, endpoint: cut }],
      ['decisionType', { ...ok, decisionType: cut }],
      ['model name', { ...ok, model: { name: cut, version: '1' } }],
      ['model version', { ...ok, model: `registry://models/m:${cut.replace(' ', '-')}` }],
      ['model.digest', { ...ok, model: { name: 'm', version: '1', digest: cut } }],
      ['image.ref', { ...ok, image: { ref: cut } }],
      ['preprocessing.digest', { ...ok, preprocessing: { ref: 'p', digest: cut } }],
      ['config.ref', { ...ok, config: { ref: cut } }],
      ['a value of config.params.extra', { ...ok, config: { ref: 'c', params: { extra: { k: cut } } } }],
      ['a key of config.params.thresholds', { ...ok, config: { ref: 'c', params: { thresholds: { [cut]: 1 } } } }],
      ['trajectory.traceId', { ...ok, trajectory: { traceId: cut, step: 1 } }],
      ['trajectory.parentEventId', { ...ok, trajectory: { traceId: 't', step: 1, parentEventId: cut } }],
      ['trajectory.toolName', { ...ok, trajectory: { traceId: 't', step: 1, toolName: cut } }],
    ];
    for (const [field, d] of cases) {
      const reason = refusal(d);
      assert.ok(reason?.startsWith(`${field} holds a lone surrogate`), `${field}: ${reason}`);
      assert.match(reason ?? '', /toWellFormed/);
    }
    // The input's are refused by canonicalJson already; a whole emoji is fine everywhere.
    assert.match(refusal({ ...ok, input: { t: cut } }) ?? '', /lone surrogate/);
    assert.equal(refusal({ ...ok, output: { decision: 'Approved 👍' }, attributes: { note: 'é🎉' }, requestId: '👍' }), undefined);
  });

  it('a prototype key anywhere in the input, and in attributes, scores and config maps', () => {
    for (const key of gateForbiddenKeys) {
      const own = (v: unknown) => JSON.parse(`{${JSON.stringify(key)}:${JSON.stringify(v)}}`) as Record<string, never>;
      assert.match(refusal({ ...ok, input: own('Acme Builders Ltd') }) ?? '', new RegExp(`input is not serialisable: it has the key "${key}", which the gate refuses .* at depth 1; rename it`));
      assert.match(refusal({ ...ok, input: { rows: [{ a: own(1) }] } }) ?? '', new RegExp(`"${key}".* at depth 4`));
      assert.match(refusal({ ...ok, attributes: own('x') }) ?? '', new RegExp(`attributes has the key "${key}"`));
      assert.match(refusal({ ...ok, output: { decision: 'x', scores: own(1) } }) ?? '', new RegExp(`output.scores has the key "${key}"`));
      assert.match(refusal({ ...ok, config: { ref: 'c', params: { extra: own('x') } } }) ?? '', new RegExp(`config.params.extra has the key "${key}"`));
    }
    // Left out of the JSON (undefined), such a key never reaches the gate.
    assert.equal(refusal({ ...ok, input: { constructor: undefined, a: 1 } as never }), undefined);
    assert.equal(refusal({ ...ok, input: { constructors: 1, proto: 2 } }), undefined);
  });

  it('the prototype keys are the gate\'s: the same sets as in its decode and protect steps, and refused by it', () => {
    const setIn = (file: string, name: string): string[] => {
      const text = readFileSync(new URL(`../../../services/gate/src/${file}`, import.meta.url), 'utf8');
      const literal = new RegExp(`const ${name} = new Set\\(\\[([^\\]]*)\\]\\)`).exec(text)?.[1];
      assert.ok(literal !== undefined, `${file}: const ${name} = new Set([...]) not found; update this test and gateForbiddenKeys`);
      return literal.split(',').map((s) => JSON.parse(s.trim().replace(/^'|'$/g, '"')) as string).sort();
    };
    const ours = [...gateForbiddenKeys].sort();
    assert.deepEqual(setIn('decode.ts', 'forbidden'), ours);
    assert.deepEqual(setIn('protect.ts', 'forbiddenKeys'), ours);
    const type = avroType('inference-event');
    for (const key of ours) {
      const event = `{"event_id":"e","request_id":"r","ts":1,"endpoint":"x","decision_type":"d","model":{"name":"m","version":"1"},"input_json":"{}","output":{"decision":"x"},"producer":{"service":"s","sdk":"custom"},"attributes":{},"input":{${JSON.stringify(key)}:1}}`;
      const r = decodeEvent(Buffer.from(event), type, { get: () => undefined } as never, 1 << 20);
      assert.ok(!r.ok && r.reason === 'forbidden_key', `${key}: ${JSON.stringify(r)}`);
    }
  });

  it('a ts in seconds', () => {
    const reason = refusal({ ...ok, ts: 1_764_330_123 });
    assert.match(reason ?? '', /^ts is in milliseconds since the epoch; this looks like seconds/);
    assert.equal(refusal({ ...ok, ts: 1_764_330_123_456 }), undefined);
    assert.equal(refusal({ ...ok, ts: 0 }), undefined, 'the epoch itself is no slip');
  });

  it('an input whose JSON alone is over maxEventBytes, after about that much work', () => {
    const rows = Array.from({ length: 200_000 }, (_, i) => ({ id: i, name: `customer ${i}`, score: i / 7 }));
    for (const input of [{ blob: 'x'.repeat(16 << 20) }, { rows }]) {
      const t = performance.now();
      const reason = refusal({ ...ok, input });
      const ms = performance.now() - t;
      assert.match(reason ?? '', /^oversized: the input's JSON alone is over 262144 characters, more than maxEventBytes/);
      // Built whole, the table took ~400 ms and the string ~20 ms here; a 256 KiB text takes a few.
      assert.ok(ms < 100, `refused after ${ms.toFixed(0)} ms`);
    }
    assert.match(refusal({ ...ok, input: { blob: 'x'.repeat(5_000) } }, { maxEventBytes: 4_096 }) ?? '', /^oversized/);
    assert.equal(refusal({ ...ok, input: { blob: 'x'.repeat(4_000) } }, { maxEventBytes: 4_096 }), undefined);
  });
});

describe('toInferenceEvent takes what the gate takes', () => {
  it('-Infinity in output.tokenLogprobs (a token of probability 0), but not NaN or +Infinity', () => {
    const e = toInferenceEvent('e1', 1_764_330_123_456, { ...ok, output: { decision: 'x', tokenLogprobs: [-0.1, -Infinity] } }, defaults);
    assert.deepEqual((e.output as { token_logprobs: number[] }).token_logprobs, [-0.1, -Infinity]);
    for (const bad of [Number.NaN, Infinity]) {
      assert.match(refusal({ ...ok, output: { decision: 'x', tokenLogprobs: [bad] } }) ?? '', /tokenLogprobs must be an array of finite numbers \(or -Infinity\)/);
    }
  });
});
