import { createHash } from 'node:crypto';
import { joinKey, type AlertRecord } from '@dlog/contracts';
import { compareVersions, emptyAgg, meanConfidence, mergeAgg, utf8Prefix, type DeadLetterAgg, type VersionAgg } from './aggregate.js';
import { psi } from './psi.js';
import type { Rule } from './rules.js';

export type AlertCandidate = Omit<AlertRecord, 'ts'> & { suppressionKey: string };

export interface Subject {
  endpoint: string;
  model: string;
  version: string;
  agg: VersionAgg;
}

/** A version's last window with enough samples for a rule. */
export interface HistoryEntry {
  windowEnd: number;
  subject: Subject;
}

/** subject key → its last window with enough samples, per rule: the predecessor baselines. */
export type History = Map<string, HistoryEntry>;

/**
 * Separator of the alerter's compound keys. Parts are joined with `joinKey`, which escapes a part
 * holding the separator: endpoints, models and versions are producer strings, and a plain join let
 * endpoint `checkout\0fraud` read back as endpoint `checkout`, model `fraud`.
 */
export const sep = '\u0000';
const escape = '\u001b';

/** `joinKey(parts, sep)` → the parts. */
export function splitKey(key: string): string[] {
  const parts: string[] = [];
  let part = '';
  for (let i = 0; i < key.length; i++) {
    const c = key[i]!;
    if (c === sep) {
      parts.push(part);
      part = '';
    } else if (c === escape) {
      // joinKey writes the escape doubled and the separator as escape + 's'.
      part += key[++i] === 's' ? sep : escape;
    } else part += c;
  }
  parts.push(part);
  return parts;
}

export const subjectKey = (endpoint: string, model: string, version: string): string => joinKey([endpoint, model, version], sep);
export function parseSubjectKey(key: string): { endpoint: string; model: string; version: string } {
  const [endpoint = '', model = '', version = ''] = splitKey(key);
  return { endpoint, model, version };
}

const iso = (ms: number) => new Date(ms).toISOString();
const fmt = (x: number, digits = 4) => (Number.isFinite(x) ? Number(x.toFixed(digits)).toString() : String(x));

function shellWord(s: string): string {
  return /^[A-Za-z0-9._:/@+=,-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The `dlog scope` command that lists the decisions an alert is about. */
export function scopeCommand(opts: { model: string; version: string; endpoint?: string | null; since: number; until: number }): string {
  const parts = ['dlog', 'scope', '--model', shellWord(`${opts.model}:${opts.version}`)];
  if (opts.endpoint) parts.push('--endpoint', shellWord(opts.endpoint));
  parts.push('--since', iso(opts.since), '--until', iso(opts.until));
  return parts.join(' ');
}

const sqlTime = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');

/**
 * What to run for a dead-letter alert. Dead letters name no model version a scope could be
 * pinned on (and their bytes, raw personal data, never leave the dead-letter topic), so this is
 * the window's accepted traffic, exact, by endpoint and model version: whose traffic the refused
 * events are a share of. Only times the alerter formats go into the SQL.
 */
export function deadLetterCommand(since: number, until: number): string {
  return (
    'dlog query "SELECT endpoint, model_name, model_version, sum(total) AS decisions FROM v_decision_totals' +
    ` WHERE minute >= toDateTime('${sqlTime(since)}', 'UTC') AND minute < toDateTime('${sqlTime(until)}', 'UTC')` +
    ' GROUP BY endpoint, model_name, model_version ORDER BY decisions DESC"'
  );
}

/**
 * Bounds on what an alert carries, far below the broker's 1 MiB message limit: an alert over it
 * fails its batch's transaction every time the batch is tried again, and nothing after it is read.
 * Refs, versions, endpoints and decisions are producer strings of up to 256 KiB each. A summary is
 * one line for a human; evidence values are numbers and names; the JSON keeps its largest entries.
 */
export const maxSummaryBytes = 1024;
export const maxEvidenceValueBytes = 4096;
export const maxEvidenceJsonBytes = 64 * 1024;

/** `s` within `maxBytes` of UTF-8, saying so when cut. */
export function capText(s: string, maxBytes: number): string {
  if (s.length * 3 <= maxBytes) return s;
  const bytes = Buffer.byteLength(s);
  if (bytes <= maxBytes) return s;
  const note = `… [cut: ${bytes} bytes]`;
  return utf8Prefix(s, maxBytes - Buffer.byteLength(note)) + note;
}

function boundedEvidence(e: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(e)) out[capText(k, 256)] = capText(v, maxEvidenceValueBytes);
  return out;
}

/** The first of `items` (in the order given) whose JSON fits in `maxBytes`, and how many did not. */
function fitting<T>(items: readonly T[], maxBytes: number): { kept: T[]; omitted: number } {
  const kept: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const cost = Buffer.byteLength(JSON.stringify(item)) + 1;
    if (bytes + cost > maxBytes) break;
    bytes += cost;
    kept.push(item);
  }
  return { kept, omitted: items.length - kept.length };
}

