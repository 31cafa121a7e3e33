import { lineageEdges, maxDepth } from './lineage.js';
import { AuditInputError, fmt, num, type AuditQuery, type Row } from './audit-query.js';

/**
 * `dlog trace`: the whole package behind one decision, and for an agent step its trajectory.
 *
 * The lookups read the `decisions` table with the view's deduplication (LIMIT 1 BY its sorting
 * key) applied after the id filter: through v_decisions a filter on request_id or trace_id
 * cannot be pushed below the view's LIMIT BY, and every lookup would read the whole table; here
 * the bloom-filter indexes on the ids skip all but a few granules.
 */

const dedup = 'LIMIT 1 BY model_name, model_version, ts, event_id';

/** Decisions one `dlog trace` shows in full when several share a request id. */
export const maxPackages = 20;
/** Steps of a trajectory shown at most: those nearest the traced step. */
export const maxTrajectorySteps = 10_000;
/** Tree levels drawn as indentation; deeper steps are drawn at this indent with their depth. */
const maxIndent = 32;

const packageColumns = `event_id, request_id, toString(ts) AS ts, endpoint, decision_type, tenant,
  model_name, model_version, model_digest, image_ref, image_digest, config_ref,
  temperature, top_p, max_tokens, thresholds, params_extra, preprocessing_ref, preprocessing_digest, environment_digest,
  input_hash, input_fields, decision, confidence, scores, output_json,
  trace_id, step, parent_event_id, tool_name, tool_args_hash,
  producer_service, producer_sdk, producer_host,
  toString(tier) AS tier, sample_rate, 1 / sample_rate AS weight, policy_version, policy_rule, pii_key_id,
  resolved, unresolved_refs, digest_mismatches, artifacts, lineage`;

export interface TraceStep {
  event_id: string;
  step: number | null;
  parent_event_id: string;
  ts: string;
  tool_name: string;
  tool_args_hash: string;
  decision: string;
  confidence: number | null;
  model: string;
  children: TraceStep[];
}

export interface TraceArtifact {
  role: string;
  ref: string;
  kind: string;
  version: string;
  digest: string;
  metadata: Record<string, string>;
}

export interface TracePackage {
  decision: Row;
  artifacts: TraceArtifact[];
  /** Ancestors of the decision's artifacts: training datasets, code commits, base models. */
  lineage: { ref: string; kind: string; via: string; depth: number }[];
  remediations: { remediation_id: string; action: string; reason: string; actor: string; ts: string }[];
  /**
   * Refs the decision names that were unknown when it was enriched and are registered now. The
   * decision's record never changes; this is what the registry says of them today.
   */
  registeredSince: { ref: string; kind: string; version: string; digest: string; registered_at: string; declared: string | null; mismatch: boolean }[];
  /**
   * Ancestors the registry knows now and the decision's record does not (a parent registered
   * after its child, or an artifact registered after the decision): lineage is written into the
   * record at enrichment and never changes, so a rollback scope by dataset must read these too.
   */
  lineageSince: { ref: string; kind: string; via: string; depth: number }[];
  /** Root steps of the trajectory (agents only); the traced step is marked in `focus`. */
  trajectory: TraceStep[] | null;
  /**
   * Steps the trajectory has in the store (null for a decision of no trajectory). More than the
   * tree holds when the trajectory is longer than maxTrajectorySteps: the tree then holds the
   * steps nearest the traced one.
   */
  trajectoryTotal: number | null;
  focus: string;
}

export interface TraceResult {
  query: string;
  matchedBy: 'event_id' | 'request_id';
  /** At most maxPackages, the earliest first. */
  packages: TracePackage[];
  /** Decisions with that id in the store: more than `packages` holds when it was cut. */
  total: number;
}

