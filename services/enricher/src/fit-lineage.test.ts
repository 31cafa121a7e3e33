import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArtifactState, type ArtifactEventRecord } from '@dlog/artifacts';
import { avroType, loadSchema, type DecisionRecordRecord, type EnrichedDecisionRecord } from '@dlog/contracts';
import { MAX_RECORD_BYTES, recordBytes } from '@dlog/kafka';
import { sampleEnrichedDecision } from '../../sink/src/sample-records.js';
import { fitLineage } from './fit-lineage.js';
import { EnrichmentSplicer } from './splice.js';

const decisionType = avroType('decision-record');
const enrichedType = avroType('enriched-decision');
const decisionFields = (loadSchema('decision-record') as { fields: { name: string }[] }).fields.map((f) => f.name);

function art(kind: ArtifactEventRecord['kind'], ref: string, parents: string[] = []): ArtifactEventRecord {
  return { event_id: ref, kind, ref, name: ref, version: 'v', digest: `sha256:${'1'.repeat(64)}`, uri: null, metadata: {}, parents, registered_at: 5, registered_by: 't' };
}

describe('fitLineage', () => {
  it('keeps a large decision under what a Kafka record holds by cutting its lineage, not dead-lettering it', () => {
    const sp = EnrichmentSplicer.forContracts();
    assert.ok(typeof sp !== 'string');
    const e = sampleEnrichedDecision(1);
    // A decision the gate let through at ~940 KB (a policy with max_event_bytes raised).
    const r = { ...Object.fromEntries(decisionFields.map((f) => [f, (e as unknown as Record<string, unknown>)[f]])), input_json: JSON.stringify({ doc: 'x'.repeat(940_000) }) } as unknown as DecisionRecordRecord;
    const state = new ArtifactState();
    const shards = Array.from({ length: 1000 }, (_, i) => `registry://datasets/clickstream-daily:2023-${String(i).padStart(5, '0')}`);
    for (const ref of shards) state.apply(art('dataset', ref));
    state.apply(art('model', `registry://models/${r.model.name}:${r.model.version}`, shards));
    const body = decisionType.toBuffer(r);
    const key = Buffer.from(r.request_id);
    const overBy = (value: Buffer) => recordBytes({ key, value }) - MAX_RECORD_BYTES;

    const whole = sp.splice(body, 1, state, 5);
    assert.ok(!('error' in whole) && overBy(whole.value) > 0, 'with all its lineage it would be dead-lettered');
    const fitted = fitLineage((lineageBytes) => sp.splice(body, 1, state, 5, lineageBytes), overBy);
    assert.ok(!('error' in fitted));
    assert.ok(overBy(fitted.value) <= 0, `${overBy(fitted.value)} bytes over`);
    const read = enrichedType.fromBuffer(fitted.value.subarray(5)) as EnrichedDecisionRecord;
    assert.ok(read.lineage.length > 0 && read.lineage.length < 1000, `${read.lineage.length} pointers kept`);
    assert.deepEqual(read.lineage.map((l) => l.ref), shards.slice(0, read.lineage.length), 'the nearest part of it');
    assert.deepEqual(fitted.lineageCutVia, [`registry://models/${r.model.name}:${r.model.version}`]);

    // A decision that fits is made once, untouched.
    let made = 0;
    const small = decisionType.toBuffer({ ...r, input_json: null });
    const once = fitLineage((lineageBytes) => (made++, sp.splice(small, 1, state, 5, lineageBytes)), overBy);
    assert.ok(!('error' in once) && once.lineageKept === 1000);
    assert.equal(made, 1);
  });
});
