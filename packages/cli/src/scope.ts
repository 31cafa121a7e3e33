import { assertKnownModel, chTime, fmt, fromChTime, modelLabel, modelRef, num, type AuditQuery, type ModelId, type Row } from './audit-query.js';
import { compileWhere, countColumns } from './where-filter.js';

/**
 * `dlog scope`: what a model version decided, over which window and endpoints. Exact totals come
 * from the gate's counts (sampling never hides a decision there); the stored, sampled decisions
 * give the weighted estimate and the ids to remediate. The windows come from deployment events.
 */

export interface ScopeOptions {
  model: ModelId;
  endpoint?: string | undefined;
  since?: number | undefined;
  until?: number | undefined;
  where?: string | undefined;
}

export interface ScopeBreakdown {
  decision: string;
  /** null: the filter reads a column the counts do not keep (then only the estimate exists). */
  exact: number | null;
  sampled: number;
  weighted: number;
}

export interface DeploymentWindow {
  endpoint: string;
  /** The deployment's environment ('' when none was given): each has its own serving history. */
  environment: string;
  from: string;
  /** null: still serving. */
  to: string | null;
  share: number;
  action: string;
}

export interface ScopeResult {
  model: string;
  filters: { endpoint: string | null; since: string | null; until: string | null; where: string | null };
  exact: number | null;
  exactNote: string | null;
  sampled: number;
  weighted: number;
  first: string | null;
  last: string | null;
  /** Per endpoint: exact when the counts can answer the filter, else stored and their weighted estimate. */
  endpoints: { endpoint: string; exact: number | null; sampled: number; weighted: number }[];
  windows: DeploymentWindow[];
  byDecision: ScopeBreakdown[];
}

/** The bound SQL predicate over v_decisions for a scope (parameters prefixed s_ and w). */
export function scopePredicate(o: ScopeOptions): { sql: string; params: Record<string, unknown> } {
  const where = compileWhere(o.where);
  const parts = ['model_name = {s_name:String}', 'model_version = {s_version:String}'];
  const params: Record<string, unknown> = { s_name: o.model.name, s_version: o.model.version, ...where.params };
  if (o.endpoint) (parts.push('endpoint = {s_endpoint:String}'), (params.s_endpoint = o.endpoint));
  if (o.since !== undefined) (parts.push("ts >= {s_since:DateTime64(3, 'UTC')}"), (params.s_since = chTime(o.since)));
  if (o.until !== undefined) (parts.push("ts < {s_until:DateTime64(3, 'UTC')}"), (params.s_until = chTime(o.until)));
  if (where.sql !== '1') parts.push(where.sql);
  return { sql: parts.join(' AND '), params };
}

/**
 * Counts keep one row per minute, so a window is counted in whole minutes: since rounds down,
 * until rounds up. The note says so when it matters.
 */
function countsPredicate(o: ScopeOptions): { sql: string; params: Record<string, unknown> } | { unsupported: string } {
  const where = compileWhere(o.where, 'c');
  const outside = where.columns.filter((c) => !countColumns.has(c));
  if (outside.length > 0) return { unsupported: `exact counts keep decision, endpoint, decision_type and tier only; the filter also reads ${outside.join(', ')}` };
  const parts = ['model_name = {s_name:String}', 'model_version = {s_version:String}'];
  const params: Record<string, unknown> = { s_name: o.model.name, s_version: o.model.version, ...where.params };
  if (o.endpoint) (parts.push('endpoint = {s_endpoint:String}'), (params.s_endpoint = o.endpoint));
  if (o.since !== undefined) (parts.push("minute >= toStartOfMinute({s_since:DateTime64(3, 'UTC')})"), (params.s_since = chTime(o.since)));
  if (o.until !== undefined) (parts.push("minute < {s_until:DateTime64(3, 'UTC')}"), (params.s_until = chTime(o.until)));
  if (where.sql !== '1') parts.push(where.sql);
  return { sql: parts.join(' AND '), params };
}

