import { createHash } from 'node:crypto';
import type { ArtifactEventRecord } from '@dlog/contracts';

export type { ArtifactEventRecord, ArtifactKind } from '@dlog/contracts';

export interface Ancestor {
  ref: string;
  kind: string;
  /** The artifact it was reached from (the decision's artifact). */
  via: string;
  depth: number;
}

export type ApplyOutcome = 'added' | 'unchanged' | 'conflict';

/**
 * What a registration says of its version besides the digest, in a form two registrations of one
 * ref compare by: event_id, registered_at and registered_by say who registered it when, not what
 * the version is; parents and metadata are sets, their order means nothing; a uri of '' is no uri
 * (ClickHouse stores a missing uri as '', and its views must agree with this).
 */
function registrationContent(e: ArtifactEventRecord): { kind: string; uri: string | null; name: string; version: string; parents: string[]; metadata: [string, string][] } {
  return {
    kind: e.kind,
    uri: e.uri || null,
    name: e.name,
    version: e.version,
    parents: [...new Set(e.parents)].sort(),
    metadata: Object.entries(e.metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  };
}

/**
 * Where two registrations of one ref differ besides the digest (compared apart): names of the
 * fields, empty for a retry or an identical registration. An environment is its digest (the digest
 * of its snapshot): the SDK registers it at every process start as runtime-environment, and an
 * operator may describe the same one with another name and metadata, which is no other version;
 * so for two environments only kind and uri count.
 */
export function registrationDifferences(a: ArtifactEventRecord, b: ArtifactEventRecord): string[] {
  const ca = registrationContent(a);
  const cb = registrationContent(b);
  const fields = a.kind === 'environment' && b.kind === 'environment' ? (['uri'] as const) : (['kind', 'name', 'version', 'uri', 'parents', 'metadata'] as const);
  return fields.filter((f) => JSON.stringify(ca[f]) !== JSON.stringify(cb[f]));
}

/**
 * The registry's state, rebuilt by replaying registration events. A version is immutable: the
 * first registration seen for a ref stays; a later one with another digest, or with the same
 * digest and other parents, metadata, kind or uri, is a conflict, kept aside for audit and never
 * applied (an environment: only another kind or uri). Only an identical one (a retry) is
 * `unchanged`.
 */
export class ArtifactState {
  private readonly byRef = new Map<string, ArtifactEventRecord>();
  readonly conflicts: ArtifactEventRecord[] = [];
  private readonly ancestorCache = new Map<string, Ancestor[]>();

  get size(): number {
    return this.byRef.size;
  }

  get(ref: string): ArtifactEventRecord | undefined {
    return this.byRef.get(ref);
  }

  all(): IterableIterator<ArtifactEventRecord> {
    return this.byRef.values();
  }

  /** What applying this event would do, without applying it. */
  check(event: ArtifactEventRecord): ApplyOutcome {
    const existing = this.byRef.get(event.ref);
    if (!existing) return 'added';
    return existing.digest === event.digest && registrationDifferences(existing, event).length === 0 ? 'unchanged' : 'conflict';
  }

  apply(event: ArtifactEventRecord): ApplyOutcome {
    const outcome = this.check(event);
    if (outcome === 'added') {
      this.byRef.set(event.ref, event);
      // A new artifact can complete the lineage of ones already cached.
      this.ancestorCache.clear();
    } else if (outcome === 'conflict') {
      this.conflicts.push(event);
    }
    return outcome;
  }

  /**
   * The ancestors of a ref (parents, their parents ...), nearest first, each once, up to 32
   * generations: every lineage registered in practice (a fine-tune of a fine-tune of a base
   * model is a handful), and a bound on what one decision record carries. Deeper ones are cut
   * here; `dlog lineage` walks the stored graph and says where it stops.
   */
  ancestors(ref: string): Ancestor[] {
    const cached = this.ancestorCache.get(ref);
    if (cached) return cached;
    const out: Ancestor[] = [];
    const seen = new Set<string>([ref]);
    let frontier = [ref];
    for (let depth = 1; frontier.length > 0 && depth <= 32; depth++) {
      const next: string[] = [];
      for (const r of frontier) {
        for (const parent of this.byRef.get(r)?.parents ?? []) {
          if (seen.has(parent)) continue;
          seen.add(parent);
          out.push({ ref: parent, kind: this.byRef.get(parent)?.kind ?? 'unknown', via: ref, depth });
          next.push(parent);
        }
      }
      frontier = next;
    }
    if (this.ancestorCache.size < 100_000) this.ancestorCache.set(ref, out);
    return out;
  }
}

/** The ref a decision's model reference resolves to. */
export function modelRef(name: string, version: string): string {
  return `registry://models/${name}:${version}`;
}

export function environmentRef(digest: string): string {
  return `registry://environments/${digest}`;
}

/**
 * Kafka key of a registration on the compacted topic: ref, digest and a short hash of what else it
 * says of the version. Compaction keeps only the last message of a key, so any two registrations
 * that readers tell apart must have two keys, or the refused one (later in the log) would replace
 * the one every reader kept: a second digest, and since a same-digest registration with other
 * parents or metadata is refused too, the same digest with other content. Identical ones (a retry,
 * or the same manifest registered again) share the key and collapse. 64 bits of sha256 are
 * plenty: a collision needs two different contents for one ref and digest, not two among all.
 */
export function registrationKey(event: ArtifactEventRecord): string {
  // All of the content, environments' names and metadata too: of two that readers take as one,
  // compaction would otherwise keep the later and show its name where readers showed the first.
  const c = registrationContent(event);
  const hash = createHash('sha256').update(JSON.stringify([c.kind, c.uri, c.name, c.version, c.parents, c.metadata])).digest('hex').slice(0, 16);
  return `${event.ref}@${event.digest}@${hash}`;
}
