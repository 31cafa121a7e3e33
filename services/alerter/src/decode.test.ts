import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroType } from '@dlog/contracts';
import { sampleEdgeDecision, sampleEnrichedDecision } from '../../sink/src/sample-records.js';
import { observationReaderType, toDecisionObservation, type ObservedDecision } from './decode.js';

describe('observationReaderType', () => {
  it('reads the same observation from an enriched decision as the full contract does, and refuses a truncated one', () => {
    const full = avroType('enriched-decision');
    const reader = observationReaderType();
    const resolver = reader.createResolver(full);
    const records = [...Array.from({ length: 10 }, (_, i) => sampleEnrichedDecision(i)), ...Array.from({ length: 10 }, (_, i) => sampleEdgeDecision(i))];
    for (const r of records) {
      const bytes = full.toBuffer(r);
      const { value, offset } = reader.decode(bytes, 0, resolver);
      assert.equal(offset, bytes.length, 'the whole record is walked');
      assert.deepEqual(toDecisionObservation(value as ObservedDecision), toDecisionObservation(full.fromBuffer(bytes)));
      assert.ok(reader.decode(bytes.subarray(0, bytes.length - 3), 0, resolver).offset < 0, 'a truncated record does not decode');
    }
  });
});
