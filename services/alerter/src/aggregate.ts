import { createHash } from 'node:crypto';
import { otherCategory } from './psi.js';

/** Orders versions like people read them (2.10.0 after 2.9.1); shared with the CLI. */
export { compareVersions } from '@dlog/contracts';

/** What the alerter needs from one enriched decision. */
export interface DecisionObservation {
  ts: number;
  endpoint: string;
  model: string;
  version: string;
  decision: string;
  confidence: number | null;
  /** 1 / sample_rate: how many decisions this record stands for. */
  weight: number;
  resolved: boolean;
  /** Refs the registry did not know, or whose digest did not match. */
  unresolvedRefs: string[];
}

export interface DeadLetterObservation {
  ts: number;
  reason: string;
}

/** Sums over the decisions of one model version on one endpoint (a pane, or a merged window). */
export interface VersionAgg {
  /** Decisions actually seen (what min_samples counts). */
  n: number;
  /** Decisions they stand for (Σ 1/sample_rate). */
  weight: number;
  confN: number;
  confWeight: number;
  /** Σ weight · confidence */
  confSum: number;
  unresolvedN: number;
  unresolvedWeight: number;
  /** decision → weight */
  decisions: Map<string, number>;
  /** ref → decisions seen naming it unresolved */
  unresolvedRefs: Map<string, number>;
}

export interface DeadLetterAgg {
  n: number;
  byReason: Map<string, number>;
}

// Free-text decisions (agent steps) would otherwise grow a pane without bound; PSI pools the
// tail anyway, so keeping the first few hundred distinct values loses nothing that matters.
export const maxDistinctDecisions = 200;
const maxDistinctRefs = 20;

/**
 * Refs are producer strings up to the event limit (256 KiB): 20 of 60 KB each made one alert 1.1 MB,
 * over the broker's 1 MiB limit, and its batch was retried for ever. A registry ref is far shorter;
 * a longer one is kept as a prefix and a hash of the whole, so distinct refs stay distinct.
 */
export const maxRefBytes = 512;
const refPrefixBytes = 400;

/** The longest start of `s` that is at most `maxBytes` in UTF-8, never splitting a character. */
export function utf8Prefix(s: string, maxBytes: number): string {
  if (s.length * 3 <= maxBytes) return s;
  let bytes = 0;
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    // A lone surrogate is written as U+FFFD, 3 bytes.
    const b = c < 0x80 ? 1 : c < 0x800 ? 2 : pair ? 4 : 3;
    if (bytes + b > maxBytes) break;
    bytes += b;
    i += pair ? 2 : 1;
  }
  return s.slice(0, i);
}

/** `ref` as kept: itself up to `maxRefBytes`, else a prefix, its length and a hash, said so in the text. */
export function boundedRef(ref: string): string {
  if (ref.length * 3 <= maxRefBytes) return ref;
  const bytes = Buffer.byteLength(ref);
  if (bytes <= maxRefBytes) return ref;
  const hash = createHash('sha256').update(ref).digest('hex').slice(0, 16);
  return `${utf8Prefix(ref, refPrefixBytes)}… [cut: ${bytes} bytes, sha256 ${hash}]`;
}

/** What a decision adds to a baseline record besides its text: about its count in JSON. */
const entryOverheadBytes = 24;

/** A decision's share of a baseline record: its UTF-8 bytes and its count. */
export function decisionEntryBytes(decision: string): number {
  return Buffer.byteLength(decision) + entryOverheadBytes;
}

/**
 * Bytes the distinct decisions of one version may take in a pane, and so in a window merged from
 * panes, counted as a baseline record counts them (`decisionEntryBytes`, room for "(other)"
 * included). A count alone let generated answers of 16 KB keep 3 MiB per version per pane, copied
 * on every batch that added to it. The same bound as a baseline record's decisions, so the window
 * a version was judged on is the one its record restores. 200 decisions of up to 300 bytes fit,
 * kept as they always were; past the budget new decisions are pooled as "(other)", as PSI pools
 * its tail and its singletons.
 */
export const maxDecisionBytes = 64 * 1024;
const keptDecisionBytes = maxDecisionBytes - decisionEntryBytes(otherCategory);

/**
 * A decision longer than this is pooled on sight. A label or a step name is far shorter; text this
 * long is as good as unique, so PSI would pool it anyway; and a few of them must not take the
 * budget from the categories that come after them. Checked before the map is searched, as looking
 * up a long string costs its length.
 */
