import { AuditInputError, assertKnownModel, chTime, fmt, fromChTime, modelLabel, modelRef, num, TruncatedAnswerError, type AuditQuery, type ModelId, type Row } from './audit-query.js';
import { lineageEdges, namedRefsSql, unknownArtifact } from './lineage.js';
import { oneLine } from './csv.js';
import { decisionRetention, type TierRetention } from './retention.js';
import { compileWhere, countColumns } from './where-filter.js';

/**
 * `dlog scope`: what a model version, or every model version downstream of an artifact, decided,
 * over which window and endpoints. Exact totals come from the gate's counts (sampling never hides
 * a decision there); the stored, sampled decisions give the weighted estimate and the ids to
 * remediate. The windows come from deployment events.
 *
 * Every figure is computed by the engine over the whole scope. The query path cuts an answer at
 * 100,000 rows or 64 MiB, and audit queries throw on a cut answer (TruncatedAnswerError), so
 * nothing here asks for an answer that can grow with the data: the breakdowns are the top rows and
 * a line for the rest, totals have queries of their own, and the export pages by size.
 */

/** The filters every scope takes, on top of what it is the scope of. */
export interface ScopeFilters {
  endpoint?: string | undefined;
  since?: number | undefined;
  until?: number | undefined;
  where?: string | undefined;
}

/** The scope of one model version (`--model`). */
export interface ScopeOptions extends ScopeFilters {
  model: ModelId;
}

/**
 * The scope of an artifact (`--artifact`): every decision whose own record names it (as its
 * model, image, config, preprocessing or environment, or as an ancestor in its lineage), and
 * every decision that names an artifact registered downstream of it, when the decision was
 * made or since.
 */
export interface ArtifactScopeOptions extends ScopeFilters {
  artifact: string;
}

export type ScopeRequest = ScopeOptions | ArtifactScopeOptions;

export const isArtifactScope = (o: ScopeRequest): o is ArtifactScopeOptions => 'artifact' in o && typeof o.artifact === 'string';

/** An artifact's ref as typed: any ref the registry or a decision may hold, but one word. */
export function parseArtifactRef(text: string): string {
  const ref = text.trim();
  if (ref === '' || /\s/.test(ref)) {
    throw new AuditInputError(`--artifact takes an artifact's ref (got ${JSON.stringify(text)}), e.g. --artifact registry://datasets/loan-applications:v5; dlog lineage <ref> shows what is registered around it.`);
  }
  return ref;
}

/**
 * A scope with what it covers worked out, so the counts, the export and a remediation all select
 * the same decisions (a registration arriving between them must not change the set).
 */
export interface ResolvedScope {
  request: ScopeRequest;
  /** What the scope is of, as people name it: name:version, or the artifact's ref. */
  label: string;
  /** Model versions every decision of which is in scope: the exact counts apply to them. */
  whole: ModelId[];
  /** Model versions only some decisions of which are in scope: those naming one of `refs`. */
  partial: ModelId[];
  /** The artifact and every artifact registered downstream of it; empty for a model's scope. */
  refs: string[];
}

const isResolved = (o: ScopeRequest | ResolvedScope): o is ResolvedScope => 'request' in o;

/** Counts of one line of a scope: exact from the counts (null where they cannot say), stored, and weighted estimate. */
export interface ScopeCounts {
  /** null: the counts cannot answer (a filter on a column they do not keep, or not whole model versions). */
  exact: number | null;
  sampled: number;
  weighted: number;
}

export interface ScopeBreakdown extends ScopeCounts {
  decision: string;
}

export interface ScopeEndpoint extends ScopeCounts {
  endpoint: string;
}

export interface ScopeVersion extends ScopeCounts {
  model: string;
  /** Every decision of the version is in scope; else only those naming the artifact or one downstream of it. */
  whole: boolean;
}

/** What a capped breakdown leaves out: how many lines, and their sums. */
export interface ScopeRest extends ScopeCounts {
  lines: number;
}

export interface DeploymentWindow {
  /** The model version (name:version) the window is of. */
  model: string;
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
  /** What the scope is of: name:version (--model) or the artifact's ref (--artifact). */
  label: string;
  /** The model version of a --model scope. */
  model: string | null;
  /** The artifact of an --artifact scope. */
  artifact: string | null;
  /** Artifacts registered downstream of the artifact (its descendants), whose decisions are in scope too. */
  downstream: string[];
  filters: { endpoint: string | null; since: string | null; until: string | null; where: string | null };
  exact: number | null;
  exactNote: string | null;
  sampled: number;
  weighted: number;
  first: string | null;
  last: string | null;
  /** Model versions with decisions in an --artifact scope, most decisions first (empty for --model). */
  versions: ScopeVersion[];
  versionsRest: ScopeRest | null;
  /** Per endpoint: exact when the counts can answer the filter, else stored and their weighted estimate. */
  endpoints: ScopeEndpoint[];
  endpointsRest: ScopeRest | null;
  windows: DeploymentWindow[];
  /** Most decided first, up to the breakdown limit; `byDecisionRest` sums the others. */
  byDecision: ScopeBreakdown[];
  byDecisionRest: ScopeRest | null;
  /**
   * Counted decisions of the scope older than their tier's retention: the decisions table's TTL
   * may have deleted their records, while the counts keep them. Empty when the window reaches
   * past no retention, or the scope has no exact count.
   */
  pastRetention: (TierRetention & { decisions: number })[];
}

