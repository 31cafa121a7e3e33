import { assertKnownModel, chTime, fmt, modelLabel, modelRef, num, type AuditQuery, type ModelId } from './audit-query.js';
import { oneLine } from './csv.js';

/**
 * `dlog diff`: two versions on the same inputs (joined on input_hash: the same applicant seen by
 * both), and over all their traffic (decision mix from the exact counts, confidence from the
 * weighted sample), each shift measured by PSI.
 */

export interface DiffOptions {
  a: ModelId;
  b: ModelId;
  endpoint?: string | undefined;
  since?: number | undefined;
  until?: number | undefined;
  /** Lines of the decision mix and cells of the confusion table returned (the rest is summed): defaults below. */
  mixLines?: number | undefined;
  confusionCells?: number | undefined;
}

/**
 * Decisions of the mix and cells of the confusion table a diff returns. Free-text decisions
 * (generated answers, recommended items) make one each, more than the query path's 100,000 rows:
 * the ones that moved most, or were most common, are shown; the others are summed.
 */
export const defaultMixLines = 50;
export const defaultConfusionCells = 50;

export interface DiffResult {
  a: string;
  b: string;
  paired: { inputs: number; agreement: number | null; confidenceShift: number | null; confidenceA: number | null; confidenceB: number | null };
  /** Paired inputs by (decision of a, decision of b): the most common cells. */
  confusion: { a: string; b: string; inputs: number }[];
  /** The cells not in `confusion`: how many, and their paired inputs. */
  confusionRest: { cells: number; inputs: number } | null;
  /** The decisions whose share moved most (exact counts). */
  mix: { decision: string; a: number; b: number; shareA: number; shareB: number }[];
  /** The decisions not in `mix`: how many, and their counts. */
  mixRest: { decisions: number; a: number; b: number } | null;
  /** Over every decision, not only those in `mix`. */
  mixPsi: number;
  confidence: { bin: string; shareA: number; shareB: number }[];
  confidencePsi: number | null;
  overallConfidence: { a: number | null; b: number | null };
}

/** The smoothing of empty bins in `psi`, which the mix's PSI computed by the engine uses too. */
const psiEpsilon = 1e-4;

/** Population stability index of two distributions over the same bins; empty bins are smoothed. */
export function psi(expected: number[], actual: number[], epsilon = psiEpsilon): number {
  const se = expected.reduce((s, v) => s + v, 0);
  const sa = actual.reduce((s, v) => s + v, 0);
  if (se === 0 || sa === 0) return NaN;
  let total = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.max(epsilon, (expected[i] ?? 0) / se);
    const a = Math.max(epsilon, (actual[i] ?? 0) / sa);
    total += (a - e) * Math.log(a / e);
  }
  return total;
}

/** Confidence bins of a diff: tenths, the first and last open-ended, as the engine clamps into them. */
export const confidenceBins = 10;

/** Bin 0 holds every confidence below 0.1 (negatives too), the last every one from 0.9 up (above 1 too). */
export function confidenceBinLabel(i: number): string {
  const edge = (k: number) => (k / confidenceBins).toFixed(1);
  if (i === 0) return `<${edge(1)}`;
  if (i === confidenceBins - 1) return `>=${edge(i)}`;
  return `${edge(i)}-${edge(i + 1)}`;
}

export function psiLabel(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  return v < 0.1 ? 'no significant shift' : v < 0.25 ? 'moderate shift' : 'large shift';
}

/**
 * `dlog diff --model a --vs b`, as parseVs reads it back: --vs as name:version for --model's own
 * model (a bare version holding a colon could read as another name), else as a registry reference.
 */
export function diffCommandLine(a: ModelId, b: ModelId): string {
  return `dlog diff --model ${modelLabel(a)} --vs ${b.name === a.name ? modelLabel(b) : modelRef(b)}`;
}

function filters(o: DiffOptions, timeCol: 'ts' | 'minute'): { sql: string; params: Record<string, unknown> } {
  const parts: string[] = [];
  const params: Record<string, unknown> = { a_name: o.a.name, a_version: o.a.version, b_name: o.b.name, b_version: o.b.version };
  if (o.endpoint) (parts.push('endpoint = {endpoint:String}'), (params.endpoint = o.endpoint));
  const start = timeCol === 'minute' ? "toStartOfMinute({since:DateTime64(3, 'UTC')})" : "{since:DateTime64(3, 'UTC')}";
  if (o.since !== undefined) (parts.push(`${timeCol} >= ${start}`), (params.since = chTime(o.since)));
  if (o.until !== undefined) (parts.push(`${timeCol} < {until:DateTime64(3, 'UTC')}`), (params.until = chTime(o.until)));
  return { sql: parts.length ? `AND ${parts.join(' AND ')}` : '', params };
}

