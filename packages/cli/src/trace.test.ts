import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatTrace, type TracePackage } from './trace.js';

describe('formatTrace', () => {
  it('tells a kind mismatch (an image ref registered as a dataset) from a digest mismatch', () => {
    const pkg: TracePackage = {
      decision: {
        event_id: 'e1', request_id: 'r1', ts: '2026-11-28 10:00:00.000', endpoint: 'loan-api', decision_type: 'loan_approval', decision: 'approved',
        confidence: 0.9, scores: {}, input_hash: 'sha256-x', input_fields: {}, model_name: 'loan-approver', model_version: '2.4.1', model_digest: 'sha256:m',
        image_ref: 'registry://datasets/loans:3', image_digest: '', config_ref: '', preprocessing_ref: 'registry://preprocessing/feat:v7', preprocessing_digest: 'sha256:other',
        environment_digest: '', policy_version: 'p@1', tier: 'full', policy_rule: 'r', sample_rate: 1, weight: 1, producer_service: 's', producer_sdk: 'ts', producer_host: null,
        resolved: false, unresolved_refs: [], digest_mismatches: ['registry://datasets/loans:3', 'registry://preprocessing/feat:v7'],
      },
      artifacts: [
        { role: 'image', ref: 'registry://datasets/loans:3', kind: 'dataset', version: '3', digest: 'sha256:d', metadata: {} },
        { role: 'preprocessing', ref: 'registry://preprocessing/feat:v7', kind: 'preprocessing', version: 'v7', digest: 'sha256:p', metadata: {} },
      ],
      lineage: [],
      remediations: [],
      registeredSince: [],
      lineageSince: [],
      trajectory: null,
      focus: 'e1',
    };
    const text = formatTrace({ query: 'e1', matchedBy: 'event_id', packages: [pkg] });
    const line = text.split('\n').find((l) => l.includes('⚠ unresolved')) ?? '';
    assert.match(line, /kind mismatch registry:\/\/datasets\/loans:3 \(registered as dataset, named as image\)/);
    assert.match(line, /digest mismatch registry:\/\/preprocessing\/feat:v7/);
    assert.doesNotMatch(line, /digest mismatch registry:\/\/datasets/);
  });
});