export function trajectoryTree(rows: Row[]): TraceStep[] {
  const steps = rows.map<TraceStep>((r) => ({
    event_id: String(r.event_id),
    step: r.step === null || r.step === undefined ? null : num(r.step),
    parent_event_id: String(r.parent_event_id ?? ''),
    ts: String(r.ts),
    tool_name: String(r.tool_name ?? ''),
    tool_args_hash: String(r.tool_args_hash ?? ''),
    decision: String(r.decision),
    confidence: r.confidence === null || r.confidence === undefined ? null : num(r.confidence),
    model: `${String(r.model_name)}:${String(r.model_version)}`,
    children: [],
  }));
  steps.sort((a, b) => (a.step ?? 0) - (b.step ?? 0) || a.ts.localeCompare(b.ts));
  const byId = new Map(steps.map((s) => [s.event_id, s]));
  // A parent sampled out or not yet written: the step still shows, as a root. Parent ids are the
  // producer's: steps that name each other in a ring (a bug upstream) would reach no root and
  // vanish from the tree, so the earliest step of a ring is shown as a root instead.
  const parentOf = (s: TraceStep) => {
    const p = s.parent_event_id ? byId.get(s.parent_event_id) : undefined;
    return p === s ? undefined : p;
  };
  const order = new Map(steps.map((s, i) => [s, i]));
  const isRoot = new Set<TraceStep>();
  const placed = new Set<TraceStep>();
  for (const s of steps) {
    // Up the parent links (no recursion: a chain can be thousands of steps long) until a root, a
    // step already placed, or a step seen on this walk, whose link back closes a ring.
    const path: TraceStep[] = [];
    const onPath = new Set<TraceStep>();
    let cur: TraceStep | undefined = s;
    while (cur && !placed.has(cur) && !onPath.has(cur)) {
      path.push(cur);
      onPath.add(cur);
      cur = parentOf(cur);
    }
    if (!cur) isRoot.add(path[path.length - 1]!);
    else if (onPath.has(cur)) {
      // A ring: its earliest step (by step number, then time) is shown as its root.
      const ring = path.slice(path.indexOf(cur));
      isRoot.add(ring.reduce((a, b) => (order.get(b)! < order.get(a)! ? b : a)));
    }
    for (const x of path) placed.add(x);
  }
  const roots: TraceStep[] = [];
  for (const s of steps) {
    if (isRoot.has(s)) roots.push(s);
    else parentOf(s)!.children.push(s);
  }
  return roots;
}

/** The tree's steps in display order, with their depth (0 for a root); iterative, for long chains. */
export function flattenTrajectory(roots: TraceStep[]): { step: TraceStep; depth: number; last: boolean[] }[] {
  const out: { step: TraceStep; depth: number; last: boolean[] }[] = [];
  // `last`: for each level down to this step, whether the step there is its parent's last child.
  const stack: { step: TraceStep; depth: number; last: boolean[] }[] = [];
  const push = (ns: TraceStep[], depth: number, last: boolean[]) => {
    for (let i = ns.length - 1; i >= 0; i--) stack.push({ step: ns[i]!, depth, last: [...last.slice(-maxIndent), i === ns.length - 1] });
  };
  push(roots, 0, []);
  while (stack.length > 0) {
    const entry = stack.pop()!;
    out.push(entry);
    push(entry.step.children, entry.depth + 1, entry.last);
  }
  return out;
}

