import { environmentRef, modelRef, type ArtifactState } from '@dlog/artifacts';
import type { DecisionRecordRecord, EnrichedDecisionRecord, LineagePointerRecord, ResolvedArtifactRecord } from '@dlog/contracts';

export type ResolvedArtifact = ResolvedArtifactRecord;
export type LineagePointer = LineagePointerRecord;
export type { EnrichedDecisionRecord };

/** The fields of a decision that name artifacts. */
export type DecisionRefs = Pick<DecisionRecordRecord, 'model' | 'image' | 'config' | 'preprocessing' | 'environment_digest'>;

/** What enrichment adds to a decision, `enriched_at` apart. */
export type Enrichment = Pick<EnrichedDecisionRecord, 'resolved' | 'unresolved_refs' | 'digest_mismatches' | 'artifacts' | 'lineage'>;

/**
 * A declared digest as the registry writes it: hex digits are case-insensitive, so `sha256:AB…`
 * names the same bytes as `sha256:ab…`; an empty one declares nothing.
 */
const declaredDigest = (d: string | null): string | null => (d ? d.toLowerCase() : null);

/** The artifacts a decision names, by role, with the digest the producer declared (if any). */
export function decisionRefs(r: DecisionRefs): { role: string; ref: string; declared: string | null }[] {
  const refs = [{ role: 'model', ref: modelRef(r.model.name, r.model.version), declared: declaredDigest(r.model.digest) }];
  if (r.image) refs.push({ role: 'image', ref: r.image.ref, declared: declaredDigest(r.image.digest) });
  if (r.config) refs.push({ role: 'config', ref: r.config.ref, declared: null });
  if (r.preprocessing) refs.push({ role: 'preprocessing', ref: r.preprocessing.ref, declared: declaredDigest(r.preprocessing.digest) });
  const env = declaredDigest(r.environment_digest);
  if (env) refs.push({ role: 'environment', ref: environmentRef(env), declared: env });
  return refs;
}

/**
 * Attaches what the registry knows about each artifact the decision names, and the ancestors of
 * each (training data, code commit, base model ...). Unknown artifacts do not stop the decision:
 * it passes flagged (`resolved` false, the refs in `unresolved_refs`) and is stored that way, as
 * decisions are never rewritten. An artifact registered later resolves the decisions after it;
 * for those before it, the `artifacts` and `lineage_edges` tables hold the registration, joined
 * by the ref the decision still names.
 */
export function enrich(r: DecisionRecordRecord, state: ArtifactState, now: number): EnrichedDecisionRecord {
  return { ...r, ...resolveEnrichment(r, state), enriched_at: now };
}

/** The enrichment of a decision's artifact references against the registry state. */
export function resolveEnrichment(r: DecisionRefs, state: ArtifactState): Enrichment {
  const artifacts: ResolvedArtifact[] = [];
  const unresolved: string[] = [];
  const mismatches: string[] = [];
  const lineage = new Map<string, LineagePointer>();
  const refs = decisionRefs(r);
  const own = new Set(refs.map((x) => x.ref));
  for (const { role, ref, declared } of refs) {
    const a = state.get(ref);
    if (!a) {
      unresolved.push(ref);
      continue;
    }
    artifacts.push({ role, ref, kind: a.kind, version: a.version, digest: a.digest, registered_at: a.registered_at });
    if (declared !== null && declared !== a.digest) mismatches.push(ref);
    for (const anc of state.ancestors(ref)) {
      // The image's parent is the decision's own model: already in artifacts, not lineage.
      if (own.has(anc.ref)) continue;
      const prior = lineage.get(anc.ref);
      if (!prior || anc.depth < prior.depth) lineage.set(anc.ref, anc);
    }
  }
  return {
    resolved: unresolved.length === 0 && mismatches.length === 0,
    unresolved_refs: unresolved,
    digest_mismatches: mismatches,
    artifacts,
    lineage: [...lineage.values()],
  };
}
