import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroType } from '@dlog/contracts';
import { sampleArtifact, sampleCounts, sampleEnrichedDecision } from './sample-records.js';
import { countsRowKey, jsonFloats, toArtifactRow, toCountsRow, toDecisionRow } from './to-rows.js';

describe('toDecisionRow', () => {
  it('flattens the enriched record into the decisions columns', () => {
    const r = sampleEnrichedDecision(3, { ts: 1_790_000_000_000, eventId: 'e-3' });
    assert.ok(avroType('enriched-decision').isValid(r), 'the sample is a valid contract record');
    const row = toDecisionRow(r);
    assert.equal(row.event_id, 'e-3');
    assert.equal(row.ts, 1_790_000_000_000);
    assert.equal(row.model_name, r.model.name);
    assert.equal(row.image_ref, r.image!.ref);
    assert.equal(row.trace_id, r.trajectory!.trace_id);
    assert.equal(row.step, r.trajectory!.step);
    assert.deepEqual(row.lineage, r.lineage);
    assert.equal(row.source_offset, r.source.offset);
  });

  it('writes absent optional parts as empty strings, keeping NULL where absence means something', () => {
    const r = { ...sampleEnrichedDecision(0), image: null, config: null, trajectory: null, tenant: null };
    r.output = { ...r.output, confidence: null, token_logprobs: null };
    const row = toDecisionRow(r);
    assert.equal(row.image_ref, '');
    assert.equal(row.config_ref, '');
    assert.equal(row.tenant, '');
    assert.equal(row.temperature, null);
    assert.equal(row.confidence, null);
    assert.equal(row.step, null);
    assert.deepEqual(row.token_logprobs, []);
    assert.deepEqual(row.thresholds, {});
  });
});

describe('toCountsRow', () => {
  it('keys a delta by its batch and everything it counts', () => {
    const a = sampleCounts(1, { batchId: 'p0-10' });
    const row = toCountsRow(a);
    assert.equal(row.row_key, countsRowKey(a));
    assert.notEqual(countsRowKey(a), countsRowKey({ ...a, decision: 'other' }));
    assert.notEqual(countsRowKey(a), countsRowKey({ ...a, batch_id: 'p0-11' }));
  });
});

describe('toArtifactRow', () => {
  it("keeps the registration's place in the log, which decides the registration readers keep", () => {
    const r = sampleArtifact(2);
    const row = toArtifactRow(r, { partition: 0, offset: '9007199254740993' });
    assert.equal(row.ref, r.ref);
    assert.equal(row.source_partition, 0);
    // Past 2^53: as a string, so ClickHouse reads the exact offset.
    assert.equal(row.source_offset, '9007199254740993');
    assert.equal(row.source_known, true);
  });
});

describe('jsonFloats', () => {
  it('writes non-finite floats as words ClickHouse reads back, where JSON would write null (read as 0)', () => {
    assert.deepEqual(JSON.stringify(jsonFloats([-0.25, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, Number.NaN])), '[-0.25,"-inf","inf","nan"]');
    const finite = [-0.5, -1.25];
    assert.equal(jsonFloats(finite), finite, 'finite arrays pass through untouched');
  });
});