export async function computeDiff(q: AuditQuery, o: DiffOptions): Promise<DiffResult> {
  // --vs is required: a suggestion names both options, the side that was wrong replaced.
  await assertKnownModel(q, o.a, 'diff', { suggest: (a) => diffCommandLine(a, o.b), exclude: [o.b] });
  await assertKnownModel(q, o.b, 'diff', { option: '--vs', suggest: (b) => diffCommandLine(o.a, b), exclude: [o.a] });
  const f = filters(o, 'ts');
  const fc = filters(o, 'minute');
  const isA = 'model_name = {a_name:String} AND model_version = {a_version:String}';
  const isB = 'model_name = {b_name:String} AND model_version = {b_version:String}';
  // These read the decisions table, not v_decisions: the view's LIMIT 1 BY hashes every row's
  // event_id (4x the cost over millions of rows, measured in bench/audit.ts), and an exact
  // duplicate -- which the sink already keeps out -- could not move an agreement rate or a
  // distribution anyway. Scope, where a count must be exact, reads the view.
  //
  // An answer is cut at 100,000 rows, and audit queries throw on a cut one: the per-decision and
  // per-cell lines are capped here, and every total, rate and PSI is computed by the engine over
  // all of them (window aggregates over every line, before the LIMIT), never summed from the rows
  // returned.
  const [pairs, mixRows, confRows] = await Promise.all([
    // One pass over both versions, grouped by input: each version's (any) decision and mean
    // confidence on it; inputs both versions saw are the pairs. input_key (migration 008) is
    // cityHash64(input_hash): 8 bytes to group by instead of 71 (a collision among 10^6 inputs: ~10^-7).
    q(
      `SELECT a, b, inputs, cells, t_inputs, t_agree, t_ca, t_cb, t_shift FROM
       (
         SELECT a, b, inputs,
                count() OVER () AS cells,
                sum(inputs) OVER () AS t_inputs,
                sum(if(a = b, inputs, 0)) OVER () AS t_agree,
                sum(sum_ca) OVER () / nullIf(sum(n_ca) OVER (), 0) AS t_ca,
                sum(sum_cb) OVER () / nullIf(sum(n_cb) OVER (), 0) AS t_cb,
                sum(sum_shift) OVER () / nullIf(sum(n_shift) OVER (), 0) AS t_shift
         FROM
         (
           SELECT da AS a, db AS b, count() AS inputs,
                  sum(conf_a) AS sum_ca, count(conf_a) AS n_ca, sum(conf_b) AS sum_cb, count(conf_b) AS n_cb,
                  sum(conf_b - conf_a) AS sum_shift, count(conf_b - conf_a) AS n_shift
           FROM
           (
             SELECT input_key AS h,
                    anyIf(decision, ${isA}) AS da, anyIf(decision, ${isB}) AS db,
                    avgIf(confidence, ${isA}) AS conf_a, avgIf(confidence, ${isB}) AS conf_b,
                    countIf(${isA}) AS na, countIf(${isB}) AS nb
             FROM decisions
             WHERE ((${isA}) OR (${isB})) ${f.sql}
             GROUP BY h
           )
           WHERE na > 0 AND nb > 0
           GROUP BY a, b
         )
       )
       ORDER BY inputs DESC, a, b
       LIMIT {cells:UInt32}`,
      { ...f.params, cells: o.confusionCells ?? defaultConfusionCells },
    ),
    // The counts table read with FINAL (what keeps a replayed delta from counting twice), not
    // v_decision_totals, which groups every row by minute and seven keys before anything is summed.
    q(
      `SELECT decision, a, b, ta, tb, decisions, psi FROM
       (
         SELECT decision, a, b, ta, tb, decisions, pa, pb, sum((pb - pa) * log(pb / pa)) OVER () AS psi
         FROM
         (
           SELECT decision, a, b, ta, tb, decisions,
                  greatest({eps:Float64}, if(ta > 0, a / ta, 0)) AS pa, greatest({eps:Float64}, if(tb > 0, b / tb, 0)) AS pb
           FROM
           (
             SELECT decision, a, b, sum(a) OVER () AS ta, sum(b) OVER () AS tb, count() OVER () AS decisions
             FROM
             (
               SELECT toString(decision) AS decision, sumIf(kept + dropped, ${isA}) AS a, sumIf(kept + dropped, ${isB}) AS b
               FROM decision_counts FINAL
               WHERE ((${isA}) OR (${isB})) ${fc.sql}
               GROUP BY decision
             )
           )
         )
       )
       ORDER BY abs(if(tb > 0, b / tb, 0) - if(ta > 0, a / ta, 0)) DESC, decision
       LIMIT {lines:UInt32}`,
      { ...fc.params, eps: psiEpsilon, lines: o.mixLines ?? defaultMixLines },
    ),
    q(
      // Clamped before the cast: toUInt8 wraps, so -0.2 (floor -2) landed in the top bin and 25.6
      // (floor 256) in bin 0. The gate takes any finite confidence (a score, a logit), not only 0..1.
      `SELECT toUInt8(least(${confidenceBins - 1}, greatest(0, floor(assumeNotNull(confidence) * ${confidenceBins})))) AS bin,
              sumIf(1 / sample_rate, ${isA}) AS a, sumIf(1 / sample_rate, ${isB}) AS b,
              sumIf(assumeNotNull(confidence) / sample_rate, ${isA}) AS wa, sumIf(assumeNotNull(confidence) / sample_rate, ${isB}) AS wb
       FROM
       (
         -- Weighted sums: a row the sink wrote twice (a crash between its check and its commit)
         -- would count twice, so each decision once, as v_decisions keeps it.
         SELECT confidence, sample_rate, model_name, model_version
         FROM decisions
         WHERE ((${isA}) OR (${isB})) AND confidence IS NOT NULL ${f.sql}
         LIMIT 1 BY model_name, model_version, ts, event_id
       )
       GROUP BY bin ORDER BY bin`,
      f.params,
    ),
  ]);
  const first = pairs[0];
  const inputs = first ? num(first.t_inputs) : 0;
  const orNull = (v: unknown) => (v === null || v === undefined || !Number.isFinite(num(v)) ? null : num(v));
  const m0 = mixRows[0];
  const totalA = m0 ? num(m0.ta) : 0;
  const totalB = m0 ? num(m0.tb) : 0;
  const mix = mixRows.map((r) => ({ decision: String(r.decision), a: num(r.a), b: num(r.b), shareA: totalA ? num(r.a) / totalA : 0, shareB: totalB ? num(r.b) / totalB : 0 }));
  const mixDecisions = m0 ? num(m0.decisions) : 0;
  const shownCells = pairs.reduce((s, r) => s + num(r.inputs), 0);
  const bins = Array.from({ length: confidenceBins }, (_, i) => confRows.find((r) => num(r.bin) === i));
  const ca = bins.map((r) => (r ? num(r.a) : 0));
  const cb = bins.map((r) => (r ? num(r.b) : 0));
  const sumA = ca.reduce((s, v) => s + v, 0);
  const sumB = cb.reduce((s, v) => s + v, 0);
  return {
    a: modelLabel(o.a),
    b: modelLabel(o.b),
    paired: {
      inputs,
      agreement: inputs ? num(first!.t_agree) / inputs : null,
      confidenceShift: first ? orNull(first.t_shift) : null,
      confidenceA: first ? orNull(first.t_ca) : null,
      confidenceB: first ? orNull(first.t_cb) : null,
    },
    confusion: pairs.map((r) => ({ a: String(r.a), b: String(r.b), inputs: num(r.inputs) })),
    confusionRest: first && num(first.cells) > pairs.length ? { cells: num(first.cells) - pairs.length, inputs: inputs - shownCells } : null,
    // By decision, as people read a table; the lines themselves are the ones that moved most.
    mix: mix.sort((x, y) => x.decision.localeCompare(y.decision)),
    mixRest: mixDecisions > mix.length ? { decisions: mixDecisions - mix.length, a: totalA - mix.reduce((s, m) => s + m.a, 0), b: totalB - mix.reduce((s, m) => s + m.b, 0) } : null,
    // As psi(): no distribution to compare when either version has no decisions.
    mixPsi: m0 && totalA > 0 && totalB > 0 ? num(m0.psi) : NaN,
    confidence: bins.map((_, i) => ({ bin: confidenceBinLabel(i), shareA: sumA ? ca[i]! / sumA : 0, shareB: sumB ? cb[i]! / sumB : 0 })),
    confidencePsi: sumA && sumB ? psi(ca, cb) : null,
    overallConfidence: {
      a: sumA ? confRows.reduce((s, r) => s + num(r.wa), 0) / sumA : null,
      b: sumB ? confRows.reduce((s, r) => s + num(r.wb), 0) / sumB : null,
    },
  };
}

