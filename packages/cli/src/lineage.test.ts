import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Row } from './audit-query.js';
import { formatLineageTree, lineageGraph, maxDepth, type LineageGraph } from './lineage.js';

describe('dlog lineage', () => {
  /** The store's answers for a chain: m0 built from m1, built from m2 ... up to m{length}. */
  function chain(length: number) {
    return async (sql: string, params: Record<string, unknown> = {}): Promise<Row[]> => {
      const refs = (params.refs as string[] | undefined) ?? [];
      // Downstream levels find their children in lineage_edges; there are none here.
      if (sql.includes('FROM lineage_edges WHERE parent_ref IN')) return [];
      if (sql.includes('ARRAY JOIN')) return refs.map((r) => Number(r.slice(1))).filter((i) => i < length).map((i) => ({ child_ref: `m${i}`, parent_ref: `m${i + 1}` }));
      if (sql.includes('WHERE ref = {ref:String}')) return [{ ref: 'm0', kind: 'model', digest: 'sha256:x' }];
      if (sql.includes('FROM v_artifacts WHERE ref IN')) return refs.map((ref) => ({ ref, kind: 'model', digest: 'sha256:x' }));
      return [];
    };
  }

  it('says where a lineage deeper than it walks was cut, and not otherwise', async () => {
    const deep = await lineageGraph(chain(maxDepth + 3), 'm0');
    assert.deepEqual(deep.cutAt, ['up']);
    assert.equal(deep.edges.length, maxDepth);
    assert.match(formatLineageTree(deep), new RegExp(`upstream[^]*cut at ${maxDepth} levels[^]*downstream`));
    // Exactly as deep as it walks: nothing was cut.
    assert.deepEqual((await lineageGraph(chain(maxDepth), 'm0')).cutAt, []);
    const shallow = await lineageGraph(chain(3), 'm0');
    assert.deepEqual(shallow.cutAt, []);
    assert.equal(shallow.edges.length, 3);
    assert.doesNotMatch(formatLineageTree(shallow), /cut at/);
  });

  it('draws a shared ancestor\'s own lineage once, so a lineage of many paths stays as long as its artifacts', () => {
    // Four artifacts a level, each built from all four of the level above, twelve levels: drawn on
    // every path, that was 4^12 (16.8 million) lines.
    const root = 'registry://models/m:1';
    const nodes: LineageGraph['nodes'] = new Map([[root, { ref: root, kind: 'model', digest: 'sha256:x' }]]);
    const edges: LineageGraph['edges'] = [];
    let prev = [root];
    for (let level = 1; level <= maxDepth; level++) {
      const refs = [0, 1, 2, 3].map((i) => `registry://datasets/d${level}-${i}:v1`);
      for (const r of refs) nodes.set(r, { ref: r, kind: 'dataset', digest: 'sha256:y' });
      for (const child of prev) for (const parent of refs) edges.push({ child, parent });
      prev = refs;
    }
    const lines = formatLineageTree({ root, nodes, edges, cutAt: [], refused: [] }).split('\n');
    assert.ok(lines.length < 200, `${lines.length} lines`);
    // Every artifact is drawn, and the repeats say where their lineage is.
    for (const ref of nodes.keys()) assert.ok(lines.some((l) => l.includes(ref)), ref);
    assert.ok(lines.some((l) => l.includes('d2-0:v1') && l.endsWith('(its ancestors are shown above)')));
    // The last level has no ancestors: drawn again where it is reached, with nothing to point to.
    assert.ok(!lines.some((l) => l.includes(`d${maxDepth}-0:v1`) && l.includes('shown above')));
  });
});