/** Same rule, subject and window → same id, so consumers can dedupe a replay. */
export function alertId(rule: string, endpoint: string | null, model: string | null, version: string | null, start: number, end: number): string {
  return createHash('sha256')
    .update(joinKey([rule, endpoint ?? '', model ?? '', version ?? '', start, end], sep))
    .digest('hex')
    .slice(0, 32);
}

/**
 * Whom a version is judged against. First the busiest older version of the same model on the
 * same endpoint in the same window (a canary against its incumbent); failing that, the last
 * window seen of its predecessor (the highest older version) on that endpoint. Only older
 * versions are baselines: the incumbent is never judged against its canary, and a rollback to
 * an older version does not alert against the version it replaced. A predecessor's window must
 * have ended before `windowEnd`, the end of the window being judged: live, every one has; when a
 * restart replays windows after restoring the baselines written later, this leaves the later
 * ones out, as they were when those windows first closed.
 */
export function pickBaseline(
  subject: Subject,
  peers: readonly Subject[],
  history: History | undefined,
  windowEnd = Infinity,
): { source: 'concurrent' | 'predecessor'; baseline: Subject; windowEnd?: number } | undefined {
  let best: Subject | undefined;
  for (const p of peers) {
    if (p.endpoint !== subject.endpoint || p.model !== subject.model || compareVersions(p.version, subject.version) >= 0) continue;
    if (!best || p.agg.weight > best.agg.weight || (p.agg.weight === best.agg.weight && compareVersions(p.version, best.version) > 0)) best = p;
  }
  if (best) return { source: 'concurrent', baseline: best };
  let pred: { windowEnd: number; subject: Subject } | undefined;
  for (const h of history?.values() ?? []) {
    const s = h.subject;
    if (h.windowEnd >= windowEnd || s.endpoint !== subject.endpoint || s.model !== subject.model || compareVersions(s.version, subject.version) >= 0) continue;
    if (!pred || compareVersions(s.version, pred.subject.version) > 0) pred = h;
  }
  return pred ? { source: 'predecessor', baseline: pred.subject, windowEnd: pred.windowEnd } : undefined;
}

/** Whether a subject has enough samples for this rule to look at it. */
export function eligible(rule: Rule, agg: VersionAgg): boolean {
  return (rule.kind === 'confidence_drop' ? agg.confN : agg.n) >= rule.min_samples;
}

export interface WindowInput {
  start: number;
  end: number;
  subjects: readonly Subject[];
  deadLetters: DeadLetterAgg;
  /** The gate's exact counts of the window's accepted events (decision.counts.v1). */
  gate: GateCounts;
  /** Decisions in no subject, their pane having been full (see `maxSubjectsPerPane`). */
  overflow?: { n: number; weight: number };
}

export interface GateCounts {
  kept: number;
  dropped: number;
}