/**
 * Lines a breakdown shows. Free-text decisions (generated answers, recommended items) make a
 * line each: the top ones say what the scope decided, the rest is one line of sums. Far below
 * the query path's 100,000 rows, and small enough to read.
 */
export const defaultBreakdownLines = 25;

const prefixModels = 'registry://models/';

/** name:version from a model's registry ref; undefined for any other ref. */
function modelOfRef(ref: string): ModelId | undefined {
  if (!ref.startsWith(prefixModels)) return undefined;
  const s = ref.slice(prefixModels.length);
  // At the first colon, as parseModel: a model's name cannot hold one, a version may.
  const i = s.indexOf(':');
  return i > 0 && i < s.length - 1 ? { name: s.slice(0, i), version: s.slice(i + 1) } : undefined;
}

/** Model versions as a bound set: `(model_name, model_version) IN` it reads only their granules (they lead the sorting key). */
function versionSet(param: string, models: ModelId[], params: Record<string, unknown>): string {
  params[`${param}_n`] = models.map((m) => m.name);
  params[`${param}_v`] = models.map((m) => m.version);
  return `arrayZip({${param}_n:Array(String)}, {${param}_v:Array(String)})`;
}

/**
 * A decision names one of the bound refs: as its image, config, preprocessing or environment
 * (its own columns, which also hold refs unknown when it was enriched), or among the ancestors
 * its record keeps (`lineage.ref`: what the registry said when it was enriched). Its `artifacts`
 * column is not read: the enricher fills it from those same columns and the model (decisionRefs
 * in services/enricher), and a model in scope is taken whole; reading it took 0.85 s over 5 million
 * decisions, the columns 0.15 s.
 */
function namesArtifactSql(param: string): string {
  return `(${namedRefsSql.names(param)} OR hasAny(lineage.ref, {${param}:Array(String)}))`;
}

/** endpoint, since, until and --where, over a table or view with the decisions' columns. */
function filterParts(o: ScopeFilters, parts: string[], params: Record<string, unknown>): void {
  const where = compileWhere(o.where);
  Object.assign(params, where.params);
  if (o.endpoint) (parts.push('endpoint = {s_endpoint:String}'), (params.s_endpoint = o.endpoint));
  if (o.since !== undefined) (parts.push("ts >= {s_since:DateTime64(3, 'UTC')}"), (params.s_since = chTime(o.since)));
  if (o.until !== undefined) (parts.push("ts < {s_until:DateTime64(3, 'UTC')}"), (params.s_until = chTime(o.until)));
  if (where.sql !== '1') parts.push(where.sql);
}

/** Model versions, as the first condition: one by equality, several as a bound set; either way only their granules are read. */
function versionsSql(param: string, models: ModelId[], params: Record<string, unknown>): string {
  if (models.length !== 1) return `(model_name, model_version) IN ${versionSet(param, models, params)}`;
  params[`${param}_name`] = models[0]!.name;
  params[`${param}_version`] = models[0]!.version;
  return `model_name = {${param}_name:String} AND model_version = {${param}_version:String}`;
}

/**
 * The bound SQL predicate over v_decisions for a scope (parameters prefixed s_ and w), or for
 * the part of it that is one of its model versions. The versions come first, on the sorting key:
 * v_decisions passes a filter on its key below its deduplication, so only their granules are
 * read, and the test of what a decision names runs only on versions partly in scope.
 */
export function scopePredicate(o: ScopeOptions | ResolvedScope, only?: ModelId): { sql: string; params: Record<string, unknown> } {
  const r: ResolvedScope = isResolved(o) ? o : { request: o, label: modelLabel(o.model), whole: [o.model], partial: [], refs: [] };
  const same = (a: ModelId) => (b: ModelId) => a.name === b.name && a.version === b.version;
  const whole = only ? r.whole.filter(same(only)) : r.whole;
  const partial = only ? r.partial.filter(same(only)) : r.partial;
  const params: Record<string, unknown> = {};
  const parts = [versionsSql('s', [...whole, ...partial], params)];
  if (partial.length > 0) {
    params.s_refs = r.refs;
    parts.push(whole.length > 0 ? `((model_name, model_version) IN ${versionSet('s_whole', whole, params)} OR ${namesArtifactSql('s_refs')})` : namesArtifactSql('s_refs'));
  }
  filterParts(r.request, parts, params);
  return { sql: parts.join(' AND '), params };
}

/**
 * The predicate over the counts (decision_counts) for the same scope, over `models` (whole
 * versions only: the counts know no image or preprocessing). Counts keep one row per minute, so a window is
 * counted in whole minutes: since rounds down, until rounds up. The note says so when it matters.
 */