async function buildPackage(q: AuditQuery, d: Row): Promise<TracePackage> {
  const arts = (d.artifacts as Row[] | undefined) ?? [];
  const lineage = ((d.lineage as Row[] | undefined) ?? []).map((l) => ({ ref: String(l.ref), kind: String(l.kind), via: String(l.via), depth: num(l.depth) }));
  const refs = [...new Set([...arts.map((a) => String(a.ref)), ...lineage.map((l) => l.ref)])];
  const traceId = String(d.trace_id ?? '');
  const unresolved = (d.unresolved_refs as string[] | undefined) ?? [];
  const [meta, steps, remediations, since] = await Promise.all([
    refs.length ? q('SELECT ref, metadata FROM v_artifacts WHERE ref IN {refs:Array(String)}', { refs }) : Promise.resolve([]),
    // The steps nearest the traced one when the trajectory is longer than can be shown (one more
    // is asked for, to tell), so the traced step and those around it are always among them.
    traceId
      ? q(
          `SELECT event_id, step, parent_event_id, toString(ts) AS ts, tool_name, tool_args_hash, decision, confidence, model_name, model_version
           FROM decisions WHERE trace_id = {trace:String}
           ORDER BY event_id != {focus:String}, abs(toInt64(ifNull(step, 0)) - {focusStep:Int64}), step, ts ${dedup} LIMIT ${maxTrajectorySteps + 1}`,
          { trace: traceId, focus: String(d.event_id), focusStep: d.step === null || d.step === undefined ? 0 : num(d.step) },
        )
      : Promise.resolve(undefined),
    q(
      `SELECT remediation_id, action, reason, actor, toString(ts) AS ts FROM v_remediated_decisions
       WHERE event_id = {id:String} ORDER BY ts`,
      { id: String(d.event_id) },
    ),
    // v_artifacts holds the first registration of each ref in the log, the one every reader
    // keeps (registered_at is the registering client's clock and cannot say which came first).
    unresolved.length
      ? q('SELECT ref, kind, version, digest, toString(registered_at) AS registered_at FROM v_artifacts WHERE ref IN {refs:Array(String)}', { refs: unresolved })
      : Promise.resolve([] as Row[]),
  ]);
  let trajectoryTotal: number | null = steps ? steps.length : null;
  if (steps && steps.length > maxTrajectorySteps) {
    steps.length = maxTrajectorySteps;
    const [n] = await q(`SELECT count() AS n FROM (SELECT 1 FROM decisions WHERE trace_id = {trace:String} ${dedup})`, { trace: traceId });
    trajectoryTotal = num(n?.n);
  }
  const metaBy = new Map(meta.map((m) => [String(m.ref), (m.metadata as Record<string, string>) ?? {}]));
  // What the decision declared of each artifact it names, to hold a later registration against.
  const declaredBy = new Map<string, string>();
  const declare = (ref: unknown, digest: unknown) => {
    if (ref && digest) declaredBy.set(String(ref), String(digest).toLowerCase());
  };
  declare(`registry://models/${String(d.model_name)}:${String(d.model_version)}`, d.model_digest);
  declare(d.image_ref, d.image_digest);
  declare(d.preprocessing_ref, d.preprocessing_digest);
  return {
    decision: d,
    artifacts: arts.map((a) => ({
      role: String(a.role),
      ref: String(a.ref),
      kind: String(a.kind),
      version: String(a.version),
      digest: String(a.digest),
      metadata: metaBy.get(String(a.ref)) ?? {},
    })),
    lineage,
    remediations: remediations.map((r) => ({ remediation_id: String(r.remediation_id), action: String(r.action), reason: String(r.reason), actor: String(r.actor), ts: String(r.ts) })),
    registeredSince: since.map((r) => {
      const declared = declaredBy.get(String(r.ref)) ?? null;
      return {
        ref: String(r.ref),
        kind: String(r.kind),
        version: String(r.version),
        digest: String(r.digest),
        registered_at: String(r.registered_at),
        declared,
        mismatch: declared !== null && declared !== String(r.digest).toLowerCase(),
      };
    }),
    lineageSince: [],
    trajectory: steps ? trajectoryTree(steps) : null,
    trajectoryTotal,
    focus: String(d.event_id),
  };
}

/**
 * Ancestors of each root as the registry has them now, nearest first, up to the lineage depth
 * limit: one query a level for all roots together (not a walk per decision), then one for the
 * kinds. Over the kept registrations (lineageEdges, v_artifacts), not the tables: those hold
 * refused registrations too, whose parents are no ancestors of anything.
 */
async function ancestorsNow(q: AuditQuery, roots: string[]): Promise<Map<string, { ref: string; kind: string; depth: number }[]>> {
  const parentsOf = new Map<string, string[]>();
  const walks = [...new Set(roots)].map((root) => ({ root, seen: new Set([root]), frontier: [root], out: [] as { ref: string; depth: number }[] }));
  for (let depth = 1; depth <= maxDepth; depth++) {
    const ask = [...new Set(walks.flatMap((w) => w.frontier))].filter((r) => !parentsOf.has(r));
    if (ask.length > 0) {
      for (const r of ask) parentsOf.set(r, []);
      for (const e of await lineageEdges(q, 'up', ask)) parentsOf.get(e.child)!.push(e.parent);
    }
    let more = false;
    for (const w of walks) {
      const next: string[] = [];
      for (const child of w.frontier) {
        for (const parent of parentsOf.get(child) ?? []) {
          if (w.seen.has(parent)) continue;
          w.seen.add(parent);
          w.out.push({ ref: parent, depth });
          next.push(parent);
        }
      }
      w.frontier = next;
      if (next.length > 0) more = true;
    }
    if (!more) break;
  }
  const all = [...new Set(walks.flatMap((w) => w.out.map((o) => o.ref)))];
  const kinds = new Map<string, string>();
  if (all.length > 0) {
    for (const r of await q('SELECT ref, kind FROM v_artifacts WHERE ref IN {refs:Array(String)}', { refs: all })) kinds.set(String(r.ref), String(r.kind));
  }
  return new Map(walks.map((w) => [w.root, w.out.map((o) => ({ ...o, kind: kinds.get(o.ref) ?? 'unknown' }))]));
}

