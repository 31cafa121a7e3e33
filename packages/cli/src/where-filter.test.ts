import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileWhere, FilterError } from './where-filter.js';
import { psi } from './diff.js';
import { trajectoryTree } from './trace.js';
import { parseModel } from './audit-query.js';

describe('--where filter language', () => {
  it('compiles comparisons joined by and into bound parameters', () => {
    const f = compileWhere("decision=declined and confidence<0.7 AND scores.approved>=0.5 and tier!=minimal and endpoint~'loan api'");
    assert.equal(
      f.sql,
      '(decision = {w0:String}) AND (confidence < {w1:Float64}) AND (mapContains(scores, {w2:String}) AND scores[{w2:String}] >= {w3:Float64}) AND (toString(tier) != {w4:String}) AND (position(endpoint, {w5:String}) > 0)',
    );
    assert.deepEqual(f.params, { w0: 'declined', w1: 0.7, w2: 'approved', w3: 0.5, w4: 'minimal', w5: 'loan api' });
    assert.deepEqual(f.columns, ['decision', 'confidence', 'scores.approved', 'tier', 'endpoint']);
  });

  it('never puts user text into the SQL', () => {
    const evil = "decision=\"x' OR 1=1 --\" and input_fields.note=it's";
    const f = compileWhere(evil);
    assert.ok(!f.sql.includes("'"), f.sql);
    assert.ok(!f.sql.includes('OR 1=1'), f.sql);
    assert.deepEqual(Object.values(f.params), ["x' OR 1=1 --", 'note', "it's"]);
  });

  it('takes a nested input field by the dotted path the gate names it by', () => {
    const f = compileWhere('input_fields.applicant.customer_id=hmac-k1-abc and attributes.items[0].sku=X-1');
    assert.equal(f.sql, '(mapContains(input_fields, {w0:String}) AND input_fields[{w0:String}] = {w1:String}) AND (mapContains(attributes, {w2:String}) AND attributes[{w2:String}] = {w3:String})');
    assert.deepEqual(f.params, { w0: 'applicant.customer_id', w1: 'hmac-k1-abc', w2: 'items[0].sku', w3: 'X-1' });
    assert.throws(() => compileWhere('confidence.x.y=1'), /Unknown field "confidence\.x\.y"/);
  });

  it('takes any key of a map with .*: a customer\'s token wherever the input named them', () => {
    const f = compileWhere("input_fields.*=hmac:k1:abc and attributes.*!=x and input_fields.*~'k1:' and scores.*>=0.9");
    assert.equal(
      f.sql,
      '(arrayExists(x -> x = {w0:String}, mapValues(input_fields))) AND (NOT arrayExists(x -> x = {w1:String}, mapValues(attributes))) AND (arrayExists(x -> position(x, {w2:String}) > 0, mapValues(input_fields))) AND (arrayExists(x -> x >= {w3:Float64}, mapValues(scores)))',
    );
    assert.deepEqual(f.params, { w0: 'hmac:k1:abc', w1: 'x', w2: 'k1:', w3: 0.9 });
    assert.throws(() => compileWhere('decision.*=x'), /Unknown field "decision\.\*"/);
  });

  it('empty filter is true', () => {
    assert.equal(compileWhere(undefined).sql, '1');
    assert.equal(compileWhere('  ').sql, '1');
  });

  const bad: [string, RegExp][] = [
    ['colour=red', /Unknown field "colour"/],
    ['confidence<<0.7', /Unknown operator "<<"/],
    ['confidence<high', /confidence is a number, but "high" is not/],
    ['decision>approved', /> compares numbers; decision is text/],
    ['decision=approved and', /No value|Cannot read|Empty condition/],
    ['decision=approved or decision=declined', /`or` is not supported/],
    ['decision=two words', /has spaces: quote it/],
    ["decision='unclosed", /Unclosed quote/],
    ['step=1.5', /whole number/],
    ['confidence', /Cannot read the condition/],
  ];
  for (const [text, re] of bad) {
    it(`names the bad part of ${JSON.stringify(text)} and shows the grammar`, () => {
      assert.throws(() => compileWhere(text), (err: unknown) => {
        assert.ok(err instanceof FilterError);
        assert.match(err.message, re);
        assert.match(err.message, /filter     := condition/);
        return true;
      });
    });
  }
});

describe('audit helpers', () => {
  it('psi is 0 for the same mix and grows with the shift', () => {
    assert.equal(psi([50, 50], [50, 50]), 0);
    const small = psi([50, 50], [45, 55]);
    const large = psi([70, 30], [30, 70]);
    assert.ok(small > 0 && small < 0.1, String(small));
    assert.ok(large > 0.25, String(large));
  });

  it('builds the trajectory tree from parent_event_id, a missing parent making a root', () => {
    const row = (event_id: string, step: number, parent_event_id: string) => ({ event_id, step, parent_event_id, ts: `t${step}`, tool_name: '', decision: 'x', confidence: 0.9, model_name: 'm', model_version: '1' });
    const roots = trajectoryTree([row('c', 2, 'b'), row('a', 0, ''), row('b', 1, 'a'), row('d', 3, 'gone')]);
    assert.deepEqual(roots.map((r) => r.event_id), ['a', 'd']);
    assert.equal(roots[0]!.children[0]!.event_id, 'b');
    assert.equal(roots[0]!.children[0]!.children[0]!.event_id, 'c');
  });

  it('reads model references', () => {
    assert.deepEqual(parseModel('loan-approver:2.5.0'), { name: 'loan-approver', version: '2.5.0' });
    // A name cannot hold a colon (the registry refuses it); a version may.
    assert.deepEqual(parseModel('registry://models/a:b:1'), { name: 'a', version: 'b:1' });
    assert.throws(() => parseModel('nonsense'), /--model takes name:version/);
  });
});

describe('compileWhere: names of JavaScript built-ins', () => {
  it('are unknown fields, not SQL made from the object prototype', () => {
    for (const w of ['constructor=1', 'valueOf.x=1', '__proto__=1', 'toString.a=2', 'hasOwnProperty=x']) {
      assert.throws(() => compileWhere(w), (err: unknown) => err instanceof FilterError && /Unknown field/.test((err as Error).message), w);
    }
  });
});
