import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArtifactState, type ArtifactEventRecord } from './artifact-state.js';
import { ManifestError, parseManifest } from './manifest.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

function art(ref: string, digest: string, parents: string[] = [], kind: ArtifactEventRecord['kind'] = 'model'): ArtifactEventRecord {
  return { event_id: ref, kind, ref, name: ref, version: '1', digest, uri: null, metadata: {}, parents, registered_at: 1, registered_by: 't' };
}

describe('ArtifactState', () => {
  it('keeps versions immutable: same digest is a no-op, another digest a conflict', () => {
    const s = new ArtifactState();
    assert.equal(s.apply(art('m', d('a'))), 'added');
    assert.equal(s.apply(art('m', d('a'))), 'unchanged');
    assert.equal(s.apply(art('m', d('b'))), 'conflict');
    assert.equal(s.get('m')?.digest, d('a'));
    assert.equal(s.conflicts.length, 1);
  });

  it('walks lineage to every ancestor, nearest first, through cycles', () => {
    const s = new ArtifactState();
    s.apply(art('ds', d('1'), [], 'dataset'));
    s.apply(art('code', d('2'), [], 'code'));
    s.apply(art('base', d('3'), ['ds']));
    s.apply(art('model', d('4'), ['base', 'code']));
    s.apply(art('loop-a', d('5'), ['loop-b']));
    s.apply(art('loop-b', d('6'), ['loop-a']));
    assert.deepEqual(
      s.ancestors('model').map((a) => [a.ref, a.kind, a.depth]),
      [
        ['base', 'model', 1],
        ['code', 'code', 1],
        ['ds', 'dataset', 2],
      ],
    );
    assert.deepEqual(s.ancestors('loop-a').map((a) => a.ref), ['loop-b']);
  });
});

describe('manifest', () => {
  it('derives model refs and refuses what would be ambiguous', () => {
    const events = parseManifest(
      `artifacts:\n  - {kind: dataset, name: loans, version: v5, digest: "${d('a')}"}\n  - {kind: model, name: loan-approver, version: 2.4.1, digest: "${d('b')}", parents: [registry://datasets/loans:v5], metadata: {auc: 0.91}}\n`,
      'm.yaml',
      'me',
    );
    assert.deepEqual(events.map((e) => e.ref), ['registry://datasets/loans:v5', 'registry://models/loan-approver:2.4.1']);
    assert.equal(events[1]?.metadata.auc, '0.91');
    assert.throws(() => parseManifest('artifacts:\n  - {kind: model, name: m, version: "1", digest: sha256:zz}\n', 'm.yaml', 'me'), (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.digest');
    assert.throws(() => parseManifest(`artifacts:\n  - {kind: model, name: m, version: "1", ref: registry://models/x:2, digest: "${d('c')}"}\n`, 'm.yaml', 'me'), /a model's ref is registry:\/\/models\/m:1/);
    assert.throws(() => parseManifest('artifacts: []\n', 'm.yaml', 'me'), ManifestError);
    assert.throws(
      () => parseManifest(`artifacts:\n  - {kind: model, name: "fraud:eu", version: "3", digest: "${d('c')}"}\n`, 'm.yaml', 'me'),
      (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.name' && /fraud-eu/.test(e.message),
    );
    // Another kind under a model's or an environment's ref would be what those decisions resolve to.
    assert.throws(
      () => parseManifest(`artifacts:\n  - {kind: dataset, name: d, version: "1", ref: "registry://models/loan:9", digest: "${d('c')}"}\n`, 'm.yaml', 'me'),
      (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.ref' && /for kind model/.test(e.message),
    );
    assert.throws(
      () => parseManifest(`artifacts:\n  - {kind: config, name: c, version: "1", ref: "registry://environments/${d('e')}", digest: "${d('c')}"}\n`, 'm.yaml', 'me'),
      (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.ref' && /for kind environment/.test(e.message),
    );
    // An environment is named by its digest, the only thing a decision carries of it.
    const env = parseManifest(`artifacts:\n  - {kind: environment, name: py311-cuda12, version: "2026.11", digest: "${d('e')}"}\n`, 'm.yaml', 'me');
    assert.equal(env[0]!.ref, `registry://environments/${d('e')}`);
    assert.throws(
      () => parseManifest(`artifacts:\n  - {kind: environment, name: py, version: "1", ref: registry://environments/py:1, digest: "${d('e')}"}\n`, 'm.yaml', 'me'),
      (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.ref' && /environment_digest/.test(e.message),
    );
    assert.throws(() => parseManifest(`artifacts:\n  - {kind: model, name: m, version: "1", digest: "${d('c')}", colour: red}\n`, 'm.yaml', 'me'), /colour/);
  });
});
