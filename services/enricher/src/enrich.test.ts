import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArtifactState, parseManifest, type ArtifactEventRecord } from '@dlog/artifacts';
import { avroType, type DecisionRecordRecord } from '@dlog/contracts';
import { sampleEnrichedDecision } from '../../sink/src/sample-records.js';
import { enrich, resolveEnrichment } from './enrich.js';

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

  it('flags an artifact registered as another kind than the role it fills, as a digest mismatch is', () => {
    // Attached as resolved, an image ref that names a dataset's registration passed for the image.
    const s = new ArtifactState();
    s.apply(art('model', 'registry://models/loan:2', d('m')));
    s.apply(art('dataset', 'img:2', d('x')));
    s.apply(art('config', 'configs/prod/p:v3', d('c')));
    s.apply(art('environment', `registry://environments/${d('e')}`, d('e')));
    const e = enrich(record, s, 1);
    assert.deepEqual(e.unresolved_refs, []);
    assert.deepEqual(e.digest_mismatches, ['img:2'], 'its digest is the declared one; its kind is not an image');
    assert.equal(e.resolved, false);
    assert.deepEqual(e.artifacts.find((a) => a.role === 'image'), { role: 'image', ref: 'img:2', kind: 'dataset', version: 'v', digest: d('x'), registered_at: 5 });
    assert.deepEqual(resolveEnrichment(record, s).kindMismatches, ['img:2']);
    // Every role filled by its own kind resolves.
    s.apply(art('image', 'img:3', d('x')));
    const ok = enrich({ ...record, image: { ref: 'img:3', digest: d('x') } } as DecisionRecordRecord, s, 1);
    assert.deepEqual([ok.resolved, ok.digest_mismatches], [true, []]);
  });

  it('keeps the nearest part of a wide lineage, at most 1,000 pointers and 256 KiB, and says which artifacts it cut', () => {
    // Uncut, 11,000 parents took every decision of the model past what Kafka holds.
    const s = new ArtifactState();
    s.apply(art('code', 'git://loan@abc', d('2')));
    s.apply(art('dataset', 'registry://datasets/pretrain', d('3')));
    s.apply(art('model', 'registry://models/base:1', d('4'), ['registry://datasets/pretrain']));
    const shards = Array.from({ length: 11_000 }, (_, i) => `registry://datasets/clickstream-daily:${String(i).padStart(5, '0')}`);
    s.apply(art('model', 'registry://models/loan:2', d('m'), [...shards, 'registry://models/base:1']));
    // The image's own lineage is whole: the model's nearest ancestors come before it.
    s.apply(art('image', 'img:2', d('x'), ['registry://models/loan:2', 'git://loan@abc']));
    assert.equal(enrich(record, s, 1).lineage.length, 1000);
    const r = resolveEnrichment(record, s);
    const { lineage } = r.enrichment;
    assert.ok(lineage.every((l) => l.depth === 1), 'depth 2 (base:1\'s dataset) is what goes');
    assert.equal(lineage.filter((l) => l.ref === 'git://loan@abc').length, 1);
    // The image's too: the model's parents are its own ancestors, at depth 2.
    assert.deepEqual(r.lineageCutVia, ['registry://models/loan:2', 'img:2']);
    // Its bytes as the contract encodes them (the array's count, 1000, takes two).
    const full = { ...sampleEnrichedDecision(1), ...record } as DecisionRecordRecord;
    const enrichedType = avroType('enriched-decision');
    const bytes = enrichedType.toBuffer(enrich(full, s, 1)).length;
    assert.equal(bytes - enrichedType.toBuffer({ ...enrich(full, s, 1), lineage: [] }).length, r.lineageBytes + 2);
    assert.ok(bytes < 150_000, `${bytes} bytes`);

    // Long refs: the byte bound cuts first.
    const long = new ArtifactState();
    const wide = Array.from({ length: 900 }, (_, i) => `s3://bucket/${'x'.repeat(400)}/${i}`);
    long.apply(art('model', 'registry://models/loan:2', d('m'), wide));
    const cut = resolveEnrichment(record, long);
    assert.ok(cut.lineageBytes <= 256 * 1024 && cut.lineageBytes > 250 * 1024, String(cut.lineageBytes));
    assert.ok(cut.enrichment.lineage.length < 900);
    assert.deepEqual(cut.lineageCutVia, ['registry://models/loan:2']);
    // And a lower bound, for a decision too large to carry all of it.
    const lower = resolveEnrichment(record, long, 10_000);
    assert.ok(lower.lineageBytes <= 10_000 && lower.enrichment.lineage.length > 0);
    assert.deepEqual(lower.enrichment.lineage, cut.enrichment.lineage.slice(0, lower.enrichment.lineage.length), 'a nearest part of the same lineage');
    assert.deepEqual(resolveEnrichment(record, long, 0).enrichment.lineage, []);
    // A lineage within the bounds is whole, and says so.
    assert.deepEqual(resolveEnrichment(record, new ArtifactState()).lineageCutVia, []);
  });

  it('passes a decision with nothing registered, flagged, not dropped', () => {
    const e = enrich(record, new ArtifactState(), 1);
    assert.equal(e.resolved, false);
    assert.equal(e.unresolved_refs.length, 4);
    assert.equal(e.event_id, 'e');
  });
});