/** Deployment history of the endpoints a model served, walked in order into serving windows. */
export async function deploymentWindows(q: AuditQuery, m: ModelId, endpoint?: string): Promise<DeploymentWindow[]> {
  const ref = modelRef(m);
  const events = await q(
    `SELECT toString(action) AS action, endpoint, environment, model_ref, previous_model_ref, traffic_share, ts
     FROM v_deployments
     WHERE endpoint IN (SELECT endpoint FROM v_deployments WHERE model_ref = {ref:String} OR previous_model_ref = {ref:String})
       ${endpoint ? 'AND endpoint = {endpoint:String}' : ''}
     ORDER BY endpoint, ts, event_id`,
    endpoint ? { ref, endpoint } : { ref },
  );
  const windows: DeploymentWindow[] = [];
  // One serving history per endpoint and environment: staging deploying 2.6.0 on an endpoint of
  // the same name once closed prod's canary window. Events that named no environment belong to
  // every named environment's history (see servingNow), or make one of their own when none is named.
  const byEndpoint = new Map<string, Row[]>();
  const named = new Map<string, Set<string>>();
  for (const e of events) {
    const env = String(e.environment ?? '');
    if (env) (named.get(String(e.endpoint)) ?? named.set(String(e.endpoint), new Set()).get(String(e.endpoint))!).add(env);
  }
  for (const e of events) {
    const env = String(e.environment ?? '');
    const envs = env ? [env] : [...(named.get(String(e.endpoint)) ?? [''])];
    for (const x of envs) {
      const k = `${String(e.endpoint)}\u0000${x}`;
      byEndpoint.set(k, [...(byEndpoint.get(k) ?? []), e]);
    }
  }
  for (const [k, list] of byEndpoint) {
    const [ep, environment] = k.split('\u0000') as [string, string];
    // serving: model ref → share; a canary takes its share from the others.
    let serving = new Map<string, number>();
    let open: DeploymentWindow | undefined;
    for (const e of list) {
      const target = String(e.model_ref);
      const share = num(e.traffic_share);
      const action = String(e.action);
      if (action === 'canary') {
        const rest = Math.max(0, 1 - share);
        const total = [...serving.entries()].filter(([k]) => k !== target).reduce((s, [, v]) => s + v, 0);
        const next = new Map<string, number>();
        for (const [k, v] of serving) if (k !== target) next.set(k, total > 0 ? (v / total) * rest : 0);
        next.set(target, share);
        serving = next;
      } else {
        // deploy at full share or rollback: the target takes the endpoint (a partial deploy is a canary).
        serving = share >= 1 || action === 'rollback' ? new Map([[target, 1]]) : new Map([...serving, [target, share]]);
      }
      const now = serving.get(ref);
      const ts = String(e.ts);
      if (open && (now === undefined || now !== open.share)) {
        open.to = ts;
        open = undefined;
      }
      if (now !== undefined && !open) {
        open = { endpoint: ep, environment, from: ts, to: null, share: now, action };
        windows.push(open);
      }
    }
  }
  return windows;
}

