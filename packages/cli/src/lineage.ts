import { AuditInputError, fmt, num, type AuditQuery } from './audit-query.js';

/**
 * `dlog lineage`: an artifact's upstream (what it was built from) and downstream (what was built
 * from it), walked level by level over the kept registrations, as a text tree, Mermaid or
 * Graphviz DOT.
 */

/**
 * One level of the lineage graph of the kept registrations (v_artifacts, as v_lineage has it):
 * the edges from `refs` to their parents (`up`) or from their children (`down`).
 *
 * Not over v_lineage: which registration of a ref is kept takes a window over all registrations
 * of that ref, and ClickHouse pushes a filter on the ref below the window only where the query
 * names the refs. v_lineage's filter reaches its child side, never its parent side, so each of the
 * walk's queries ran the window over the whole table (`dlog lineage` took about 1.9 s at 100k
 * artifacts, 0.3-0.4 s this way). Here the refs are named: the children of a level are looked up
 * in lineage_edges (every registration's edges, a superset), and only their kept registrations
 * say which are real.
 */
export async function lineageEdges(q: AuditQuery, dir: 'up' | 'down', refs: string[], limit?: number): Promise<{ child: string; parent: string }[]> {
  if (refs.length === 0) return [];
  const children = dir === 'up' ? '{refs:Array(String)}' : '(SELECT child_ref FROM lineage_edges WHERE parent_ref IN {refs:Array(String)})';
  const rows = await q(
    `SELECT child_ref, parent_ref FROM
     (SELECT ref AS child_ref, arrayDistinct(parents) AS parent_refs FROM v_artifacts WHERE ref IN ${children})
     ARRAY JOIN parent_refs AS parent_ref
     ${dir === 'down' ? 'WHERE parent_ref IN {refs:Array(String)}' : ''}
     ORDER BY child_ref, parent_ref${limit === undefined ? '' : ` LIMIT ${limit}`}`,
    { refs },
  );
  return rows.map((r) => ({ child: String(r.child_ref), parent: String(r.parent_ref) }));
}

export interface LineageNode {
  ref: string;
  kind: string;
  digest: string;
  /** Exact decisions made, for model nodes. */
  decisions?: number;
  /**
   * For an image, config, preprocessing or environment decisions name: the stored decisions that
   * name it and their weighted estimate. The exact counts are kept per model version only, so a
   * count of all decisions (sampled-out ones too) exists for models alone.
   */
  named?: { stored: number; weighted: number };
}

export interface LineageGraph {
  root: string;
  nodes: Map<string, LineageNode>;
  /** child → parent edges ("child was built from parent"). */
  edges: { child: string; parent: string }[];
  /** Directions in which the walk stopped at `maxDepth` levels with more left to read. */
  cutAt: ('up' | 'down')[];
  /**
   * Registrations of the root after its first that every reader refuses (another digest, or the
   * same digest saying something else of it): ignored (their parents are not in `edges`), and
   * shown because they are an audit finding.
   */
  refused: { digest: string; registered_by: string; registered_at: string }[];
}

/** Levels walked each way: lineage in practice is a few levels deep; a deeper one is cut, and says so. */
export const maxDepth = 12;

/** What to say of a ref the registry does not know: `lead`, then refs with a similar name and what to type. */
export async function unknownArtifact(q: AuditQuery, ref: string, lead: string, command: string): Promise<AuditInputError> {
  const tail = ref.replace(/^.*[/@]/, '').replace(/:.*$/, '');
  const near = await q(`SELECT ref, kind FROM v_artifacts WHERE positionCaseInsensitive(ref, {tail:String}) > 0 ORDER BY kind, ref LIMIT 15`, { tail: tail || ref });
  const lines = [lead];
  if (near.length) {
    lines.push('Artifacts with a similar name:');
    for (const n of near) lines.push(`  ${String(n.kind).padEnd(14)} ${String(n.ref)}`);
    lines.push(`Type e.g. dlog ${command} ${String(near[0]!.ref)}`);
  } else {
    lines.push('Refs look like registry://models/<name>:<version>, registry://datasets/<name>:<version>, git://host/repo@commit; list them with');
    lines.push('  dlog query "SELECT kind, ref FROM v_artifacts ORDER BY kind, ref"');
  }
  return new AuditInputError(lines.join('\n'));
}

