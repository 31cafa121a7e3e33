import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArtifactState, parseManifest, type ArtifactEventRecord } from '@dlog/artifacts';
import type { DecisionRecordRecord } from '@dlog/contracts';
import { enrich } from './enrich.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
function art(kind: ArtifactEventRecord['kind'], ref: string, digest: string, parents: string[] = []): ArtifactEventRecord {
  return { event_id: ref, kind, ref, name: ref, version: 'v', digest, uri: null, metadata: {}, parents, registered_at: 5, registered_by: 't' };
}

const record = {
  event_id: 'e',
  model: { name: 'loan', version: '2', digest: d('m') },
  image: { ref: 'img:2', digest: d('x') },
  config: { ref: 'configs/prod/p:v3', params: { temperature: null, top_p: null, max_tokens: null, thresholds: {}, extra: {} } },
  preprocessing: null,
  environment_digest: d('e'),
} as unknown as DecisionRecordRecord;

describe('enrich', () => {
  it('resolves every artifact, flags digest mismatches and unknown refs, and attaches lineage', () => {
    const s = new ArtifactState();
    s.apply(art('dataset', 'registry://datasets/loans:v5', d('1')));
    s.apply(art('code', 'git://loan@abc', d('2')));
    s.apply(art('model', 'registry://models/loan:2', d('m'), ['registry://datasets/loans:v5', 'git://loan@abc']));
    s.apply(art('image', 'img:2', d('y'), ['registry://models/loan:2']));
    s.apply(art('environment', `registry://environments/${d('e')}`, d('e')));
    const e = enrich(record, s, 99);
    assert.deepEqual(e.artifacts.map((a) => a.role), ['model', 'image', 'environment']);
    assert.deepEqual(e.unresolved_refs, ['configs/prod/p:v3']);
    assert.deepEqual(e.digest_mismatches, ['img:2'], 'the image digest on the event differs from the registered one');
    assert.equal(e.resolved, false);
    const lineage = Object.fromEntries(e.lineage.map((l) => [l.ref, l.depth]));
    assert.equal(lineage['registry://datasets/loans:v5'], 1, 'nearest path wins (via the model, not via the image)');
    assert.equal(lineage['git://loan@abc'], 1);
    assert.equal(lineage['registry://models/loan:2'], undefined, 'the decision\'s own model is an artifact, not lineage');
    assert.equal(e.enriched_at, 99);
  });

  it('resolves an environment registered from a manifest, and reads declared digests as the registry writes them', () => {
    const s = new ArtifactState();
    for (const e of parseManifest(
      [
        'artifacts:',
        `  - {kind: environment, name: py311, version: "1", digest: "${d('e')}"}`,
        `  - {kind: model, name: loan, version: "2", digest: "${d('a')}"}`,
        `  - {kind: image, ref: "img:2", name: img, version: "2", digest: "${d('b')}"}`,
        `  - {kind: config, ref: "configs/prod/p:v3", name: p, version: v3, digest: "${d('c')}"}`,
      ].join('\n'),
      'm.yaml',
      't',
    )) {
      s.apply(e);
    }
    const upper = { ...record, model: { name: 'loan', version: '2', digest: d('A') }, image: { ref: 'img:2', digest: '' }, environment_digest: d('E') } as DecisionRecordRecord;
    const e = enrich(upper, s, 1);
    assert.deepEqual(e.unresolved_refs, []);
    assert.deepEqual(e.digest_mismatches, []);
    assert.equal(e.resolved, true);
    assert.deepEqual(e.artifacts.map((a) => a.role), ['model', 'image', 'config', 'environment']);
    // A digest that really differs is still a mismatch.
    assert.deepEqual(enrich({ ...upper, model: { name: 'loan', version: '2', digest: d('F') } } as DecisionRecordRecord, s, 1).digest_mismatches, ['registry://models/loan:2']);
  });

  it('passes a decision with nothing registered, flagged, not dropped', () => {
    const e = enrich(record, new ArtifactState(), 1);
    assert.equal(e.resolved, false);
    assert.equal(e.unresolved_refs.length, 4);
    assert.equal(e.event_id, 'e');
  });
});