function countsPredicate(o: ScopeFilters, models: ModelId[]): { sql: string; params: Record<string, unknown> } | { unsupported: string } {
  const where = compileWhere(o.where, 'c');
  const outside = where.columns.filter((c) => !countColumns.has(c));
  if (outside.length > 0) return { unsupported: `exact counts keep decision, endpoint, decision_type and tier only; the filter also reads ${outside.join(', ')}` };
  const params: Record<string, unknown> = { ...where.params };
  const parts = [versionsSql('c', models, params)];
  if (o.endpoint) (parts.push('endpoint = {c_endpoint:String}'), (params.c_endpoint = o.endpoint));
  if (o.since !== undefined) (parts.push("minute >= toStartOfMinute({c_since:DateTime64(3, 'UTC')})"), (params.c_since = chTime(o.since)));
  if (o.until !== undefined) (parts.push("minute < {c_until:DateTime64(3, 'UTC')}"), (params.c_until = chTime(o.until)));
  if (where.sql !== '1') parts.push(where.sql);
  return { sql: parts.join(' AND '), params };
}

/**
 * Levels of the registry walked downstream: far past any real lineage (the enricher records 32
 * generations of ancestors); a cycle ends the walk sooner, as no ref is walked twice.
 */
const maxDescendantLevels = 1_000;

/** The artifact and every artifact registered downstream of it (kept registrations, as `dlog lineage` walks them). */
async function withDescendants(q: AuditQuery, root: string): Promise<string[]> {
  const seen = new Set([root]);
  let frontier = [root];
  for (let level = 0; frontier.length > 0; level++) {
    if (level === maxDescendantLevels) throw new AuditInputError(`The registry's graph below ${root} is deeper than ${maxDescendantLevels} levels; check it with dlog lineage ${root}.`);
    const next: string[] = [];
    for (const { child } of await lineageEdges(q, 'down', frontier)) if (!seen.has(child)) (seen.add(child), next.push(child));
    frontier = next;
  }
  return [...seen];
}

/**
 * What a scope covers. A model's is the version itself. An artifact's: the artifact and its
 * descendants in the registry; the model versions among them are in scope whole; any other
 * version is in scope for those of its decisions that name one of them, found by one pass over
 * the decisions in the window (the only query that reads every version); every later query reads
 * the versions found, on the sorting key.
 */
export async function resolveScope(q: AuditQuery, o: ScopeRequest): Promise<ResolvedScope> {
  compileWhere(o.where); // a bad filter is reported before anything is asked
  if (!isArtifactScope(o)) return { request: o, label: modelLabel(o.model), whole: [o.model], partial: [], refs: [] };
  const root = parseArtifactRef(o.artifact);
  const refs = await withDescendants(q, root);
  // The refs go with every query as a bound parameter: the query endpoint takes a request of up
  // to 1 MB, a server its parameters in a URL of up to 1 MiB. Thousands of refs fit.
  if (refs.reduce((n, x) => n + x.length + 3, 0) > 512 * 1024) {
    throw new AuditInputError(`${refs.length - 1} artifacts are registered downstream of ${root}: too many to send with each query. Scope the artifacts built from it one by one (dlog lineage ${root} lists them).`);
  }
  const whole = refs.map(modelOfRef).filter((m): m is ModelId => m !== undefined);
  const params: Record<string, unknown> = { s_refs: refs };
  const parts = [namesArtifactSql('s_refs')];
  filterParts(o, parts, params);
  // The table, not v_decisions: which versions have such decisions does not depend on duplicates,
  // and the view would deduplicate every decision of the window before the test. The whole
  // versions are left out here, not in the SQL: a NOT IN on them skipped no granule and took
  // 0.7 s more over 5 million decisions.
  const found = await q(`SELECT model_name, model_version FROM decisions WHERE ${parts.join(' AND ')} GROUP BY model_name, model_version ORDER BY model_name, model_version`, params);
  const wholeSet = new Set(whole.map(modelLabel));
  const partial = found.map((r) => ({ name: String(r.model_name), version: String(r.model_version) })).filter((m) => !wholeSet.has(modelLabel(m)));
  if (whole.length === 0 && partial.length === 0 && refs.length === 1) {
    // Nothing registered below it and no decision in the window names it: a typo, or the window.
    const registered = await q('SELECT 1 AS ok FROM v_artifacts WHERE ref = {ref:String} LIMIT 1', { ref: root });
    const named = registered.length > 0 ? registered : await q(`SELECT 1 AS ok FROM decisions WHERE ${namesArtifactSql('s_refs')} LIMIT 1`, { s_refs: [root] });
    if (named.length === 0) throw await unknownArtifact(q, root, `No artifact ${JSON.stringify(root)} is registered, and no decision names it.`, 'scope --artifact');
  }
  return { request: o, label: root, whole, partial, refs };
}

/** Deployment history of the endpoints a model served, walked in order into serving windows. */
export async function deploymentWindows(q: AuditQuery, m: ModelId, endpoint?: string): Promise<DeploymentWindow[]> {
  return deploymentWindowsOf(q, [m], endpoint);
}

