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
 * Generations of ancestors walked: every lineage registered in practice (a fine-tune of a
 * fine-tune of a base model is a handful) and a bound on the walk.
 */
export const MAX_LINEAGE_DEPTH = 32;

/**
 * Ancestors kept for one artifact, and for one decision record. Every decision of a model carries
 * them, so they are paid for in every stored row: 1,000 covers a model trained on a year of daily
 * partitions, or a month of hourly ones, with its code and base models (about 100 KB a record at
 * ~100 bytes a pointer), where the 10,000 of a decade of daily partitions would take a record past
 * what Kafka holds. Past it, `dlog lineage` walks the whole graph.
 */
export const MAX_LINEAGE_POINTERS = 1_000;

/**
 * Ancestors held in the lineage cache, summed over the artifacts cached (~64 MB of pointers, a
 * thousand of the widest lineages): its 100,000 artifacts alone would let it hold 100 million.
 */
const MAX_CACHED_POINTERS = 1_000_000;

export interface Lineage {
  /** Nearest generation first; within one, by ref. */
  ancestors: Ancestor[];
  /**
   * Some ancestor is left out: past MAX_LINEAGE_DEPTH generations, or past MAX_LINEAGE_POINTERS
   * ancestors (the rest of the generation where it stops).
   */
  cut: boolean;
}

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
  /** Refused registrations, each once however often the topic is read again (by event id). */
  readonly conflicts: ArtifactEventRecord[] = [];
  private readonly conflictIds = new Set<string>();
  private readonly ancestorCache = new Map<string, Lineage>();
  private cachedPointers = 0;

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
      this.cachedPointers = 0;
    } else if (outcome === 'conflict' && !this.conflictIds.has(event.event_id)) {
      this.conflictIds.add(event.event_id);
      this.conflicts.push(event);
    }
    return outcome;
  }

  /** The ancestors of a ref, as `lineage` gives them. */
  ancestors(ref: string): Ancestor[] {
    return this.lineage(ref).ancestors;
  }

  /**
   * The ancestors of a ref (parents, their parents ...), breadth first: each generation before the
   * next, each ancestor once at its nearest depth, and within a generation by ref, so that where
   * the lineage is cut does not hang on the order a manifest listed parents in (a set, for the
   * registry). At most MAX_LINEAGE_DEPTH generations and MAX_LINEAGE_POINTERS ancestors; `cut`
   * says whether that left any out.
   */
  lineage(ref: string): Lineage {
    const cached = this.ancestorCache.get(ref);
    if (cached) return cached;
    const ancestors: Ancestor[] = [];
    const seen = new Set<string>([ref]);
    let frontier = [ref];
    let cut = false;
    for (let depth = 1; ; depth++) {
      const next = new Set<string>();
      for (const r of frontier) for (const parent of this.byRef.get(r)?.parents ?? []) if (!seen.has(parent)) next.add(parent);
      if (next.size === 0) break;
      if (depth > MAX_LINEAGE_DEPTH || ancestors.length === MAX_LINEAGE_POINTERS) {
        cut = true;
        break;
      }
      const generation = [...next].sort();
      const room = MAX_LINEAGE_POINTERS - ancestors.length;
      if (generation.length > room) {
        cut = true;
        generation.length = room;
      }
      for (const parent of generation) {
        seen.add(parent);
        ancestors.push({ ref: parent, kind: this.byRef.get(parent)?.kind ?? 'unknown', via: ref, depth });
      }
      if (cut) break;
      frontier = generation;
    }
    const out = { ancestors, cut };
    if (this.ancestorCache.size < 100_000 && this.cachedPointers + ancestors.length <= MAX_CACHED_POINTERS) {
      this.ancestorCache.set(ref, out);
      this.cachedPointers += ancestors.length;
    }
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
 * Kafka key of a registration on the compacted topic: its ref and its event id, so compaction
 * removes nothing but a retry of the same write. Compaction keeps only the last message of a key,
 * and every reader keeps the first registration of a ref in the log: two runs that wrote the same
 * content under one key, with another digest written between them by a third, lost the earlier
 * copy to compaction, and the refused one in the middle became the one every restarted reader kept
 * (while running readers and ClickHouse kept the first). `dlog register` writes only what the
 * registry does not hold yet, so the topic grows by new registrations and races, not by reruns.
 */
export function registrationKey(event: ArtifactEventRecord): string {
  return `${event.ref}@${event.event_id}`;
}
