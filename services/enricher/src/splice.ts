import avro, { type Schema, type Type } from 'avsc';
import type { ArtifactState } from '@dlog/artifacts';
import { loadSchema, writeAvroLong, type DecisionRecordRecord } from '@dlog/contracts';
import { MAX_LINEAGE_BYTES, resolveEnrichment } from './enrich.js';

type RecordSchema = { type: 'record'; name: string; namespace?: string; fields: { name: string; type: Schema }[] };

/** The fields of a decision that enrichment reads: the artifacts it names. */
const refFields = ['model', 'image', 'config', 'preprocessing', 'environment_digest'] as const;
type Refs = Pick<DecisionRecordRecord, (typeof refFields)[number]>;

/**
 * Whether values of `t` hold an enum anywhere. Skipping an enum reads its index without looking
 * it up, so a body with an index past the symbols (tier 7) was spliced, while the decode path
 * refuses it and nothing downstream can read the enriched record.
 */
function holdsEnum(t: Type, seen = new Set<Type>()): boolean {
  if (seen.has(t)) return false;
  seen.add(t);
  if (t instanceof avro.types.EnumType) return true;
  if (t instanceof avro.types.RecordType) return t.fields.some((f) => holdsEnum(f.type, seen));
  if (t instanceof avro.types.ArrayType) return holdsEnum(t.itemsType, seen);
  if (t instanceof avro.types.MapType) return holdsEnum(t.valuesType, seen);
  if (t instanceof avro.types.UnwrappedUnionType || t instanceof avro.types.WrappedUnionType) return t.types.some((u) => holdsEnum(u, seen));
  if (t instanceof avro.types.LogicalType) return holdsEnum(t.underlyingType, seen);
  return false;
}

/**
 * The memo's bounds. Entries: the ref sets a busy enricher sees (models x images x environments)
 * fit many times over. Bytes: what the entries hold, mostly their lineage, up to MAX_LINEAGE_BYTES
 * each. 256 MiB keeps about 2,700 ref sets of a model with 1,000 ancestors (one per producer host,
 * as the environment is one of the refs), or all 50,000 ordinary tails of a few hundred bytes; a
 * bound on entries alone let 20,000 tails of 1,000 ancestors each take 1.9 GiB. Past it a miss
 * costs ~12 times a hit, so the least recently used go first.
 */
const MEMO_MAX_ENTRIES = 50_000;
export const MEMO_MAX_BYTES = 256 * 1024 * 1024;
/** A memo entry's cost besides its tail and key: the Map slot, the entry and its Buffer. */
const MEMO_ENTRY_OVERHEAD = 256;

/** A spliced record and what its enrichment found. */
export interface Spliced {
  value: Buffer;
  unresolved: boolean;
  /** A ref's digest or kind differs from its registration (listed in `digest_mismatches`). */
  mismatch: boolean;
  /** A ref is registered as another kind than its role. */
  kindMismatch: boolean;
  /** As in `ResolvedEnrichment`. */
  lineageCutVia: string[];
  lineageBytes: number;
  /** Pointers in the record's lineage. */
  lineageKept: number;
}

type MemoEntry = Omit<Spliced, 'value'> & { tail: Buffer; cost: number };

/** Canonical form of a run of fields: equal forms mean byte-identical encodings. */
function canonical(namespace: string | undefined, fields: RecordSchema['fields']): string {
  return JSON.stringify(avro.Type.forSchema({ type: 'record', name: 'Probe', namespace, fields } as Schema).schema());
}

/**
 * An enriched decision is the decision's own fields followed by the enrichment fields, so its
 * Avro body is the decision body, untouched, plus the encoded enrichment. The splicer builds it
 * that way instead of decoding ~1 KB of decision and encoding it again:
 *
 * - one resolver pass reads the five artifact references, and every field holding an enum (its
 *   index is checked against the symbols, as decoding does), and skips (but walks) every other
 *   field, so a truncated or malformed body is still refused, as is one with trailing bytes;
 * - the encoded enrichment is memoised per set of references while the registry state does not
 *   grow (it only grows: versions never change), and only `enriched_at` is written per record;
 *   the memo is bounded by entries and by the bytes they hold, the oldest going first.
 *
 * Only bodies written in the contract's own schema qualify; anything else takes the decode path.
 */
export class EnrichmentSplicer {
  private readonly writer: Type;
  private readonly refsType: Type;
  private readonly resolver: avro.Resolver;
  private readonly tailType: Type;
  private readonly memo = new Map<string, MemoEntry>();
  private memoBytes = 0;
  private memoStateSize = -1;

  private constructor(decision: RecordSchema, enrichedTail: RecordSchema['fields']) {
    const writer = avro.Type.forSchema(decision as Schema) as avro.types.RecordType;
    this.writer = writer;
    const read = new Set<string>(refFields);
    for (const f of writer.fields) if (holdsEnum(f.type)) read.add(f.name);
    // Same record name as the writer, so the resolver matches it; only the fields read.
    this.refsType = avro.Type.forSchema({ ...decision, fields: decision.fields.filter((f) => read.has(f.name)) } as Schema);
    this.resolver = this.refsType.createResolver(writer);
    this.tailType = avro.Type.forSchema({ type: 'record', name: 'EnrichmentTail', namespace: decision.namespace, fields: enrichedTail } as Schema);
  }