export async function computeScope(q: AuditQuery, o: ScopeOptions): Promise<ScopeResult> {
  const pred = scopePredicate(o); // validates the filter before anything is asked
  await assertKnownModel(q, o.model, 'scope');
  const counts = countsPredicate(o);
  // One pass each over the stored decisions and the counts, by decision and endpoint; the
  // totals per decision and per endpoint are summed here.
  const [sampledByDE, countsByDE, windows] = await Promise.all([
    q(
      `SELECT decision, endpoint, count() AS sampled, sum(weight) AS weighted, toString(min(ts)) AS first, toString(max(ts)) AS last
       FROM v_decisions WHERE ${pred.sql} GROUP BY decision, endpoint`,
      pred.params,
    ),
    'unsupported' in counts
      ? Promise.resolve(undefined)
      : q(`SELECT decision, endpoint, sum(total) AS exact FROM v_decision_totals WHERE ${counts.sql} GROUP BY decision, endpoint`, counts.params),
    deploymentWindows(q, o.model, o.endpoint),
  ]);
  const sumBy = (rows: Row[], key: string, cols: string[]): Row[] => {
    const m = new Map<string, Row>();
    for (const r of rows) {
      const k = String(r[key]);
      const acc = m.get(k) ?? { [key]: k, first: r.first, last: r.last };
      for (const c of cols) acc[c] = num(acc[c] ?? 0) + num(r[c]);
      if (r.first !== undefined && String(r.first) < String(acc.first)) acc.first = r.first;
      if (r.last !== undefined && String(r.last) > String(acc.last)) acc.last = r.last;
      m.set(k, acc);
    }
    return [...m.values()];
  };
  const sampledRows = sumBy(sampledByDE, 'decision', ['sampled', 'weighted']);
  const endpointRows = sumBy(sampledByDE, 'endpoint', ['sampled', 'weighted']);
  const countRows = countsByDE ? sumBy(countsByDE, 'decision', ['exact']) : undefined;
  const countEndpointRows = countsByDE ? sumBy(countsByDE, 'endpoint', ['exact']) : undefined;
  const exactBy = new Map((countRows ?? []).map((r) => [String(r.decision), num(r.exact)]));
  const decisions = new Set([...sampledRows.map((r) => String(r.decision)), ...[...exactBy].filter(([, n]) => n > 0).map(([d]) => d)]);
  const byDecision: ScopeBreakdown[] = [...decisions].map((d) => {
    const s = sampledRows.find((r) => String(r.decision) === d);
    return { decision: d, exact: countRows ? (exactBy.get(d) ?? 0) : null, sampled: s ? num(s.sampled) : 0, weighted: s ? num(s.weighted) : 0 };
  });
  byDecision.sort((a, b) => (b.exact ?? b.weighted) - (a.exact ?? a.weighted) || a.decision.localeCompare(b.decision));
  const exactByEndpoint = new Map((countEndpointRows ?? []).map((r) => [String(r.endpoint), num(r.exact)]));
  const endpointNames = new Set([...endpointRows.map((r) => String(r.endpoint)), ...[...exactByEndpoint].filter(([, n]) => n > 0).map(([e]) => e)]);
  const firsts = sampledRows.map((r) => fromChTime(r.first)).filter(Number.isFinite);
  const lasts = sampledRows.map((r) => fromChTime(r.last)).filter(Number.isFinite);
  const exact = countRows ? byDecision.reduce((s, b) => s + (b.exact ?? 0), 0) : null;
  let exactNote: string | null = 'unsupported' in counts ? counts.unsupported : null;
  if (!exactNote && (o.since !== undefined || o.until !== undefined)) exactNote = 'exact counts are per minute: the window is widened to whole minutes';
  return {
    model: modelLabel(o.model),
    filters: {
      endpoint: o.endpoint ?? null,
      since: o.since !== undefined ? new Date(o.since).toISOString() : null,
      until: o.until !== undefined ? new Date(o.until).toISOString() : null,
      where: o.where ?? null,
    },
    exact,
    exactNote,
    sampled: byDecision.reduce((s, b) => s + b.sampled, 0),
    weighted: byDecision.reduce((s, b) => s + b.weighted, 0),
    first: firsts.length ? new Date(Math.min(...firsts)).toISOString() : null,
    last: lasts.length ? new Date(Math.max(...lasts)).toISOString() : null,
    endpoints: [...endpointNames].sort().map((e) => ({
      endpoint: e,
      exact: countEndpointRows ? (exactByEndpoint.get(e) ?? 0) : null,
      sampled: num(endpointRows.find((r) => String(r.endpoint) === e)?.sampled ?? 0),
      weighted: num(endpointRows.find((r) => String(r.endpoint) === e)?.weighted ?? 0),
    })),
    windows,
    byDecision,
  };
}

export function isEmptyScope(s: ScopeResult): boolean {
  return (s.exact ?? 0) === 0 && s.sampled === 0;
}

/**
 * Why `written` stored decisions fall short of the exact count, for the line after an export or
 * a remediation. Only sampling explains it when the counts cover the window itself; with
 * --since/--until between minutes, the counts cover whole minutes around it, so part of the
 * difference is decisions outside the window.
 */
export function shortfallNote(s: Pick<ScopeResult, 'exact' | 'exactNote'>, written: number): string {
  if (s.exact === null || s.exact <= written) return '';
  const more = s.exact - written;
  return s.exactNote
    ? `${more} more are counted for the whole minutes around the window: sampled out (counted, not stored), or outside --since/--until`
    : `${more} more were sampled out: counted, not stored`;
}

