import { environmentRef, MAX_LINEAGE_POINTERS, modelRef, type ArtifactState } from '@dlog/artifacts';
import type { DecisionRecordRecord, EnrichedDecisionRecord, LineagePointerRecord, ResolvedArtifactRecord } from '@dlog/contracts';

export type ResolvedArtifact = ResolvedArtifactRecord;
export type LineagePointer = LineagePointerRecord;
export type { EnrichedDecisionRecord };

/** The fields of a decision that name artifacts. */
export type DecisionRefs = Pick<DecisionRecordRecord, 'model' | 'image' | 'config' | 'preprocessing' | 'environment_digest'>;

/** What enrichment adds to a decision, `enriched_at` apart. */
export type Enrichment = Pick<EnrichedDecisionRecord, 'resolved' | 'unresolved_refs' | 'digest_mismatches' | 'artifacts' | 'lineage'>;

/**
 * Encoded bytes of lineage one decision record carries at most. MAX_LINEAGE_POINTERS bounds the
 * count, but a ref may be long (500 characters from a manifest, and more written to the topic
 * directly), and every pointer carries two: this keeps the lineage to a quarter of the 1,000,000
 * bytes a record may take, beside a decision the gate's default policy keeps under 256 KiB of
 * input. A larger decision gets less lineage (see `lineageBytes`), never a dead letter for it.
 */
export const MAX_LINEAGE_BYTES = 256 * 1024;

/** What resolving a decision's references found besides the enrichment itself. */
export interface ResolvedEnrichment {
  enrichment: Enrichment;
  /** Refs registered as another kind than the role the decision names them in (also among `digest_mismatches`). */
  kindMismatches: string[];
  /** The decision's artifacts some of whose ancestors its lineage leaves out, by its limits; empty when whole. */
  lineageCutVia: string[];
  /** Encoded bytes of the lineage's pointers: what leaving all of them out would save. */
  lineageBytes: number;
}

/** Bytes of a non-negative int or long in Avro's zig-zag varint encoding. */
function varintBytes(n: number): number {
  let bytes = 1;
  for (let z = n * 2; z >= 128; z = Math.floor(z / 128)) bytes++;
  return bytes;
}

function stringBytes(s: string): number {
  const n = Buffer.byteLength(s, 'utf8');
  return varintBytes(n) + n;
}

/** Encoded size of one pointer in the enriched-decision contract: ref, kind, via, depth. */
function pointerBytes(p: LineagePointer): number {
  return stringBytes(p.ref) + stringBytes(p.kind) + stringBytes(p.via) + varintBytes(p.depth);
}

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
  return { ...r, ...resolveEnrichment(r, state).enrichment, enriched_at: now };
}

/**
 * The enrichment of a decision's artifact references against the registry state.
 *
 * An artifact registered as another kind than the role it fills (an image ref registered as a
 * dataset) is the wrong artifact as surely as one with another digest, so it is flagged the same
 * way: attached, so the record shows which kind it is, listed in `digest_mismatches` (the
 * contract's one place for a ref that names something other than what ran), and not `resolved`.
 *
 * The lineage is every artifact's ancestors merged, each at its nearest depth, nearest first, and
 * cut to at most MAX_LINEAGE_POINTERS pointers and `lineageBytes` bytes: what is cut is the
 * farthest, and within a depth what comes late in every artifact's own (deterministic) order.
 */
export function resolveEnrichment(r: DecisionRefs, state: ArtifactState, lineageBytes = MAX_LINEAGE_BYTES): ResolvedEnrichment {
  const artifacts: ResolvedArtifact[] = [];
  const unresolved: string[] = [];
  const mismatches: string[] = [];
  const kindMismatches: string[] = [];
  const cutVia = new Set<string>();
  /** Each ancestor at its nearest depth, with its place in that generation of the artifact it was reached from. */
  const merged = new Map<string, { p: LineagePointer; rank: number; role: number }>();
  const refs = decisionRefs(r);
  const own = new Set(refs.map((x) => x.ref));
  for (const [role, { role: roleName, ref, declared }] of refs.entries()) {
    const a = state.get(ref);
    if (!a) {
      unresolved.push(ref);
      continue;
    }
    artifacts.push({ role: roleName, ref, kind: a.kind, version: a.version, digest: a.digest, registered_at: a.registered_at });
    // Roles and kinds share their names: a role is filled by the artifact of its own kind.
    const wrongKind = a.kind !== roleName;
    if (wrongKind) kindMismatches.push(ref);
    if (wrongKind || (declared !== null && declared !== a.digest)) mismatches.push(ref);
    const lineage = state.lineage(ref);
    if (lineage.cut) cutVia.add(ref);
    let rank = 0;
    let depth = 0;
    for (const anc of lineage.ancestors) {
      // The image's parent is the decision's own model: already in artifacts, not lineage.
      if (own.has(anc.ref)) continue;
      if (anc.depth !== depth) [depth, rank] = [anc.depth, 0];
      const prior = merged.get(anc.ref);
      if (!prior || anc.depth < prior.p.depth) merged.set(anc.ref, { p: anc, rank, role });
      rank++;
    }
  }
  // Within a depth, the artifacts' lists taken in turn (the first of each, then the second ...),
  // so that one artifact's thousand parents do not crowd out another's one.
  const nearestFirst = [...merged.values()].sort((a, b) => a.p.depth - b.p.depth || a.rank - b.rank || a.role - b.role).map((x) => x.p);
  const lineage: LineagePointer[] = [];
  let bytes = 0;
  for (const p of nearestFirst) {
    const size = pointerBytes(p);
    if (lineage.length === MAX_LINEAGE_POINTERS || bytes + size > lineageBytes) {
      // Everything from here on is left out, the nearest of it too, so that what a record holds is
      // always a whole nearest part of its lineage.
      for (const rest of nearestFirst.slice(lineage.length)) cutVia.add(rest.via);
      break;
    }
    bytes += size;
    lineage.push(p);
  }
  return {
    enrichment: {
      resolved: unresolved.length === 0 && mismatches.length === 0,
      unresolved_refs: unresolved,
      digest_mismatches: mismatches,
      artifacts,
      lineage,
    },
    kindMismatches,
    lineageCutVia: [...cutVia],
    lineageBytes: bytes,
  };
}