const pct = (v: number | null) => (v === null || !Number.isFinite(v) ? '-' : `${(v * 100).toFixed(1)}%`);

export function formatDiff(result: DiffResult): string {
  // Decisions are free text: one line each in the tables below.
  const d: DiffResult = {
    ...result,
    confusion: result.confusion.map((c) => ({ ...c, a: oneLine(c.a), b: oneLine(c.b) })),
    mix: result.mix.map((m) => ({ ...m, decision: oneLine(m.decision) })),
  };
  const out: string[] = [];
  out.push(`${d.a}  vs  ${d.b}`);
  out.push('');
  out.push('Same inputs (joined on input_hash):');
  if (d.paired.inputs === 0) {
    out.push('  no input was decided by both versions (widen the window, or check both served the same endpoint)');
  } else {
    out.push(`  paired inputs        ${d.paired.inputs}`);
    out.push(`  agreement            ${pct(d.paired.agreement)}`);
    out.push(`  confidence           ${fmt(d.paired.confidenceA ?? NaN)} → ${fmt(d.paired.confidenceB ?? NaN)}  (shift ${d.paired.confidenceShift !== null && d.paired.confidenceShift >= 0 ? '+' : ''}${fmt(d.paired.confidenceShift ?? NaN)})`);
    out.push('');
    const labelsA = [...new Set(d.confusion.map((c) => c.a))].sort();
    const labelsB = [...new Set(d.confusion.map((c) => c.b))].sort();
    // A table only when every pair is known: a pair left out would read as 0.
    if (labelsA.length <= 12 && labelsB.length <= 12 && d.confusionRest === null) {
      const head = `${d.a} ↓ / ${d.b} →`;
      const w0 = Math.max(head.length, ...labelsA.map((l) => l.length));
      const ws = labelsB.map((l) => Math.max(l.length, 6));
      out.push(`  ${head.padEnd(w0)}  ${labelsB.map((l, i) => l.padStart(ws[i]!)).join('  ')}`);
      for (const la of labelsA) {
        const cells = labelsB.map((lb, i) => String(d.confusion.find((c) => c.a === la && c.b === lb)?.inputs ?? 0).padStart(ws[i]!));
        out.push(`  ${la.padEnd(w0)}  ${cells.join('  ')}`);
      }
    } else {
      // Too many decisions for a table (free text): the most common pairs.
      const shown = d.confusion.slice(0, 12);
      const wa = Math.max(d.a.length, ...shown.map((c) => c.a.length));
      out.push(`  ${d.a.padEnd(wa)}  →  ${d.b}  (inputs)`);
      for (const c of shown) out.push(`  ${c.a.padEnd(wa)}  →  ${c.b}  (${c.inputs})`);
      if (d.confusion.length > shown.length) out.push(`  … ${d.confusion.length - shown.length} more pairs of decisions shown with --json`);
    }
    if (d.confusionRest) out.push(`  … and ${d.confusionRest.cells} less common pairs (${d.confusionRest.inputs} inputs), counted in the agreement above`);
  }
  out.push('');
  out.push(`All traffic, decision mix (exact counts): PSI ${fmt(d.mixPsi)} — ${psiLabel(d.mixPsi)}`);
  const wd = Math.max(8, ...d.mix.map((m) => m.decision.length));
  out.push(`  ${'decision'.padEnd(wd)}  ${d.a.padStart(16)}  ${d.b.padStart(16)}`);
  const shown = d.mix.length > 12 ? [...d.mix].sort((x, y) => Math.abs(y.shareB - y.shareA) - Math.abs(x.shareB - x.shareA) || x.decision.localeCompare(y.decision)).slice(0, 12) : d.mix;
  for (const m of shown) out.push(`  ${m.decision.padEnd(wd)}  ${`${m.a} ${pct(m.shareA)}`.padStart(16)}  ${`${m.b} ${pct(m.shareB)}`.padStart(16)}`);
  const more = d.mix.length - shown.length + (d.mixRest?.decisions ?? 0);
  if (more > 0) out.push(`  … ${more} more decisions (the ${shown.length} that moved most are shown; the PSI is over all of them)`);
  out.push('');
  out.push(`All traffic, confidence (weighted sample): mean ${fmt(d.overallConfidence.a ?? NaN)} → ${fmt(d.overallConfidence.b ?? NaN)}, PSI ${fmt(d.confidencePsi ?? NaN)} — ${psiLabel(d.confidencePsi ?? NaN)}`);
  return out.join('\n') + '\n';
}