/** The serving windows of each of `models`, from the deployment history of every endpoint any of them served. */
export async function deploymentWindowsOf(q: AuditQuery, models: ModelId[], endpoint?: string): Promise<DeploymentWindow[]> {
  if (models.length === 0) return [];
  const wanted = new Map(models.map((m) => [modelRef(m), modelLabel(m)]));
  const refs = [...wanted.keys()];
  const events = await q(
    `SELECT toString(action) AS action, endpoint, environment, model_ref, previous_model_ref, traffic_share, ts
     FROM v_deployments
     WHERE endpoint IN (SELECT endpoint FROM v_deployments WHERE model_ref IN {refs:Array(String)} OR previous_model_ref IN {refs:Array(String)})
       ${endpoint ? 'AND endpoint = {endpoint:String}' : ''}
     ORDER BY endpoint, ts, event_id`,
    endpoint ? { refs, endpoint } : { refs },
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
    const open = new Map<string, DeploymentWindow>();
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
      // A version left at share 0 (a canary at share 1 took everything) serves nothing: its
      // window closes here, as servingNow leaves it out (it stayed open at 0% for good).
      for (const [k, v] of serving) if (!(v > 0)) serving.delete(k);
      const ts = String(e.ts);
      for (const [ref, model] of wanted) {
        const now = serving.get(ref);
        const w = open.get(ref);
        if (w && (now === undefined || now !== w.share)) (w.to = ts), open.delete(ref);
        if (now !== undefined && !open.has(ref)) {
          const opened: DeploymentWindow = { model, endpoint: ep, environment, from: ts, to: null, share: now, action };
          open.set(ref, opened);
          windows.push(opened);
        }
      }
    }
  }
  return windows;
}

/** The breakdowns of a scope, and the SQL of a line's key in each. */
const lineKeys = {
  decision: 'toString(decision)',
  endpoint: 'toString(endpoint)',
  model: "concat(model_name, ':', model_version)",
} as const;
type LineSet = 'total' | keyof typeof lineKeys;

interface Line {
  key: string;
  exact: number;
  sampled: number;
  weighted: number;
  first: string | null;
  last: string | null;
}

/**
 * The whole scope's totals and the `limit` largest lines of each breakdown, with how many lines
 * each has, in one pass over the stored decisions and one over the counts. Each row is counted
 * once per set it belongs to (ARRAY JOIN), so the totals are an aggregate of their own and the
 * order of a breakdown (by exact count where the counts apply, else by weight) is decided over
 * every line by the engine. `countSets` are the sets the counts can answer.
 */
async function scopeLines(
  q: AuditQuery,
  sets: LineSet[],
  pred: { sql: string; params: Record<string, unknown> },
  counts: { sql: string; params: Record<string, unknown>; sets: LineSet[] } | undefined,
  limit: number,
): Promise<Map<LineSet, { rows: Line[]; lines: number }>> {
  const tagged = (which: LineSet[]) => `[${which.map((x) => `('${x}', ${x === 'total' ? "''" : lineKeys[x]})`).join(', ')}]`;
  const branches = [
    // The counts table, not v_decision_totals: the view groups every row by minute and seven keys
    // before anything is summed (5.5 s over 3 million rows, against 1 s read with FINAL here),
    // and FINAL alone is what keeps a replayed delta from counting twice.
    ...(counts && counts.sets.length > 0
      ? [
          `SELECT sk.1 AS s, sk.2 AS key, toUInt64(sum(kept + dropped)) AS exact, toUInt64(0) AS sampled, toFloat64(0) AS weighted,
                  CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS first, CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS last
           FROM (SELECT decision, endpoint, model_name, model_version, kept, dropped FROM decision_counts FINAL WHERE ${counts.sql})
           ARRAY JOIN ${tagged(counts.sets)} AS sk
           GROUP BY s, key`,
        ]
      : []),
    `SELECT sk.1 AS s, sk.2 AS key, toUInt64(0) AS exact, toUInt64(count()) AS sampled, toFloat64(sum(weight)) AS weighted,
            CAST(min(ts) AS Nullable(DateTime64(3, 'UTC'))) AS first, CAST(max(ts) AS Nullable(DateTime64(3, 'UTC'))) AS last
     FROM (SELECT decision, endpoint, model_name, model_version, weight, ts FROM v_decisions WHERE ${pred.sql})
     ARRAY JOIN ${tagged(sets)} AS sk
     GROUP BY s, key`,
  ];
  const rows = await q(
    `SELECT s, key, exact, sampled, weighted, toString(first) AS first, toString(last) AS last, lines FROM
     (
       SELECT s, key, sum(exact) AS exact, sum(sampled) AS sampled, sum(weighted) AS weighted, min(first) AS first, max(last) AS last,
              count() OVER (PARTITION BY s) AS lines
       FROM (${branches.join('\n UNION ALL \n')})
       GROUP BY s, key HAVING exact > 0 OR sampled > 0
     )
     ORDER BY s, exact DESC, weighted DESC, key
     LIMIT {b_limit:UInt32} BY s`,
    { ...pred.params, ...(counts?.params ?? {}), b_limit: limit },
  );
  const out = new Map<LineSet, { rows: Line[]; lines: number }>(sets.map((x) => [x, { rows: [], lines: 0 }]));
  for (const r of rows) {
    const set = out.get(String(r.s) as LineSet);
    if (!set) continue;
    set.lines = num(r.lines);
    set.rows.push({
      key: String(r.key),
      exact: num(r.exact),
      sampled: num(r.sampled),
      weighted: num(r.weighted),
      first: r.first === null || r.first === undefined ? null : String(r.first),
      last: r.last === null || r.last === undefined ? null : String(r.last),
    });
  }
  return out;
}

