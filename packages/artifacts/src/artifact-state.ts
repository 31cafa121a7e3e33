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
 * What a registration says of its version besides the digest, where two registrations of one
 * ref differ: names of the fields. The digest is compared apart; event_id, registered_at and
 * registered_by say who registered it when, not what the version is. Parents and metadata
 * compare as sets: their order means nothing.
 */
export function registrationDifferences(a: ArtifactEventRecord, b: ArtifactEventRecord): string[] {
  const sameList = (x: readonly string[], y: readonly string[]) => {
    const sx = [...new Set(x)].sort();
    const sy = [...new Set(y)].sort();
    return sx.length === sy.length && sx.every((v, i) => v === sy[i]);
  };
  const entries = (m: Record<string, string>) => Object.entries(m).map(([k, v]) => `${k}\u0000${v}`);
  const out: string[] = [];
  if (a.kind !== b.kind) out.push('kind');
  if (a.name !== b.name) out.push('name');
  if (a.version !== b.version) out.push('version');
  if ((a.uri ?? null) !== (b.uri ?? null)) out.push('uri');
  if (!sameList(a.parents, b.parents)) out.push('parents');
  if (!sameList(entries(a.metadata), entries(b.metadata))) out.push('metadata');
  return out;
}

/**
 * The registry's state, rebuilt by replaying registration events. A version is immutable: the
 * first registration seen for a ref stays; a later one with another digest, or with the same
 * digest and other parents, metadata, kind or uri, is a conflict, kept aside for audit and never
 * applied. Only an identical one (a retry) is `unchanged`.
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
 * Kafka key of a registration: ref and digest, so a conflicting registration written around
 * `dlog register` cannot replace the original under compaction.
 */
export function registrationKey(event: Pick<ArtifactEventRecord, 'ref' | 'digest'>): string {
  return `${event.ref}@${event.digest}`;
}