/** What to say when nothing matched: the filters, and how to widen them. */
export function emptyScopeMessage(s: ScopeResult, known: { first: string; last: string } | undefined): string {
  const f = s.filters;
  const lines = [`No decisions of ${s.model} match this scope.`];
  if (known) lines.push(`${s.model} made decisions from ${known.first} to ${known.last} (UTC).`);
  if (f.since || f.until) lines.push(`Widen the window: drop --since/--until, or e.g. --since ${known ? known.first.replace(' ', 'T') + 'Z' : '7d'}.`);
  if (f.endpoint) lines.push(`Drop --endpoint ${f.endpoint} to see every endpoint (${s.windows.map((w) => w.endpoint).filter((e, i, a) => a.indexOf(e) === i).join(', ') || 'none recorded'}).`);
  if (f.where) lines.push(`Loosen --where ${JSON.stringify(f.where)}.`);
  return lines.join('\n');
}

export function formatScope(s: ScopeResult): string {
  const out: string[] = [];
  const f = s.filters;
  const filt = [f.endpoint && `endpoint ${f.endpoint}`, f.since && `since ${f.since}`, f.until && `until ${f.until}`, f.where && `where ${f.where}`].filter(Boolean).join(', ');
  out.push(`Scope of ${s.model}${filt ? ` (${filt})` : ''}`);
  out.push('');
  out.push(`  decisions (exact)     ${s.exact === null ? 'n/a' : s.exact}${s.exactNote ? `   (${s.exactNote})` : ''}`);
  out.push(`  stored (sampled)      ${s.sampled}`);
  out.push(`  weighted estimate     ${fmt(s.weighted, 1)}`);
  out.push(`  first .. last         ${s.first ?? '-'} .. ${s.last ?? '-'}`);
  // Without exact counts, an endpoint's figure is the weighted estimate, like the total above.
  out.push(`  endpoints             ${s.endpoints.map((e) => `${e.endpoint} (${e.exact ?? `~${fmt(e.weighted, 1)}`})`).join(', ') || '-'}`);
  out.push('');
  out.push('Deployment windows:');
  if (s.windows.length === 0) out.push('  none recorded (record them with dlog deploy)');
  for (const w of s.windows) out.push(`  ${(w.environment ? `${w.endpoint} (${w.environment})` : w.endpoint).padEnd(20)} ${w.from} .. ${w.to ?? 'still serving'}  share ${fmt(w.share * 100, 1)}%  (${w.action})`);
  out.push('');
  out.push('By decision:');
  const rows = s.byDecision.map((b) => ({ decision: b.decision, exact: b.exact === null ? 'n/a' : String(b.exact), sampled: String(b.sampled), weighted: fmt(b.weighted, 1) }));
  const w = { decision: Math.max(8, ...rows.map((r) => r.decision.length)), exact: Math.max(5, ...rows.map((r) => r.exact.length)), sampled: 7 };
  out.push(`  ${'decision'.padEnd(w.decision)}  ${'exact'.padStart(w.exact)}  ${'sampled'.padStart(w.sampled)}  weighted`);
  for (const r of rows) out.push(`  ${r.decision.padEnd(w.decision)}  ${r.exact.padStart(w.exact)}  ${r.sampled.padStart(w.sampled)}  ${r.weighted}`);
  return out.join('\n') + '\n';
}

/** Columns of an exported scope: enough to find, re-run and remediate each decision. */
export const exportColumns = ['event_id', 'request_id', 'ts', 'endpoint', 'decision', 'confidence', 'weight', 'input_hash', 'trace_id'] as const;

/**
 * The stored decisions of a scope, page by page on (ts, event_id), so an export of millions stays
 * within the query endpoint's row limit and the process's memory.
 */
export async function* scopeDecisions(q: AuditQuery, o: ScopeOptions, pageSize = 50_000): AsyncGenerator<Row[]> {
  const pred = scopePredicate(o);
  let after: { ts: string; id: string } | undefined;
  for (;;) {
    const rows = await q(
      `SELECT event_id, request_id, ts, endpoint, decision, confidence, weight, input_hash, trace_id
       FROM v_decisions WHERE ${pred.sql}
       ${after ? "AND (ts, event_id) > ({p_ts:DateTime64(3, 'UTC')}, {p_id:String})" : ''}
       ORDER BY ts, event_id LIMIT {p_limit:UInt32}`,
      { ...pred.params, p_limit: pageSize, ...(after ? { p_ts: after.ts, p_id: after.id } : {}) },
    );
    if (rows.length > 0) yield rows;
    if (rows.length < pageSize) return;
    const last = rows[rows.length - 1]!;
    after = { ts: chTime(fromChTime(last.ts)), id: String(last.event_id) };
  }
}