/** The line for what a capped breakdown does not show: the totals less the lines shown. */
function restOf(lines: number, shown: ScopeCounts[], total: ScopeCounts): ScopeRest | null {
  if (lines <= shown.length) return null;
  const sum = (f: (c: ScopeCounts) => number) => shown.reduce((s, c) => s + f(c), 0);
  return {
    lines: lines - shown.length,
    exact: total.exact === null ? null : total.exact - sum((c) => c.exact ?? 0),
    sampled: total.sampled - sum((c) => c.sampled),
    // Sums of floats: what is left of the total can come out a hair below 0.
    weighted: Math.max(0, total.weighted - sum((c) => c.weighted)),
  };
}

export async function computeScope(q: AuditQuery, o: ScopeRequest | ResolvedScope, opts: { breakdownLines?: number } = {}): Promise<ScopeResult> {
  const limit = opts.breakdownLines ?? defaultBreakdownLines;
  if (!isResolved(o)) compileWhere(o.where); // validates the filter before anything is asked
  const request = isResolved(o) ? o.request : o;
  if (!isArtifactScope(request)) await assertKnownModel(q, request.model, 'scope');
  const r = isResolved(o) ? o : await resolveScope(q, o);
  const artifact = isArtifactScope(request);
  const models = [...r.whole, ...r.partial];
  const pred = scopePredicate(r);
  // Exact counts are kept per model version: they answer the scope's totals and breakdowns only
  // when it is made of whole versions, and the lines of the whole versions in any case.
  const counts = r.whole.length > 0 ? countsPredicate(request, r.whole) : undefined;
  const countable = counts && !('unsupported' in counts) ? counts : undefined;
  const sets: LineSet[] = artifact ? ['total', 'decision', 'endpoint', 'model'] : ['total', 'decision', 'endpoint'];
  const countSets: LineSet[] = !countable ? [] : r.partial.length > 0 ? ['model'] : sets;
  const scopeExact = countable !== undefined && r.partial.length === 0;
  const [lines, windows, retention] = await Promise.all([
    models.length > 0 ? scopeLines(q, sets, pred, countable ? { ...countable, sets: countSets } : undefined, limit) : Promise.resolve(undefined),
    deploymentWindowsOf(q, models, request.endpoint),
    scopeExact ? decisionRetention(q) : Promise.resolve([]),
  ]);
  const pastRetention = scopeExact && countable ? await countedPastRetention(q, countable, retention, request.since) : [];
  const totalLine = lines?.get('total')?.rows[0];
  const total: ScopeCounts = { exact: scopeExact || (artifact && models.length === 0) ? (totalLine?.exact ?? 0) : null, sampled: totalLine?.sampled ?? 0, weighted: totalLine?.weighted ?? 0 };
  let exactNote: string | null = null;
  if (r.partial.length > 0) {
    exactNote = `exact counts are per model version, and ${r.partial.length === 1 ? 'one version is in scope for some of its decisions' : `${r.partial.length} versions are in scope for some of their decisions`} only (see below): stored decisions and their weighted estimate`;
  } else if (counts && 'unsupported' in counts) {
    exactNote = counts.unsupported;
  } else if (offMinute(request.since) || offMinute(request.until)) {
    exactNote = 'exact counts are per minute: the window is widened to whole minutes';
  }
  const wholeLabels = new Set(r.whole.map(modelLabel));
  const countsOf = (x: Line, exact: boolean): ScopeCounts => ({ exact: exact ? x.exact : null, sampled: x.sampled, weighted: x.weighted });
  const set = (k: LineSet) => lines?.get(k) ?? { rows: [], lines: 0 };
  const byDecision = set('decision').rows.map((x) => ({ decision: x.key, ...countsOf(x, scopeExact) }));
  const byEndpoint = set('endpoint').rows.map((x) => ({ endpoint: x.key, ...countsOf(x, scopeExact) }));
  const versions = set('model').rows.map((x) => ({ model: x.key, whole: wholeLabels.has(x.key), ...countsOf(x, countable !== undefined && wholeLabels.has(x.key)) }));
  return {
    label: r.label,
    model: artifact ? null : r.label,
    artifact: artifact ? r.label : null,
    downstream: r.refs.slice(1),
    filters: {
      endpoint: request.endpoint ?? null,
      since: request.since !== undefined ? new Date(request.since).toISOString() : null,
      until: request.until !== undefined ? new Date(request.until).toISOString() : null,
      where: request.where ?? null,
    },
    exact: total.exact,
    exactNote,
    sampled: total.sampled,
    weighted: total.weighted,
    first: totalLine?.first ? new Date(fromChTime(totalLine.first)).toISOString() : null,
    last: totalLine?.last ? new Date(fromChTime(totalLine.last)).toISOString() : null,
    versions,
    // The rest of the versions mixes whole and partial ones: no exact count for it.
    versionsRest: restOf(set('model').lines, versions, { ...total, exact: null }),
    endpoints: byEndpoint.sort((a, b) => a.endpoint.localeCompare(b.endpoint)),
    endpointsRest: restOf(set('endpoint').lines, byEndpoint, total),
    windows,
    byDecision,
    byDecisionRest: restOf(set('decision').lines, byDecision, total),
    pastRetention,
  };
}

/** A window edge the counts' minutes do not fall on: they widen it (countsPredicate). */
const offMinute = (t: number | undefined) => t !== undefined && t % 60_000 !== 0;