/**
 * SQL of the refs a decision names in its own columns, besides its model: image, config,
 * preprocessing and environment (the `artifacts` column holds the same refs, for those the
 * registry knew at enrichment, so these columns are also right for decisions that named an
 * artifact before it was registered). LowCardinality columns: a filter on them is evaluated
 * on their dictionaries, so matching every decision of the store costs little.
 */
export const namedRefsSql = {
  /** A decision names one of the bound `{param:Array(String)}` refs. */
  names: (param: string) =>
    `(image_ref IN {${param}:Array(String)} OR config_ref IN {${param}:Array(String)} OR preprocessing_ref IN {${param}:Array(String)}` +
    ` OR (environment_digest != '' AND concat('registry://environments/', lower(environment_digest)) IN {${param}:Array(String)}))`,
  /** The array of those refs ('' where there is none). */
  list: "[toString(image_ref), toString(config_ref), toString(preprocessing_ref), if(environment_digest = '', '', concat('registry://environments/', lower(environment_digest)))]",
};

/** Stored decisions naming each of `refs` as their image, config, preprocessing or environment. */
async function namedCounts(q: AuditQuery, refs: string[]): Promise<Map<string, { stored: number; weighted: number }>> {
  if (refs.length === 0) return new Map();
  // The filter goes before the deduplication (LIMIT 1 BY the sorting key, as v_decisions has
  // it): through the view it could not, and the whole table would be deduplicated first.
  const rows = await q(
    `SELECT ref, count() AS stored, sum(weight) AS weighted FROM
     (
       SELECT ${namedRefsSql.list} AS named, 1 / sample_rate AS weight
       FROM decisions WHERE ${namedRefsSql.names('refs')}
       LIMIT 1 BY model_name, model_version, ts, event_id
     )
     ARRAY JOIN arrayDistinct(named) AS ref
     WHERE ref IN {refs:Array(String)}
     GROUP BY ref`,
    { refs },
  );
  return new Map(rows.map((r) => [String(r.ref), { stored: num(r.stored), weighted: num(r.weighted) }]));
}