  /**
   * The splicer for the current contracts, or undefined (with the reason) when they no longer
   * line up: the enriched schema must start with exactly the decision's fields and end with
   * `enriched_at` as a long.
   */
  static forContracts(decisionSchema: Schema = loadSchema('decision-record'), enrichedSchema: Schema = loadSchema('enriched-decision')): EnrichmentSplicer | string {
    const d = decisionSchema as RecordSchema;
    const e = enrichedSchema as RecordSchema;
    const n = d.fields.length;
    if (canonical(d.namespace, e.fields.slice(0, n)) !== canonical(d.namespace, d.fields)) return 'the enriched schema does not start with the decision schema';
    const last = e.fields[e.fields.length - 1];
    if (last?.name !== 'enriched_at' || avro.Type.forSchema(last.type).typeName !== 'long') return 'the enriched schema does not end with enriched_at as a long';
    for (const f of refFields) if (!d.fields.some((x) => x.name === f)) return `the decision schema has no ${f} field`;
    try {
      return new EnrichmentSplicer(d, e.fields.slice(n, -1));
    } catch (err) {
      return `the enrichment fields cannot stand alone: ${(err as Error).message}`;
    }
  }

  /**
   * Framed enriched record for a decision body (without its 5-byte frame), or an error message
   * when the body is not a complete decision record. `lineageBytes` lowers the lineage's bound
   * (MAX_LINEAGE_BYTES) for a decision too large to carry all of it; such records are not memoised.
   */
  splice(body: Buffer, outputId: number, state: ArtifactState, now: number, lineageBytes?: number): Spliced | { error: string } {
    let refs: Refs;
    try {
      const r = this.refsType.decode(body, 0, this.resolver);
      if (r.offset !== body.length) {
        return { error: r.offset < 0 ? 'truncated Avro record' : `${body.length - r.offset} bytes after the end of the Avro record` };
      }
      refs = r.value as Refs;
    } catch (err) {
      return { error: `invalid Avro record: ${this.whyInvalid(body, err)}` };
    }
    if (state.size !== this.memoStateSize) {
      this.memo.clear();
      this.memoBytes = 0;
      this.memoStateSize = state.size;
    }
    const entry = lineageBytes === undefined ? this.memoised(refs, state) : this.entry(refs, state, lineageBytes, '');
    const { tail } = entry;
    const value = Buffer.allocUnsafe(5 + body.length + tail.length + 10);
    value[0] = 0;
    value.writeInt32BE(outputId, 1);
    body.copy(value, 5);
    tail.copy(value, 5 + body.length);
    const end = writeAvroLong(value, 5 + body.length + tail.length, now);
    return {
      value: value.subarray(0, end),
      unresolved: entry.unresolved,
      mismatch: entry.mismatch,
      kindMismatch: entry.kindMismatch,
      lineageCutVia: entry.lineageCutVia,
      lineageBytes: entry.lineageBytes,
      lineageKept: entry.lineageKept,
    };
  }

  private memoised(refs: Refs, state: ArtifactState): MemoEntry {
    const key = memoKey(refs);
    const hit = this.memo.get(key);
    if (hit) {
      // To the back of the Map's order: eviction takes the least recently used, not the oldest
      // inserted, so ref sets taken in turn do not push each other out one by one.
      this.memo.delete(key);
      this.memo.set(key, hit);
      return hit;
    }
    const entry = this.entry(refs, state, MAX_LINEAGE_BYTES, key);
    // Least recently used first (a Map iterates in insertion order, and a hit moves to its end).
    for (const [k, old] of this.memo) {
      if (this.memo.size < MEMO_MAX_ENTRIES && this.memoBytes + entry.cost <= MEMO_MAX_BYTES) break;
      this.memo.delete(k);
      this.memoBytes -= old.cost;
    }
    this.memo.set(key, entry);
    this.memoBytes += entry.cost;
    return entry;
  }

  private entry(refs: Refs, state: ArtifactState, lineageBytes: number, key: string): MemoEntry {
    const r = resolveEnrichment(refs, state, lineageBytes);
    const e = r.enrichment;
    const tail = this.tailType.toBuffer(e);
    return {
      tail,
      unresolved: e.unresolved_refs.length > 0,
      mismatch: e.digest_mismatches.length > 0,
      kindMismatch: r.kindMismatches.length > 0,
      lineageCutVia: r.lineageCutVia,
      lineageBytes: r.lineageBytes,
      lineageKept: e.lineage.length,
      // Strings are UTF-16 in the heap.
      cost: tail.length + 2 * key.length + MEMO_ENTRY_OVERHEAD,
    };
  }

  /** Bytes the memo holds, by the estimate it is bounded by. */
  get memoSize(): { entries: number; bytes: number } {
    return { entries: this.memo.size, bytes: this.memoBytes };
  }

  /** The decode path's reason (the resolver's own names no type: "invalid undefined enum index"); only on refusal. */
  private whyInvalid(body: Buffer, err: unknown): string {
    try {
      this.writer.decode(body, 0);
    } catch (full) {
      if (full instanceof Error) return full.message;
    }
    return err instanceof Error ? err.message : String(err);
  }
}

function memoKey(r: Refs): string {
  // JSON keeps null apart from any string, and no separator can occur inside a value.
  return JSON.stringify([
    r.model.name,
    r.model.version,
    r.model.digest,
    r.image?.ref ?? null,
    r.image?.digest ?? null,
    r.config?.ref ?? null,
    r.preprocessing?.ref ?? null,
    r.preprocessing?.digest ?? null,
    r.environment_digest,
  ]);
}