/** Applies one rule to one closed window. Pure: suppression and history are the caller's. */
export function evaluateRule(rule: Rule, w: WindowInput, history: History | undefined): AlertCandidate[] {
  const base = (endpoint: string | null, model: string | null, version: string | null) => ({
    alert_id: alertId(rule.name, endpoint, model, version, w.start, w.end),
    rule: rule.name,
    severity: rule.severity,
    endpoint,
    model_name: model,
    model_version: version,
    window_start: w.start,
    window_end: w.end,
  });
  const windowEvidence = { kind: rule.kind, window_start: iso(w.start), window_end: iso(w.end), min_samples: String(rule.min_samples) };
  const out: AlertCandidate[] = [];

  switch (rule.kind) {
    case 'confidence_drop':
    case 'decision_mix_shift': {
      const ready = w.subjects.filter((s) => eligible(rule, s.agg));
      for (const s of ready) {
        const pick = pickBaseline(s, ready, history, w.end);
        if (!pick) continue;
        const b = pick.baseline;
        const evidence: Record<string, string> = {
          ...windowEvidence,
          baseline_source: pick.source,
          baseline_version: b.version,
          observed_n: String(s.agg.n),
          observed_weight: fmt(s.agg.weight, 2),
          baseline_n: String(b.agg.n),
          baseline_weight: fmt(b.agg.weight, 2),
        };
        if (pick.windowEnd !== undefined) evidence.baseline_window_end = iso(pick.windowEnd);
        const subject = `${s.model}:${s.version} on ${s.endpoint}`;
        let summary: string;
        let json: unknown;
        if (rule.kind === 'confidence_drop') {
          const mo = meanConfidence(s.agg)!;
          const mb = meanConfidence(b.agg)!;
          const drop = mb - mo;
          if (!(drop >= rule.min_drop)) continue;
          Object.assign(evidence, {
            observed_mean_confidence: fmt(mo),
            baseline_mean_confidence: fmt(mb),
            drop: fmt(drop),
            min_drop: String(rule.min_drop),
            observed_confidence_n: String(s.agg.confN),
            baseline_confidence_n: String(b.agg.confN),
          });
          summary = `${subject}: mean confidence ${fmt(mo, 3)} vs ${fmt(mb, 3)} for ${b.version} (drop ${fmt(drop, 3)} ≥ ${rule.min_drop})`;
          json = { observed: { n: s.agg.confN, weight: s.agg.confWeight, mean: mo }, baseline: { version: b.version, n: b.agg.confN, weight: b.agg.confWeight, mean: mb } };
        } else {
          const r = psi(b.agg.decisions, s.agg.decisions, { maxCategories: rule.max_categories, counts: { baseline: b.agg.n, actual: s.agg.n } });
          if (!(r.psi >= rule.min_psi)) continue;
          Object.assign(evidence, { psi: fmt(r.psi), min_psi: String(rule.min_psi) });
          const top = [...r.bins].sort((x, y) => y.contribution - x.contribution)[0];
          summary =
            `${subject}: decision mix shifted from ${b.version}, PSI ${fmt(r.psi, 3)} ≥ ${rule.min_psi}` +
            (top ? ` (${top.category}: ${fmt(top.actual * 100, 1)}% vs ${fmt(top.baseline * 100, 1)}%)` : '');
          // Free-text categories of up to 1 KiB each: the bins that moved the index most are kept.
          const { kept, omitted } = fitting([...r.bins].sort((x, y) => y.contribution - x.contribution), maxEvidenceJsonBytes - 256);
          const keptSet = new Set(kept);
          json = { psi: r.psi, bins: r.bins.filter((bin) => keptSet.has(bin)), ...(omitted > 0 ? { bins_omitted: omitted } : {}) };
        }
        out.push({
          ...base(s.endpoint, s.model, s.version),
          summary: capText(summary, maxSummaryBytes),
          evidence: boundedEvidence(evidence),
          evidence_json: JSON.stringify(json),
          scope_command: scopeCommand({ model: s.model, version: s.version, endpoint: s.endpoint, since: w.start, until: w.end }),
          suppressionKey: joinKey([rule.name, s.model, s.version], sep),
        });
      }
      break;
    }
    case 'unresolved_artifacts': {
      // A version's artifacts are the same on every endpoint, so the rate is per version.
      const byVersion = new Map<string, { model: string; version: string; endpoints: string[]; agg: VersionAgg }>();
      for (const s of w.subjects) {
        const k = joinKey([s.model, s.version], sep);
        let v = byVersion.get(k);
        if (!v) byVersion.set(k, (v = { model: s.model, version: s.version, endpoints: [], agg: emptyAgg() }));
        v.endpoints.push(s.endpoint);
        mergeAgg(v.agg, s.agg);
      }
      for (const v of byVersion.values()) {
        if (v.agg.n < rule.min_samples || v.agg.weight <= 0) continue;
        const rate = v.agg.unresolvedWeight / v.agg.weight;
        if (!(rate > rule.max_rate)) continue;
        // The most named first (already bounded: mergeAgg above bounds every ref it takes).
        const refs = [...v.agg.unresolvedRefs.entries()].sort((a, b) => b[1] - a[1]);
        const { kept, omitted } = fitting(refs, maxEvidenceJsonBytes - 256);
        const endpoint = v.endpoints.length === 1 ? v.endpoints[0]! : null;
        out.push({
          ...base(endpoint, v.model, v.version),
          summary: capText(
            `${v.model}:${v.version}: ${fmt(rate * 100, 2)}% of decisions name artifacts the registry cannot resolve (> ${fmt(rule.max_rate * 100, 2)}%)${refs[0] ? `, e.g. ${capText(refs[0][0], 200)}` : ''}`,
            maxSummaryBytes,
          ),
          evidence: boundedEvidence({
            ...windowEvidence,
            rate: fmt(rate),
            max_rate: String(rule.max_rate),
            observed_n: String(v.agg.n),
            observed_weight: fmt(v.agg.weight, 2),
            unresolved_n: String(v.agg.unresolvedN),
            unresolved_weight: fmt(v.agg.unresolvedWeight, 2),
            endpoints: [...v.endpoints].sort().join(','),
          }),
          evidence_json: JSON.stringify({ unresolved_refs: Object.fromEntries(kept), ...(omitted > 0 ? { refs_omitted: omitted } : {}) }),
          scope_command: scopeCommand({ model: v.model, version: v.version, endpoint, since: w.start, until: w.end }),
          suppressionKey: joinKey([rule.name, v.model, v.version], sep),
        });
      }
      break;
    }
    case 'dead_letters': {
      const dl = w.deadLetters.n;
      // Decisions of subjects a full pane did not keep are accepted traffic all the same.
      let n = w.overflow?.n ?? 0;
      let weight = w.overflow?.weight ?? 0;
      for (const s of w.subjects) {
        n += s.agg.n;
        weight += s.agg.weight;
      }
      // Accepted events: the gate's exact counts, written in the transactions that wrote the dead
      // letters, so they are there whatever the enricher's delay; the decisions' weight (Σ 1/rate)
      // where there are none (counts not read yet, or an older gate). The larger of the two:
      // counts read for part of the window only must not make the rate look higher.
      const accepted = Math.max(weight, w.gate.kept + w.gate.dropped);
      if (dl + Math.max(n, w.gate.kept + w.gate.dropped) < rule.min_samples) break;
      // Dead letters are never sampled.
      const rate = dl / (dl + accepted);
      if (!(rate > rule.max_rate)) break;
      const reasons = [...w.deadLetters.byReason.entries()].sort((a, b) => b[1] - a[1]);
      out.push({
        ...base(null, null, null),
        summary: capText(`${fmt(rate * 100, 2)}% of inference events went to the dead-letter topic (> ${fmt(rule.max_rate * 100, 2)}%)${reasons[0] ? `, mostly ${reasons[0][0]}` : ''}`, maxSummaryBytes),
        evidence: boundedEvidence({
          ...windowEvidence,
          rate: fmt(rate),
          max_rate: String(rule.max_rate),
          dead_letters: String(dl),
          decisions_n: String(n),
          decisions_weight: fmt(weight, 2),
          gate_kept: String(w.gate.kept),
          gate_dropped: String(w.gate.dropped),
          ...Object.fromEntries(reasons.map(([r, c]) => [`reason.${r}`, String(c)])),
        }),
        evidence_json: JSON.stringify({ by_reason: Object.fromEntries(reasons) }),
        // `dlog scope` needs a model version; dead letters name none (see deadLetterCommand).
        scope_command: deadLetterCommand(w.start, w.end),
        suppressionKey: rule.name,
      });
      break;
    }
  }
  return out;
}