const maxDecisionKeyBytes = 1024;

/**
 * decisions map → `decisionEntryBytes` of its keys but "(other)". Beside the map, not in
 * VersionAgg, which is compared, copied and written as it is; a map it has not seen (a copied pane,
 * a decoded baseline) is counted once. Maps of decisions change only through `bumpDecision`.
 */
const keptBytes = new WeakMap<ReadonlyMap<string, number>, number>();

function bytesOf(decisions: ReadonlyMap<string, number>): number {
  let bytes = keptBytes.get(decisions);
  if (bytes === undefined) {
    bytes = 0;
    for (const k of decisions.keys()) if (k !== otherCategory) bytes += decisionEntryBytes(k);
    keptBytes.set(decisions, bytes);
  }
  return bytes;
}

export function emptyAgg(): VersionAgg {
  return { n: 0, weight: 0, confN: 0, confWeight: 0, confSum: 0, unresolvedN: 0, unresolvedWeight: 0, decisions: new Map(), unresolvedRefs: new Map() };
}

/** A copy that shares nothing with `agg`, for a batch to change (see `paneFor` in engine.ts). */
export function cloneAgg(agg: VersionAgg): VersionAgg {
  const decisions = new Map(agg.decisions);
  const bytes = keptBytes.get(agg.decisions);
  if (bytes !== undefined) keptBytes.set(decisions, bytes);
  return { ...agg, decisions, unresolvedRefs: new Map(agg.unresolvedRefs) };
}

function bump(map: Map<string, number>, key: string, by: number, cap: number): void {
  if (map.has(key) || map.size < cap) map.set(key, (map.get(key) ?? 0) + by);
}

/** Counts a decision in its own bin while the count and byte budgets allow a new one, else in "(other)". */
function bumpDecision(decisions: Map<string, number>, decision: string, by: number): void {
  if (decision.length <= maxDecisionKeyBytes) {
    const count = decisions.get(decision);
    if (count !== undefined) {
      decisions.set(decision, count + by);
      return;
    }
    if (decisions.size < maxDistinctDecisions && decision !== otherCategory) {
      const text = Buffer.byteLength(decision);
      const cost = text + entryOverheadBytes;
      const bytes = bytesOf(decisions);
      // length counts UTF-16 units: a decision of many-byte characters can still be over.
      if (text <= maxDecisionKeyBytes && bytes + cost <= keptDecisionBytes) {
        keptBytes.set(decisions, bytes + cost);
        decisions.set(decision, by);
        return;
      }
    }
  }
  decisions.set(otherCategory, (decisions.get(otherCategory) ?? 0) + by);
}

export function addDecision(agg: VersionAgg, d: DecisionObservation): void {
  agg.n++;
  agg.weight += d.weight;
  // A confidence is a probability: anything outside [0, 1] (a logit, 1e308) would swamp the mean.
  if (d.confidence !== null && d.confidence >= 0 && d.confidence <= 1) {
    agg.confN++;
    agg.confWeight += d.weight;
    agg.confSum += d.weight * d.confidence;
  }
  if (!d.resolved) {
    agg.unresolvedN++;
    agg.unresolvedWeight += d.weight;
    for (const ref of d.unresolvedRefs) bump(agg.unresolvedRefs, boundedRef(ref), 1, maxDistinctRefs);
  }
  bumpDecision(agg.decisions, d.decision, d.weight);
}

export function mergeAgg(into: VersionAgg, from: VersionAgg): void {
  into.n += from.n;
  into.weight += from.weight;
  into.confN += from.confN;
  into.confWeight += from.confWeight;
  into.confSum += from.confSum;
  into.unresolvedN += from.unresolvedN;
  into.unresolvedWeight += from.unresolvedWeight;
  for (const [k, v] of from.decisions) bumpDecision(into.decisions, k, v);
  // Bounded here too: a baseline an older alerter wrote can hold refs kept whole.
  for (const [k, v] of from.unresolvedRefs) bump(into.unresolvedRefs, boundedRef(k), v, maxDistinctRefs);
}

export function meanConfidence(agg: VersionAgg): number | undefined {
  return agg.confWeight > 0 ? agg.confSum / agg.confWeight : undefined;
}

