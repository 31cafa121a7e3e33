import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import avro from 'avsc';
import { ArtifactState, type ArtifactEventRecord } from '@dlog/artifacts';
import { avroType, loadSchema, type DecisionRecordRecord, type EnrichedDecisionRecord } from '@dlog/contracts';
import { sampleEnrichedDecision, sampleEdgeDecision } from '../../sink/src/sample-records.js';
import { enrich } from './enrich.js';
import { MEMO_MAX_BYTES, EnrichmentSplicer } from './splice.js';

const decisionType = avroType('decision-record');
const enrichedType = avroType('enriched-decision');
const decisionFields = (loadSchema('decision-record') as { fields: { name: string }[] }).fields.map((f) => f.name);

/** A decision record as the gate writes it, from the sink's sample enriched decisions. */
function decision(e: EnrichedDecisionRecord): DecisionRecordRecord {
  return Object.fromEntries(decisionFields.map((f) => [f, (e as unknown as Record<string, unknown>)[f]])) as unknown as DecisionRecordRecord;
}

function art(kind: ArtifactEventRecord['kind'], ref: string, digest: string, parents: string[] = []): ArtifactEventRecord {
  return { event_id: ref, kind, ref, name: ref, version: 'v', digest, uri: null, metadata: {}, parents, registered_at: 5, registered_by: 't' };
}

function splicer(): EnrichmentSplicer {
  const s = EnrichmentSplicer.forContracts();
  assert.ok(typeof s !== 'string', `the current contracts allow splicing (${String(s)})`);
  return s;
}

