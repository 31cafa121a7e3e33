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
const maxDistinctDecisions = 200;
const maxDistinctRefs = 20;

export function emptyAgg(): VersionAgg {
  return { n: 0, weight: 0, confN: 0, confWeight: 0, confSum: 0, unresolvedN: 0, unresolvedWeight: 0, decisions: new Map(), unresolvedRefs: new Map() };
}

function bump(map: Map<string, number>, key: string, by: number, cap: number, overflow: string | undefined): void {
  const k = map.has(key) || map.size < cap ? key : overflow;
  if (k !== undefined) map.set(k, (map.get(k) ?? 0) + by);
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
    for (const ref of d.unresolvedRefs) bump(agg.unresolvedRefs, ref, 1, maxDistinctRefs, undefined);
  }
  bump(agg.decisions, d.decision, d.weight, maxDistinctDecisions, otherCategory);
}

export function mergeAgg(into: VersionAgg, from: VersionAgg): void {
  into.n += from.n;
  into.weight += from.weight;
  into.confN += from.confN;
  into.confWeight += from.confWeight;
  into.confSum += from.confSum;
  into.unresolvedN += from.unresolvedN;
  into.unresolvedWeight += from.unresolvedWeight;
  for (const [k, v] of from.decisions) bump(into.decisions, k, v, maxDistinctDecisions, otherCategory);
  for (const [k, v] of from.unresolvedRefs) bump(into.unresolvedRefs, k, v, maxDistinctRefs, undefined);
}

export function meanConfidence(agg: VersionAgg): number | undefined {
  return agg.confWeight > 0 ? agg.confSum / agg.confWeight : undefined;
}