export async function lineageGraph(q: AuditQuery, ref: string): Promise<LineageGraph> {
  const root = ref.trim();
  const known = await q('SELECT ref, kind, digest FROM v_artifacts WHERE ref = {ref:String} LIMIT 1', { ref: root });
  if (known.length === 0 && (await lineageEdges(q, 'down', [root], 1)).length === 0) {
    throw await unknownArtifact(q, root, `No artifact ${JSON.stringify(root)} is registered.`, 'lineage');
  }
  const nodes = new Map<string, LineageNode>();
  const edges: LineageGraph['edges'] = [];
  const seenEdge = new Set<string>();
  const addEdge = (child: string, parent: string) => {
    const k = `${child}\u0000${parent}`;
    if (!seenEdge.has(k)) (seenEdge.add(k), edges.push({ child, parent }));
  };
  const cutAt: ('up' | 'down')[] = [];
  for (const dir of ['up', 'down'] as const) {
    let frontier = [root];
    const visited = new Set(frontier);
    for (let depth = 0; depth < maxDepth && frontier.length > 0; depth++) {
      const next: string[] = [];
      for (const { child, parent } of await lineageEdges(q, dir, frontier)) {
        addEdge(child, parent);
        const other = dir === 'up' ? parent : child;
        if (!visited.has(other)) (visited.add(other), next.push(other));
      }
      frontier = next;
    }
    if (frontier.length > 0 && (await lineageEdges(q, dir, frontier, 1)).length > 0) cutAt.push(dir);
  }
  const refs = [...new Set([root, ...edges.flatMap((e) => [e.child, e.parent])])];
  const [meta, counts, named, refused] = await Promise.all([
    q('SELECT ref, kind, digest FROM v_artifacts WHERE ref IN {refs:Array(String)}', { refs }),
    q(
      `SELECT concat('registry://models/', model_name, ':', model_version) AS ref, sum(total) AS n FROM v_decision_totals
       GROUP BY model_name, model_version HAVING ref IN {refs:Array(String)}`,
      { refs },
    ),
    // Models are counted exactly above; every other ref may be one a decision names.
    namedCounts(q, refs.filter((r) => !r.startsWith('registry://models/'))),
    q(
      `SELECT DISTINCT digest, registered_by, toString(registered_at) AS registered_at FROM v_artifact_registrations
       WHERE ref = {ref:String} AND outcome = 'refused' ORDER BY registered_at, digest`,
      { ref: root },
    ),
  ]);
  for (const ref of refs) {
    const m = meta.find((r) => String(r.ref) === ref);
    const c = counts.find((r) => String(r.ref) === ref);
    const n = named.get(ref);
    nodes.set(ref, { ref, kind: m ? String(m.kind) : 'unregistered', digest: m ? String(m.digest) : '', ...(c ? { decisions: num(c.n) } : {}), ...(n ? { named: n } : {}) });
  }
  return {
    root,
    nodes,
    edges,
    cutAt,
    refused: refused.map((r) => ({ digest: String(r.digest), registered_by: String(r.registered_by), registered_at: String(r.registered_at) })),
  };
}

/** "1234 decisions" (exact, a model), "120 decisions stored" or "~1200 decisions, 120 stored" (sampled). */
export function decisionsText(n: LineageNode): string | undefined {
  if (n.decisions !== undefined) return `${n.decisions} decisions`;
  if (!n.named) return undefined;
  const { stored, weighted } = n.named;
  return Math.abs(weighted - stored) < 1e-9 ? `${stored} decisions stored` : `~${fmt(weighted, 0)} decisions, ${stored} stored`;
}

function label(n: LineageNode | undefined, ref: string): string {
  if (!n) return ref;
  const digest = n.digest ? `  ${n.digest.length > 20 ? `${n.digest.slice(0, 19)}…` : n.digest}` : '';
  const decisions = decisionsText(n);
  return `${ref}  (${n.kind}${decisions ? `, ${decisions}` : ''})${digest}`;
}