describe('EnrichmentSplicer', () => {
  it('gives the record the decode-enrich-encode path gives, for ordinary and edge-case decisions', () => {
    const sp = splicer();
    const state = new ArtifactState();
    const records = [...Array.from({ length: 20 }, (_, i) => decision(sampleEnrichedDecision(i))), ...Array.from({ length: 10 }, (_, i) => decision(sampleEdgeDecision(i)))];
    // Register some of the artifacts the samples name, with lineage, so both outcomes occur.
    for (const r of records.slice(0, 1)) {
      state.apply(art('dataset', `registry://datasets/${r.model.name}`, `sha256:${'1'.repeat(64)}`));
      state.apply(art('model', `registry://models/${r.model.name}:${r.model.version}`, r.model.digest ?? `sha256:${'2'.repeat(64)}`, [`registry://datasets/${r.model.name}`]));
    }
    const now = 1_764_000_000_123;
    let resolvedSeen = 0;
    for (const r of records) {
      const body = decisionType.toBuffer(r);
      const out = sp.splice(body, 42, state, now);
      assert.ok(!('error' in out), 'error' in out ? out.error : '');
      assert.equal(out.value[0], 0);
      assert.equal(out.value.readInt32BE(1), 42);
      const spliced = enrichedType.fromBuffer(out.value.subarray(5)) as EnrichedDecisionRecord;
      const expected = enrich(decisionType.fromBuffer(body) as DecisionRecordRecord, state, now);
      assert.deepEqual(spliced, enrichedType.fromBuffer(enrichedType.toBuffer(expected)));
      assert.equal(out.unresolved, expected.unresolved_refs.length > 0);
      if (expected.artifacts.length > 0) resolvedSeen++;
    }
    assert.ok(resolvedSeen > 0 && resolvedSeen < records.length, `both resolved and unresolved decisions were spliced (${resolvedSeen} of ${records.length} resolved)`);
  });

  it('sees an artifact registered after the first splice (the memo follows the registry)', () => {
    const sp = splicer();
    const state = new ArtifactState();
    const r = decision(sampleEnrichedDecision(1));
    const body = decisionType.toBuffer(r);
    const before = sp.splice(body, 1, state, 5);
    assert.ok(!('error' in before) && before.unresolved);
    state.apply(art('model', `registry://models/${r.model.name}:${r.model.version}`, r.model.digest ?? `sha256:${'3'.repeat(64)}`));
    const after = sp.splice(body, 1, state, 5);
    assert.ok(!('error' in after));
    const e = enrichedType.fromBuffer(after.value.subarray(5)) as EnrichedDecisionRecord;
    assert.deepEqual(e.artifacts.map((a) => a.role), ['model']);
  });

  it('bounds its memo by the bytes it holds, not only by its entries', () => {
    // Bounded at 50,000 entries alone, 20,000 ref sets of a model with 1,000 ancestors held 1.9 GiB.
    // Here each tail is as large as lineage gets (256 KiB: long refs), so 256 MiB holds ~1,000.
    const sp = splicer();
    const state = new ArtifactState();
    const r = decision(sampleEnrichedDecision(1));
    const shards = Array.from({ length: 1000 }, (_, i) => `s3://ml-data/clickstream/${'daily/'.repeat(40)}2023-${String(i).padStart(5, '0')}`);
    for (const ref of shards) state.apply(art('dataset', ref, `sha256:${'1'.repeat(64)}`));
    state.apply(art('model', `registry://models/${r.model.name}:${r.model.version}`, r.model.digest ?? `sha256:${'2'.repeat(64)}`, shards));
    let last: { body: Buffer; value: Buffer } | undefined;
    const n = Math.ceil(MEMO_MAX_BYTES / (256 * 1024)) + 100;
    const host = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;
    const busy = decisionType.toBuffer({ ...r, environment_digest: host(1e9) });
    for (let i = 0; i < n; i++) {
      // One environment per producer host: a ref set each; and one busy host all along.
      const body = decisionType.toBuffer({ ...r, environment_digest: host(i) });
      const out = sp.splice(body, 1, state, 5);
      assert.ok(!('error' in out));
      last = { body, value: out.value };
      assert.ok(!('error' in sp.splice(busy, 1, state, 5)));
    }
    const { entries, bytes } = sp.memoSize;
    assert.ok(bytes <= MEMO_MAX_BYTES, `${bytes} bytes`);
    assert.ok(entries < n && entries > n - 300, `${entries} entries of ${n}`);
    const keys = [...(sp as unknown as { memo: Map<string, unknown> }).memo.keys()];
    assert.ok(keys.some((k) => k.includes(host(1e9))), 'the busy host, inserted first, is kept: the least recently used go');
    assert.ok(!keys.some((k) => k.includes(host(0))), 'the first of the rest went');
    // What the memo still holds is still right, and what it let go is made again.
    const expected = enrichedType.toBuffer(enrich(decisionType.fromBuffer(last!.body) as DecisionRecordRecord, state, 5));
    assert.deepEqual(last!.value.subarray(5), expected);
    const first = decisionType.toBuffer({ ...r, environment_digest: `sha256:${(0).toString(16).padStart(64, '0')}` });
    const again = sp.splice(first, 1, state, 5);
    assert.ok(!('error' in again) && again.lineageBytes > 250 * 1024 && again.lineageCutVia.length === 1);
  });

  it('refuses a truncated body, trailing bytes and garbage, saying which', () => {
    const sp = splicer();
    const body = decisionType.toBuffer(decision(sampleEnrichedDecision(2)));
    const state = new ArtifactState();
    const cut = sp.splice(body.subarray(0, body.length - 7), 1, state, 5);
    assert.ok('error' in cut && /truncated|invalid/.test(cut.error), JSON.stringify(cut));
    const trailing = sp.splice(Buffer.concat([body, Buffer.from([1, 2])]), 1, state, 5);
    assert.ok('error' in trailing && /2 bytes after the end/.test(trailing.error), JSON.stringify(trailing));
    const garbage = sp.splice(Buffer.from('not avro at all, just text'), 1, state, 5);
    assert.ok('error' in garbage, JSON.stringify(garbage));
  });

  it('refuses a body with an enum index past the symbols (tier 7), as the decode path does, so the enricher dead-letters it', () => {
    // Skipped unchecked, it was spliced into an enriched record nothing downstream could read.
    const sp = splicer();
    const schema = loadSchema('decision-record') as { fields: { name: string; type: { symbols?: string[] } }[] };
    const wide = structuredClone(schema);
    const tier = wide.fields.find((f) => f.name === 'tier')!;
    tier.type.symbols = [...tier.type.symbols!, 'x3', 'x4', 'x5', 'x6', 'x7'];
    const forged = avro.Type.forSchema(wide as never).toBuffer({ ...decision(sampleEnrichedDecision(3)), tier: 'x7' });
    const decodeRefusal = (() => {
      try {
        decisionType.fromBuffer(forged);
      } catch (err) {
        return (err as Error).message;
      }
      return undefined;
    })();
    assert.match(String(decodeRefusal), /enum index: 7/);
    const out = sp.splice(forged, 1, new ArtifactState(), 5);
    assert.ok('error' in out, 'refused');
    assert.equal(out.error, `invalid Avro record: ${decodeRefusal}`, 'with the reason the decode path gives');
    // Every tier the contract has still splices.
    for (const t of tier.type.symbols!.slice(0, 3)) {
      const ok = sp.splice(decisionType.toBuffer({ ...decision(sampleEnrichedDecision(3)), tier: t }), 1, new ArtifactState(), 5);
      assert.ok(!('error' in ok), t);
    }
  });

  it('declines contracts whose enriched schema no longer starts with the decision', () => {
    const d = loadSchema('decision-record') as { fields: unknown[] };
    const e = loadSchema('enriched-decision') as { fields: unknown[] };
    const swapped = { ...e, fields: [e.fields[1], e.fields[0], ...e.fields.slice(2)] };
    assert.equal(typeof EnrichmentSplicer.forContracts(d as never, swapped as never), 'string');
  });
});