/**
 * The scope's counted decisions older than their tier's retention, per tier: those whose records
 * the decisions table's TTL may have deleted. A tier is asked about only when the window reaches
 * back past its retention. The counts are per minute, so a minute straddling the cut-off counts
 * as older: an upper bound, which "may have expired" allows.
 */
async function countedPastRetention(
  q: AuditQuery,
  counts: { sql: string; params: Record<string, unknown> },
  retention: TierRetention[],
  since: number | undefined,
  now = Date.now(),
): Promise<(TierRetention & { decisions: number })[]> {
  const reached = retention.map((r) => ({ ...r, before: now - r.days * 86_400_000 })).filter((r) => since === undefined || since < r.before);
  if (reached.length === 0) return [];
  const params: Record<string, unknown> = { ...counts.params };
  const older = reached.map((r, i) => {
    params[`r${i}_tier`] = r.tier;
    params[`r${i}_before`] = chTime(r.before);
    return `(tier = {r${i}_tier:String} AND minute < {r${i}_before:DateTime64(3, 'UTC')})`;
  });
  const rows = await q(
    // Kept only: what was sampled out was never stored, so it cannot have expired.
    `SELECT toString(tier) AS tier, toUInt64(sum(kept)) AS decisions FROM decision_counts FINAL WHERE ${counts.sql} AND (${older.join(' OR ')}) GROUP BY tier`,
    params,
  );
  return reached
    .map((r) => ({ tier: r.tier, days: r.days, decisions: num(rows.find((x) => String(x.tier) === r.tier)?.decisions ?? 0) }))
    .filter((r) => r.decisions > 0);
}

export function isEmptyScope(s: ScopeResult): boolean {
  return (s.exact ?? 0) === 0 && s.sampled === 0;
}

/**
 * Why `written` stored decisions fall short of the exact count, for the line after an export or
 * a remediation. Sampling explains it, and expiry where the window reaches past a tier's
 * retention (the counts outlive the records). With --since/--until between minutes, the counts
 * cover whole minutes around the window, so part of the difference is decisions outside it.
 */
export function shortfallNote(s: Pick<ScopeResult, 'exact' | 'exactNote'> & Partial<Pick<ScopeResult, 'pastRetention'>>, written: number): string {
  if (s.exact === null || s.exact <= written) return '';
  const more = s.exact - written;
  const past = s.pastRetention ?? [];
  if (past.length === 0) {
    return s.exactNote
      ? `${more} more are counted for the whole minutes around the window: sampled out (counted, not stored), or outside --since/--until`
      : `${more} more were sampled out: counted, not stored`;
  }
  const older = past.reduce((n, t) => n + t.decisions, 0);
  const kept = past.map((t) => `${t.tier}-tier decisions are kept ${t.days} days`).join(', ');
  const why = `(${kept}, and ${older} counted here ${older === 1 ? 'is' : 'are'} older)`;
  const outside = s.exactNote ? ' or are outside --since/--until' : '';
  return older >= more
    ? `${more} more are counted but not stored: they may have expired ${why}, or were sampled out${outside}`
    : `${more} more are counted but not stored: up to ${older} may have expired ${why}; the others were sampled out${outside}`;
}

/**
 * What a model version has, for the message of an empty scope: its endpoints and most common
 * decisions, from the exact counts with none of the scope's filters (one of which matched
 * nothing). Each list is the top `limit`, with how many lines it has.
 */
export interface ScopeHints {
  endpoints: { name: string; decisions: number }[];
  endpointLines: number;
  decisions: { name: string; decisions: number }[];
  decisionLines: number;
}

export async function scopeHints(q: AuditQuery, o: ScopeRequest, limit = 8): Promise<ScopeHints | undefined> {
  // An artifact's scope spans versions partly in scope, which the counts cannot single out.
  if (isArtifactScope(o)) return undefined;
  const params: Record<string, unknown> = { h_limit: limit };
  const rows = await q(
    `SELECT s, key, decisions, lines FROM
     (
       SELECT s, key, sum(n) AS decisions, count() OVER (PARTITION BY s) AS lines
       FROM
       (
         SELECT sk.1 AS s, sk.2 AS key, kept + dropped AS n
         FROM (SELECT endpoint, decision, kept, dropped FROM decision_counts FINAL WHERE ${versionsSql('h', [o.model], params)})
         ARRAY JOIN [('endpoint', toString(endpoint)), ('decision', toString(decision))] AS sk
       )
       GROUP BY s, key HAVING decisions > 0
     )
     ORDER BY s, decisions DESC, key
     LIMIT {h_limit:UInt32} BY s`,
    params,
  );
  const of = (set: string) => rows.filter((r) => r.s === set);
  const list = (set: string) => of(set).map((r) => ({ name: String(r.key), decisions: num(r.decisions) }));
  return { endpoints: list('endpoint'), endpointLines: num(of('endpoint')[0]?.lines ?? 0), decisions: list('decision'), decisionLines: num(of('decision')[0]?.lines ?? 0) };
}

