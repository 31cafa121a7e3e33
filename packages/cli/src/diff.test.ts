import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createStore, migrate, type Store } from '@dlog/store';
import { AuditInputError, storeQuery, type AuditQuery } from './audit-query.js';
import { computeDiff, confidenceBinLabel, formatDiff, type DiffResult } from './diff.js';

describe('dlog diff output', () => {
  const base: DiffResult = {
    a: 'rec:1',
    b: 'rec:2',
    paired: { inputs: 100, agreement: 0.5, confidenceShift: 0, confidenceA: 0.5, confidenceB: 0.5 },
    confusion: [
      { a: 'approved', b: 'approved', inputs: 40 },
      { a: 'approved', b: 'declined', inputs: 30 },
    ],
    confusionRest: null,
    mix: [],
    mixRest: null,
    mixPsi: 0,
    confidence: [],
    confidencePsi: null,
    overallConfidence: { a: null, b: null },
  };

  it('shows a confusion table only when every pair is in it: a pair left out would read as 0', () => {
    assert.match(formatDiff(base), /rec:1 ↓ \/ rec:2 →\s+approved\s+declined\n\s+approved\s+40\s+30\n/);
    const cut = formatDiff({ ...base, confusionRest: { cells: 7, inputs: 30 } });
    assert.doesNotMatch(cut, /↓/);
    assert.match(cut, /approved\s+→\s+declined\s+\(30\)\n\s+… and 7 less common pairs \(30 inputs\), counted in the agreement above/);
  });

  it('keeps a decision with a line break on one line of its tables', () => {
    const text = formatDiff({ ...base, confusion: [{ a: 'yes\nbut', b: 'no', inputs: 3 }], mix: [{ decision: 'yes\nbut', a: 3, b: 0, shareA: 1, shareB: 0 }] });
    assert.doesNotMatch(text, /yes\nbut/);
    assert.match(text, /yes\\nbut\s+3\n/);
    assert.match(text, /yes\\nbut\s+3 100\.0%/);
  });

  it('counts the decisions not shown, those left out by the engine too', () => {
    const mix = Array.from({ length: 20 }, (_, i) => ({ decision: `item-${String(i).padStart(2, '0')}`, a: i, b: 20 - i, shareA: i / 200, shareB: (20 - i) / 200 }));
    const text = formatDiff({ ...base, mix, mixRest: { decisions: 99_990, a: 5, b: 5 } });
    assert.match(text, /… 99998 more decisions \(the 12 that moved most are shown; the PSI is over all of them\)/);
  });
});

describe('dlog diff on an embedded store', () => {
  let store: Store;
  let q: AuditQuery;

  before(async () => {
    store = await createStore({ database: 'dlog', dataDir: path.join(mkdtempSync(path.join(tmpdir(), 'dlog-diff-')), 'clickhouse') });
    await migrate(store);
    q = storeQuery(store);
    const decision = (id: string, version: string, confidence: number, second: number) => ({
      event_id: id, request_id: id, ts: `2026-11-27 06:00:${String(second).padStart(2, '0')}.000`, endpoint: 'ep', decision_type: 'loan',
      model_name: 'm', model_version: version, input_hash: `sha256-${id}`, decision: 'approved', confidence, tier: 'standard', sample_rate: 1,
      policy_version: 'p1', resolved: true, source_partition: 0, source_offset: second, gate_ts: '2026-11-27 06:00:00.000', enriched_at: '2026-11-27 06:00:00.000',
    });
    // The gate takes any finite confidence: scores below 0 and above 1 as well.
    await store.client.insert({ table: 'decisions', format: 'JSONEachRow', values: [decision('a1', '1', -0.2, 1), decision('a2', '1', 0.05, 2), decision('b1', '2', 25.6, 3), decision('b2', '2', 0.95, 4)] });
    const counted = (version: string, kept: number) => ({ minute: '2026-11-27 06:00:00.000', model_name: 'm', model_version: version, endpoint: 'ep', decision_type: 'loan', tier: 'standard', decision: 'approved', policy_version: 'p1', kept, dropped: 0, batch_id: `b${version}`, row_key: `k${version}` });
    await store.client.insert({ table: 'decision_counts', format: 'JSONEachRow', values: [counted('1', 2), counted('2', 2)] });
  });
  after(() => store?.close());

  it('puts a confidence below 0 in the lowest bin and one above 1 in the highest, and says so in their labels', async () => {
    const d = await computeDiff(q, { a: { name: 'm', version: '1' }, b: { name: 'm', version: '2' } });
    assert.deepEqual(
      d.confidence.filter((c) => c.shareA > 0 || c.shareB > 0),
      [
        { bin: '<0.1', shareA: 1, shareB: 0 },
        { bin: '>=0.9', shareA: 0, shareB: 1 },
      ],
    );
    assert.deepEqual(Array.from({ length: 10 }, (_, i) => confidenceBinLabel(i)).slice(0, 3), ['<0.1', '0.1-0.2', '0.2-0.3']);
  });

  it('an unknown --vs: the message names --vs and suggests a whole command that runs', async () => {
    const refused = (re: RegExp) => (err: unknown) => err instanceof AuditInputError && re.test(err.message);
    // Not --model's own version (m:1), which --vs refuses: the newest other one.
    await assert.rejects(computeDiff(q, { a: { name: 'm', version: '1' }, b: { name: 'm', version: '9' } }), refused(/^--vs: m has no version "9".*\nType e\.g\. dlog diff --model m:1 --vs m:2$/s));
    await assert.rejects(computeDiff(q, { a: { name: 'm', version: '1' }, b: { name: 'other', version: '1' } }), refused(/^--vs: No model named "other".*\nType e\.g\. dlog diff --model m:1 --vs m:2$/s));
    // An unknown --model keeps --vs in the suggestion, and suggests no version equal to it.
    await assert.rejects(computeDiff(q, { a: { name: 'm', version: '9' }, b: { name: 'm', version: '2' } }), refused(/^m has no version "9".*\nType e\.g\. dlog diff --model m:1 --vs m:2$/s));
  });
});