/**
 * What each package's record lacks of its lineage now: ancestors registered since (a parent
 * registered after its child, which the record names with kind `unknown`, or the ancestors of an
 * artifact registered after the decision).
 */
async function addLineageSince(q: AuditQuery, packages: TracePackage[]): Promise<void> {
  const rootsOf = (p: TracePackage) => [...p.artifacts.map((a) => a.ref), ...p.registeredSince.map((r) => r.ref)];
  const byRoot = await ancestorsNow(q, packages.flatMap(rootsOf));
  for (const p of packages) {
    const known = new Set([...p.lineage.filter((l) => l.kind !== 'unknown').map((l) => l.ref), ...rootsOf(p)]);
    const found = new Map<string, { ref: string; kind: string; via: string; depth: number }>();
    for (const root of rootsOf(p)) {
      for (const a of byRoot.get(root) ?? []) {
        if (known.has(a.ref) || a.kind === 'unknown') continue;
        const prior = found.get(a.ref);
        if (!prior || a.depth < prior.depth) found.set(a.ref, { ...a, via: root });
      }
    }
    p.lineageSince = [...found.values()].sort((x, y) => x.depth - y.depth || x.ref.localeCompare(y.ref));
  }
}

export async function traceDecision(q: AuditQuery, id: string): Promise<TraceResult> {
  const wanted = id.trim();
  if (wanted === '') throw new AuditInputError('dlog trace takes an event_id or a request_id, e.g. dlog trace loan-3f9c0a12-1436 (dlog simulate prints its run\'s request ids)');
  let matchedBy: TraceResult['matchedBy'] = 'event_id';
  // One more than is shown is asked for, to tell when there are more.
  let rows = await q(`SELECT ${packageColumns} FROM decisions WHERE event_id = {id:String} ORDER BY ts ${dedup} LIMIT ${maxPackages + 1}`, { id: wanted });
  if (rows.length === 0) {
    matchedBy = 'request_id';
    rows = await q(`SELECT ${packageColumns} FROM decisions WHERE request_id = {id:String} ORDER BY ts ${dedup} LIMIT ${maxPackages + 1}`, { id: wanted });
  }
  let total = rows.length;
  if (rows.length > maxPackages) {
    rows.length = maxPackages;
    const [n] = await q(`SELECT count() AS n FROM (SELECT 1 FROM decisions WHERE ${matchedBy} = {id:String} ${dedup})`, { id: wanted });
    total = num(n?.n);
  }
  if (rows.length === 0) {
    const sample = await q('SELECT event_id, request_id FROM decisions ORDER BY ts DESC LIMIT 1');
    const eg = sample[0] ? ` (a recent one: dlog trace ${String(sample[0].request_id || sample[0].event_id)})` : '';
    throw new AuditInputError(
      `No decision has event_id or request_id ${JSON.stringify(wanted)}. It may have been sampled out (sampled decisions are counted, not stored) or not be written yet${eg}.`,
    );
  }
  const packages = await Promise.all(rows.map((d) => buildPackage(q, d)));
  await addLineageSince(q, packages);
  return { query: wanted, matchedBy, packages, total };
}

/**
 * The result as `dlog trace --json` prints it: each trajectory as a list of steps in tree order,
 * each with its depth, instead of nested children, which JSON.stringify cannot write past a few
 * thousand levels (a long chain of agent steps).
 */
export function traceJson(t: TraceResult): unknown {
  return {
    ...t,
    packages: t.packages.map((p) => ({
      ...p,
      trajectory: p.trajectory && flattenTrajectory(p.trajectory).map(({ step, depth }) => ({ ...step, children: undefined, depth })),
    })),
  };
}

/** A shell word for `value` (single-quoted, so `$` and backquotes stay literal). */
const shellQuote = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;

const kv = (label: string, value: unknown) => `  ${label.padEnd(18)} ${value === null || value === undefined || value === '' ? '-' : String(value)}`;
const short = (digest: string) => (digest.length > 24 ? `${digest.slice(0, 20)}…` : digest);

