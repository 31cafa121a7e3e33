import { AuditInputError, num, type AuditQuery } from './audit-query.js';

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

export async function lineageGraph(q: AuditQuery, ref: string): Promise<LineageGraph> {
  const root = ref.trim();
  const known = await q('SELECT ref, kind, digest FROM v_artifacts WHERE ref = {ref:String} LIMIT 1', { ref: root });
  if (known.length === 0 && (await lineageEdges(q, 'down', [root], 1)).length === 0) {
    const tail = root.replace(/^.*[/@]/, '').replace(/:.*$/, '');
    const near = await q(
      `SELECT ref, kind FROM v_artifacts WHERE positionCaseInsensitive(ref, {tail:String}) > 0 ORDER BY kind, ref LIMIT 15`,
      { tail: tail || root },
    );
    const lines = [`No artifact ${JSON.stringify(root)} is registered.`];
    if (near.length) {
      lines.push('Artifacts with a similar name:');
      for (const n of near) lines.push(`  ${String(n.kind).padEnd(14)} ${String(n.ref)}`);
      lines.push(`Type e.g. dlog lineage ${String(near[0]!.ref)}`);
    } else {
      lines.push('Refs look like registry://models/<name>:<version>, registry://datasets/<name>:<version>, git://host/repo@commit; list them with');
      lines.push('  dlog query "SELECT kind, ref FROM v_artifacts ORDER BY kind, ref"');
    }
    throw new AuditInputError(lines.join('\n'));
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
  const [meta, counts, refused] = await Promise.all([
    q('SELECT ref, kind, digest FROM v_artifacts WHERE ref IN {refs:Array(String)}', { refs }),
    q(
      `SELECT concat('registry://models/', model_name, ':', model_version) AS ref, sum(total) AS n FROM v_decision_totals
       GROUP BY model_name, model_version HAVING ref IN {refs:Array(String)}`,
      { refs },
    ),
    q(
      `SELECT DISTINCT digest, registered_by, toString(registered_at) AS registered_at FROM v_artifact_registrations
       WHERE ref = {ref:String} AND outcome = 'refused' ORDER BY registered_at, digest`,
      { ref: root },
    ),
  ]);
  for (const ref of refs) {
    const m = meta.find((r) => String(r.ref) === ref);
    const c = counts.find((r) => String(r.ref) === ref);
    nodes.set(ref, { ref, kind: m ? String(m.kind) : 'unregistered', digest: m ? String(m.digest) : '', ...(c ? { decisions: num(c.n) } : {}) });
  }
  return {
    root,
    nodes,
    edges,
    cutAt,
    refused: refused.map((r) => ({ digest: String(r.digest), registered_by: String(r.registered_by), registered_at: String(r.registered_at) })),
  };
}

function label(n: LineageNode | undefined, ref: string): string {
  if (!n) return ref;
  const digest = n.digest ? `  ${n.digest.length > 20 ? `${n.digest.slice(0, 19)}…` : n.digest}` : '';
  return `${ref}  (${n.kind}${n.decisions !== undefined ? `, ${n.decisions} decisions` : ''})${digest}`;
}

export function formatLineageTree(g: LineageGraph): string {
  const out = [label(g.nodes.get(g.root), g.root)];
  const walk = (ref: string, dir: 'up' | 'down', prefix: string, path: Set<string>) => {
    const next = g.edges.filter((e) => (dir === 'up' ? e.child === ref : e.parent === ref)).map((e) => (dir === 'up' ? e.parent : e.child)).sort();
    next.forEach((r, i) => {
      const last = i === next.length - 1;
      const cycle = path.has(r);
      out.push(`${prefix}${last ? '└─ ' : '├─ '}${label(g.nodes.get(r), r)}${cycle ? '  (cycle)' : ''}`);
      if (!cycle) walk(r, dir, `${prefix}${last ? '   ' : '│  '}`, new Set([...path, r]));
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
  if (ups) walk(g.root, 'up', '  ', new Set([g.root]));
  else out.push('  nothing registered');
  cut('up');
  out.push('');
  out.push('downstream (built from it):');
  if (downs) walk(g.root, 'down', '  ', new Set([g.root]));
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
    const text = `${n.kind}<br/>${ref}${n.decisions !== undefined ? `<br/>${n.decisions} decisions` : ''}`;
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
    const text = `${n.kind}\\n${esc(ref)}${n.decisions !== undefined ? `\\n${n.decisions} decisions` : ''}`;
    out.push(`  ${ids.get(ref)} [label="${text}", shape=${shape[n.kind] ?? 'box'}${ref === g.root ? ', penwidth=3' : ''}];`);
  }
  for (const e of g.edges) out.push(`  ${ids.get(e.parent)} -> ${ids.get(e.child)};`);
  out.push('}');
  return out.join('\n') + '\n';
}