/** A list of hints for a message line: `ep (12), rec (3), … 4 more`. Decisions are free text: quoted when not one plain word. */
function hintList(items: { name: string; decisions: number }[], lines: number): string {
  const shown = items.map((x) => `${/^[\w.:@/-]+$/.test(x.name) ? x.name : JSON.stringify(x.name).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`)} (${x.decisions})`);
  return `${shown.join(', ')}${lines > items.length ? `, … ${lines - items.length} more` : ''}`;
}

/** What to say when nothing matched: the filters, and how to widen them. */
export function emptyScopeMessage(s: ScopeResult, known: { first: string; last: string } | undefined, hints?: ScopeHints): string {
  const f = s.filters;
  const lines = [
    s.artifact === null
      ? `No decisions of ${s.label} match this scope.`
      : `No decision names ${s.label}${s.downstream.length ? ` or any of the ${s.downstream.length} artifacts registered downstream of it` : ''} in this scope.`,
  ];
  if (known) lines.push(`${s.label} made decisions from ${known.first} to ${known.last} (UTC).`);
  if (f.since || f.until) lines.push(`Widen the window: drop --since/--until, or e.g. --since ${known ? known.first.replace(' ', 'T') + 'Z' : '7d'}.`);
  // What exists is listed without the filters: asked with them (the scope's deployment windows
  // on --endpoint nope), the list said "none recorded" of a version that served two endpoints.
  if (f.endpoint) lines.push(`Drop --endpoint ${f.endpoint} to see every endpoint${hints?.endpoints.length ? `; ${s.label} decided on ${hintList(hints.endpoints, hints.endpointLines)} (all time)` : ''}.`);
  if (f.where) lines.push(`Loosen --where ${JSON.stringify(f.where)}${hints?.decisions.length ? `; ${s.label}'s most common decisions are ${hintList(hints.decisions, hints.decisionLines)} (all time)` : ''}.`);
  if (s.artifact !== null && !f.since && !f.until && !f.endpoint && !f.where) lines.push(`See what is registered around it: dlog lineage ${s.label}`);
  return lines.join('\n');
}

/** A table of lines with exact, sampled and weighted columns, and the line for the rest. */
function countsTable(head: string, rows: { name: string; exact: number | null; sampled: number; weighted: number; extra?: string }[], rest: ScopeRest | null, noun: string, extraHead?: string): string[] {
  const all = [...rows, ...(rest ? [{ name: `(${rest.lines} more ${noun})`, exact: rest.exact, sampled: rest.sampled, weighted: rest.weighted }] : [])];
  const text = all.map((r) => ({ name: oneLine(r.name), exact: r.exact === null ? 'n/a' : String(r.exact), sampled: String(r.sampled), weighted: fmt(r.weighted, 1), extra: 'extra' in r && r.extra ? r.extra : '' }));
  const w = { name: Math.max(head.length, ...text.map((r) => r.name.length)), exact: Math.max(5, ...text.map((r) => r.exact.length)), sampled: 7, weighted: Math.max(8, ...text.map((r) => r.weighted.length)) };
  const line = (name: string, exact: string, sampled: string, weighted: string, extra: string) =>
    `  ${name.padEnd(w.name)}  ${exact.padStart(w.exact)}  ${sampled.padStart(w.sampled)}  ${extraHead ? `${weighted.padEnd(w.weighted)}  ${extra}` : weighted}`.trimEnd();
  return [line(head, 'exact', 'sampled', 'weighted', extraHead ?? ''), ...text.map((r) => line(r.name, r.exact, r.sampled, r.weighted, r.extra))];
}

export function formatScope(s: ScopeResult): string {
  const out: string[] = [];
  const f = s.filters;
  const filt = [f.endpoint && `endpoint ${f.endpoint}`, f.since && `since ${f.since}`, f.until && `until ${f.until}`, f.where && `where ${f.where}`].filter(Boolean).join(', ');
  out.push(`Scope of ${s.label}${filt ? ` (${filt})` : ''}`);
  if (s.artifact !== null) out.push('  every decision that names it, as an artifact or an ancestor, or names an artifact registered downstream of it');
  out.push('');
  out.push(`  decisions (exact)     ${s.exact === null ? 'n/a' : s.exact}${s.exactNote ? `   (${s.exactNote})` : ''}`);
  out.push(`  stored (sampled)      ${s.sampled}`);
  out.push(`  weighted estimate     ${fmt(s.weighted, 1)}`);
  out.push(`  first .. last         ${s.first ?? '-'} .. ${s.last ?? '-'}`);
  // Without exact counts, an endpoint's figure is the weighted estimate, like the total above.
  const eps = s.endpoints.map((e) => `${e.endpoint} (${e.exact ?? `~${fmt(e.weighted, 1)}`})`);
  if (s.endpointsRest) eps.push(`${s.endpointsRest.lines} more (${s.endpointsRest.exact ?? `~${fmt(s.endpointsRest.weighted, 1)}`})`);
  out.push(`  endpoints             ${eps.join(', ') || '-'}`);
  if (s.artifact !== null) {
    const shown = s.downstream.slice(0, 8);
    out.push(`  downstream            ${s.downstream.length === 0 ? 'nothing registered' : `${s.downstream.length} artifacts: ${shown.join(', ')}${s.downstream.length > shown.length ? ', ...' : ''}`}`);
    out.push('');
    out.push('Model versions:');
    if (s.versions.length === 0) out.push('  none');
    else out.push(...countsTable('model', s.versions.map((v) => ({ name: v.model, exact: v.exact, sampled: v.sampled, weighted: v.weighted, extra: v.whole ? 'whole version' : 'decisions naming it' })), s.versionsRest, 'versions', 'in scope'));
  }
  out.push('');
  out.push('Deployment windows:');
  if (s.windows.length === 0) out.push('  none recorded (record them with dlog deploy)');
  for (const w of s.windows) {
    const where = w.environment ? `${w.endpoint} (${w.environment})` : w.endpoint;
    out.push(`  ${(s.artifact !== null ? `${w.model} on ${where}` : where).padEnd(20)} ${w.from} .. ${w.to ?? 'still serving'}  share ${fmt(w.share * 100, 1)}%  (${w.action})`);
  }
  out.push('');
  out.push('By decision:');
  out.push(...countsTable('decision', s.byDecision.map((b) => ({ name: b.decision, exact: b.exact, sampled: b.sampled, weighted: b.weighted })), s.byDecisionRest, 'decisions'));
  return out.join('\n') + '\n';
}

/** Columns of an exported scope: enough to find, re-run and remediate each decision. */
export const exportColumns = ['event_id', 'request_id', 'ts', 'endpoint', 'decision', 'confidence', 'weight', 'input_hash', 'trace_id'] as const;
/** An artifact's scope spans model versions: its export says which made each decision. */
export const artifactExportColumns = ['model', ...exportColumns] as const;

export function exportColumnsOf(s: Pick<ScopeResult, 'artifact'>): readonly string[] {
  return s.artifact === null ? exportColumns : artifactExportColumns;
}

/**
 * Rows a page asks for at most, half the query path's 100,000: each page reads the version from
 * its cursor on, so fewer, larger pages export faster (10,000-row pages took 3x as long as these).
 * Pages of long decisions ask for fewer (pageBytes).
 */
export const defaultPageRows = 50_000;
/**
 * The JSON a page aims at: a quarter of the query path's 64 MiB, as escaping (`/` is sent as
 * `\/`, control characters as `\u00XX`) makes the answer longer than the text measured here.
 * Pages are sized from the rows before them; a page cut anyway is asked for again at half the rows.
 */
const pageBytes = 16 * 1024 * 1024;

/** About the JSON length of a row: its values' UTF-8 bytes, and a little for names and quotes. */
function rowBytes(r: Row): number {
  let n = 140;
  for (const c of artifactExportColumns) n += Buffer.byteLength(String(r[c] ?? ''));
  return n;
}

/**
 * The stored decisions of a scope, page by page on (ts, event_id), so an export of millions stays
 * within the query path's row and size limits and the process's memory. An artifact's scope is
 * paged one model version after another (by name): a page across versions would sort all that
 * is left of them each time (an export of 1 million decisions over 4 versions took 64 s), one
 * version's pages read in its sorting order.
 */
export async function* scopeDecisions(q: AuditQuery, o: ScopeRequest | ResolvedScope, pageRows = defaultPageRows): AsyncGenerator<Row[]> {
  const r = isResolved(o) ? o : await resolveScope(q, o);
  if (!isArtifactScope(r.request)) {
    yield* versionPages(q, scopePredicate(r), '', pageRows);
    return;
  }
  const versions = [...r.whole, ...r.partial].sort((a, b) => modelLabel(a).localeCompare(modelLabel(b)));
  for (const m of versions) yield* versionPages(q, scopePredicate(r, m), "concat(model_name, ':', model_version) AS model, ", pageRows);
}

/**
 * One version's stored decisions in scope. Only an empty page ends it: a short page could be an
 * answer cut short, and every decision in scope must come (a remediation references them all).
 */
async function* versionPages(q: AuditQuery, pred: { sql: string; params: Record<string, unknown> }, extra: string, pageRows: number): AsyncGenerator<Row[]> {
  let size = pageRows;
  let after: { ts: string; id: string } | undefined;
  for (;;) {
    let rows: Row[];
    try {
      rows = await q(
        `SELECT ${extra}event_id, request_id, ts, endpoint, decision, confidence, weight, input_hash, trace_id
         FROM v_decisions WHERE ${pred.sql}
         ${after ? "AND ts >= {p_ts:DateTime64(3, 'UTC')} AND (ts, event_id) > ({p_ts:DateTime64(3, 'UTC')}, {p_id:String})" : ''}
         ORDER BY ts, event_id LIMIT {p_limit:UInt32}`,
        { ...pred.params, p_limit: size, ...(after ? { p_ts: after.ts, p_id: after.id } : {}) },
      );
    } catch (err) {
      // Long decisions (generated answers) can pass 64 MiB before the row limit: ask again for
      // half of what came before the cut (the same rows, as the page starts at the same cursor).
      if (err instanceof TruncatedAnswerError && size > 1) {
        size = Math.max(1, Math.min(Math.floor(size / 2), Math.floor(err.rowsReceived / 2)));
        continue;
      }
      throw err;
    }
    if (rows.length === 0) return;
    yield rows;
    const last = rows[rows.length - 1]!;
    after = { ts: chTime(fromChTime(last.ts)), id: String(last.event_id) };
    const avg = rows.reduce((n, x) => n + rowBytes(x), 0) / rows.length;
    size = Math.max(1, Math.min(pageRows, Math.floor(pageBytes / avg)));
  }
}