function treeLines(flat: ReturnType<typeof flattenTrajectory>, focus: string, prefix: string): string[] {
  return flat.map(({ step: n, depth, last }) => {
    // Past maxIndent levels the indent stops growing and the depth is written out.
    const indent = last.slice(0, -1).map((l) => (l ? '   ' : '│  ')).join('');
    const deep = depth > maxIndent ? `(depth ${depth}) ` : '';
    const label = `step ${n.step ?? '?'}  ${n.tool_name ? `tool ${n.tool_name}` : 'answer'}  → ${n.decision}  conf ${fmt(n.confidence ?? NaN)}  ${n.event_id}${n.event_id === focus ? '   ◀ this decision' : ''}`;
    return `${prefix}${indent}${last[last.length - 1] ? '└─ ' : '├─ '}${deep}${label}`;
  });
}

export function formatTrace(t: TraceResult): string {
  const out: string[] = [];
  if (t.total > t.packages.length) {
    out.push(
      `${t.total} decisions have ${t.matchedBy} ${t.query}; the first ${t.packages.length} by time are shown. List them all with:\n` +
        `  dlog query "SELECT event_id, ts, model_name, model_version, decision FROM decisions WHERE ${t.matchedBy} = {id:String} ORDER BY ts ${dedup}" -p id=${shellQuote(t.query)}\n`,
    );
  } else if (t.packages.length > 1) out.push(`${t.packages.length} decisions have ${t.matchedBy} ${t.query}:\n`);
  for (const p of t.packages) {
    const d = p.decision;
    const art = (role: string) => p.artifacts.find((a) => a.role === role);
    out.push(`Decision ${String(d.event_id)}  (request ${String(d.request_id)})`);
    out.push(kv('time', `${String(d.ts)} UTC`));
    out.push(kv('endpoint', `${String(d.endpoint)}  (${String(d.decision_type)})`));
    out.push(kv('decision', d.decision));
    out.push(kv('confidence', d.confidence === null ? null : fmt(num(d.confidence), 4)));
    const scores = Object.entries((d.scores as Record<string, number>) ?? {});
    if (scores.length) out.push(kv('scores', scores.map(([k, v]) => `${k} ${fmt(v, 4)}`).join(', ')));
    out.push(kv('input hash', d.input_hash));
    const fields = Object.entries((d.input_fields as Record<string, string>) ?? {});
    if (fields.length) out.push(kv('input fields', fields.map(([k, v]) => `${k}=${v}`).join(', ')));
    out.push('');
    out.push('What produced it:');
    const model = art('model');
    out.push(kv('model', `registry://models/${String(d.model_name)}:${String(d.model_version)}  ${short(String(d.model_digest || model?.digest || ''))}`));
    const upstream = p.lineage.filter((l) => l.via.startsWith('registry://models/') || l.depth > 1);
    const datasets = p.lineage.filter((l) => l.kind === 'dataset');
    const code = p.lineage.filter((l) => l.kind === 'code');
    out.push(kv('  trained on', datasets.map((l) => `${l.ref}${l.depth > 1 ? ` (depth ${l.depth})` : ''}`).join(', ') || (upstream.length ? '-' : 'no lineage registered')));
    out.push(kv('  code', code.map((l) => `${l.ref}${l.via ? ` (via ${l.via})` : ''}`).join(', ') || '-'));
    out.push(kv('image', `${String(d.image_ref) || '-'}  ${short(String(d.image_digest ?? ''))}`));
    const params = [
      d.temperature !== null && d.temperature !== undefined ? `temperature ${String(d.temperature)}` : '',
      d.top_p !== null && d.top_p !== undefined ? `top_p ${String(d.top_p)}` : '',
      d.max_tokens !== null && d.max_tokens !== undefined ? `max_tokens ${String(d.max_tokens)}` : '',
      ...Object.entries((d.thresholds as Record<string, number>) ?? {}).map(([k, v]) => `threshold ${k} ${v}`),
      ...Object.entries((d.params_extra as Record<string, string>) ?? {}).map(([k, v]) => `${k} ${v}`),
    ].filter(Boolean);
    out.push(kv('config', `${String(d.config_ref) || '-'}${params.length ? `  (${params.join(', ')})` : ''}`));
    out.push(kv('preprocessing', `${String(d.preprocessing_ref) || '-'}  ${short(String(d.preprocessing_digest ?? ''))}`));
    const env = art('environment');
    // The full snapshot is in --json; one line names what usually explains a difference.
    const em = env?.metadata ?? {};
    const envMeta = [
      em['os.platform'] && `${em['os.platform']} ${em['os.release'] ?? ''}`.trim(),
      em['hardware.arch'] && `${em['hardware.arch']}${em['hardware.cpu_count'] ? ` x${em['hardware.cpu_count']}` : ''}${em['hardware.cpu_model'] ? ` ${em['hardware.cpu_model']}` : ''}`,
      em['runtime.name'] && `${em['runtime.name']} ${em['runtime.node'] ?? em['runtime.version'] ?? ''}`.trim(),
      ...Object.entries(em).filter(([k]) => k.startsWith('libraries.')).map(([k, v]) => `${k.slice(10)} ${v}`),
    ].filter(Boolean).join(', ');
    out.push(kv('environment', `${short(String(d.environment_digest)) || '-'}${envMeta ? `  (${envMeta})` : ''}`));
    out.push(kv('policy', `${String(d.policy_version)}  tier ${String(d.tier)}  rule ${String(d.policy_rule) || '-'}  sample rate ${String(d.sample_rate)} (weight ${fmt(num(d.weight), 2)})`));
    if (d.pii_key_id) out.push(kv('pii key', d.pii_key_id));
    out.push(kv('producer', `${String(d.producer_service)}  ${String(d.producer_sdk)}  ${String(d.producer_host ?? '')}`.trim()));
    if (!d.resolved || (d.unresolved_refs as string[]).length || (d.digest_mismatches as string[]).length) {
      // A ref is in digest_mismatches for another digest than registered, or for a registered kind
      // other than the role it fills (the record's artifacts entry shows both).
      const mismatch = (ref: string) => {
        const a = p.artifacts.find((x) => x.ref === ref);
        return a && a.kind !== a.role ? `kind mismatch ${ref} (registered as ${a.kind}, named as ${a.role})` : `digest mismatch ${ref}`;
      };
      out.push(kv('⚠ unresolved', [...(d.unresolved_refs as string[]), ...(d.digest_mismatches as string[]).map(mismatch)].join(', ') || 'yes'));
    }
    if (p.registeredSince.length) {
      out.push('');
      out.push('Registered since the decision (not in its record, which never changes; see dlog lineage <ref>):');
      for (const a of p.registeredSince) {
        out.push(`  ${a.kind.padEnd(14)} ${a.ref}  ${short(a.digest)}  registered ${a.registered_at}`);
        if (a.mismatch) out.push(`  ${''.padEnd(14)} DIGEST MISMATCH: the decision declared ${short(a.declared!)}; what was registered is not what made it`);
      }
    }
    if (p.artifacts.length) {
      out.push('');
      out.push('Artifacts:');
      for (const a of p.artifacts) out.push(`  ${a.role.padEnd(14)} ${a.ref}  ${short(a.digest)}`);
    }
    if (p.lineage.length) {
      out.push('');
      out.push('Lineage (ancestors of its artifacts):');
      for (const l of [...p.lineage].sort((x, y) => x.depth - y.depth || x.kind.localeCompare(y.kind))) out.push(`  ${'  '.repeat(Math.max(0, l.depth - 1))}${l.kind.padEnd(10)} ${l.ref}  (via ${l.via})`);
    }
    if (p.lineageSince.length) {
      out.push('');
      out.push('Ancestors registered since the decision (the registry now; the record above never changes):');
      for (const l of p.lineageSince) out.push(`  ${'  '.repeat(Math.max(0, l.depth - 1))}${l.kind.padEnd(10)} ${l.ref}  (via ${l.via})`);
    }
    if (p.remediations.length) {
      out.push('');
      out.push('Remediations (the decision itself is unchanged):');
      for (const r of p.remediations) out.push(`  ${r.ts}  ${r.action}  ${r.remediation_id}  by ${r.actor}: ${r.reason}`);
    }
    if (p.trajectory) {
      const flat = flattenTrajectory(p.trajectory);
      const total = p.trajectoryTotal ?? flat.length;
      out.push('');
      out.push(
        total > flat.length
          ? `Trajectory ${String(d.trace_id)} (${total} stored steps; the ${flat.length} nearest this one are shown):`
          : `Trajectory ${String(d.trace_id)} (${flat.length} stored steps):`,
      );
      out.push(...treeLines(flat, p.focus, '  '));
    }
    out.push('');
  }
  return out.join('\n');
}