export function formatLineageTree(g: LineageGraph): string {
  const out = [label(g.nodes.get(g.root), g.root)];
  // Each direction's neighbours once, sorted: not a scan of every edge per line printed.
  const neighbours = { up: new Map<string, string[]>(), down: new Map<string, string[]>() };
  for (const e of g.edges) {
    const add = (m: Map<string, string[]>, from: string, to: string) => {
      const l = m.get(from);
      if (!l) m.set(from, [to]);
      else if (!l.includes(to)) l.push(to);
    };
    add(neighbours.up, e.child, e.parent);
    add(neighbours.down, e.parent, e.child);
  }
  for (const m of Object.values(neighbours)) for (const l of m.values()) l.sort();
  // An artifact reached again (a dataset several models were built from) has its own ancestors or
  // descendants drawn the first time only: drawn on every path, shared ancestors made the tree
  // grow as the number of paths, millions of lines for a few dozen artifacts.
  const walk = (ref: string, dir: 'up' | 'down', prefix: string, path: Set<string>, drawn: Set<string>) => {
    const next = neighbours[dir].get(ref) ?? [];
    next.forEach((r, i) => {
      const last = i === next.length - 1;
      const cycle = path.has(r);
      const again = !cycle && drawn.has(r) && (neighbours[dir].get(r)?.length ?? 0) > 0;
      out.push(`${prefix}${last ? '└─ ' : '├─ '}${label(g.nodes.get(r), r)}${cycle ? '  (cycle)' : again ? `  (its ${dir === 'up' ? 'ancestors' : 'descendants'} are shown above)` : ''}`);
      if (cycle || again) return;
      drawn.add(r);
      walk(r, dir, `${prefix}${last ? '   ' : '│  '}`, new Set([...path, r]), drawn);
    });
  };
  const ups = g.edges.some((e) => e.child === g.root);
  const downs = g.edges.some((e) => e.parent === g.root);
  for (const r of g.refused) {
    // A refused registration may carry the kept digest: it said other parents or metadata of it.
    const same = r.digest === g.nodes.get(g.root)?.digest ? ' (the kept digest, saying something else of it)' : '';
    out.push(`  refused: ${r.digest}${same} registered later by ${r.registered_by} at ${r.registered_at}; versions are immutable, every reader ignores it`);
  }
  out.push('');
  out.push('upstream (built from):');
  const cut = (dir: 'up' | 'down') => {
    if (g.cutAt.includes(dir)) out.push(`  … cut at ${maxDepth} levels: there is more; run dlog lineage on the deepest ref shown`);
  };
  if (ups) walk(g.root, 'up', '  ', new Set([g.root]), new Set());
  else out.push('  nothing registered');
  cut('up');
  out.push('');
  out.push('downstream (built from it):');
  if (downs) walk(g.root, 'down', '  ', new Set([g.root]), new Set());
  else out.push('  nothing registered');
  cut('down');
  return out.join('\n') + '\n';
}

const kindShape: Record<string, [string, string]> = { model: ['([', '])'], dataset: ['[(', ')]'], code: ['{{', '}}'], image: ['[/', '/]'] };

export function formatMermaid(g: LineageGraph): string {
  const ids = new Map([...g.nodes.keys()].map((r, i) => [r, `n${i}`]));
  const esc = (s: string) => s.replaceAll('"', '#quot;');
  const out = ['flowchart LR'];
  for (const [ref, n] of g.nodes) {
    const [o, c] = kindShape[n.kind] ?? ['[', ']'];
    const decisions = decisionsText(n);
    const text = `${n.kind}<br/>${ref}${decisions ? `<br/>${decisions}` : ''}`;
    out.push(`  ${ids.get(ref)}${o}"${esc(text)}"${c}`);
  }
  // Arrows follow the flow of making: parent (dataset, commit) → child (model, image).
  for (const e of g.edges) out.push(`  ${ids.get(e.parent)} --> ${ids.get(e.child)}`);
  out.push(`  style ${ids.get(g.root)} stroke-width:3px`);
  return out.join('\n') + '\n';
}

export function formatDot(g: LineageGraph): string {
  const ids = new Map([...g.nodes.keys()].map((r, i) => [r, `n${i}`]));
  const esc = (s: string) => s.replaceAll('\\', '\\\\').replaceAll('"', '\\"');
  const shape: Record<string, string> = { model: 'box3d', dataset: 'cylinder', code: 'note', image: 'component', config: 'tab', preprocessing: 'cds' };
  const out = ['digraph lineage {', '  rankdir=LR;', '  node [fontname="Helvetica", fontsize=10];'];
  for (const [ref, n] of g.nodes) {
    const decisions = decisionsText(n);
    const text = `${n.kind}\\n${esc(ref)}${decisions ? `\\n${decisions}` : ''}`;
    out.push(`  ${ids.get(ref)} [label="${text}", shape=${shape[n.kind] ?? 'box'}${ref === g.root ? ', penwidth=3' : ''}];`);
  }
  for (const e of g.edges) out.push(`  ${ids.get(e.parent)} -> ${ids.get(e.child)};`);
  out.push('}');
  return out.join('\n') + '\n';
}
