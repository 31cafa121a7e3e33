import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArtifactState, registrationKey, type ArtifactEventRecord } from './artifact-state.js';
import { RegistrationConflictError } from './registry-topic.js';
import { ManifestError, parseManifest } from './manifest.js';
import avro from 'avsc';
import { avroType, AvroDecoder, encodeFramed, loadSchema } from '@dlog/contracts';

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

  it('refuses the same digest with other parents, metadata, kind or uri; parent order means nothing', () => {
    const s = new ArtifactState();
    const first = { ...art('m', d('a'), ['ds:1', 'git:x']), metadata: { auc: '0.9' } };
    assert.equal(s.apply(first), 'added');
    assert.equal(s.check({ ...first, event_id: 'other', parents: ['git:x', 'ds:1'], registered_at: 2, registered_by: 'u' }), 'unchanged');
    assert.equal(s.check({ ...first, parents: ['ds:1'] }), 'conflict');
    assert.equal(s.check({ ...first, metadata: { auc: '0.8' } }), 'conflict');
    assert.equal(s.check({ ...first, kind: 'dataset' }), 'conflict');
    assert.equal(s.check({ ...first, uri: 's3://x' }), 'conflict');
    assert.equal(s.apply({ ...first, parents: ['ds:2'] }), 'conflict');
    assert.deepEqual(s.get('m')?.parents, ['ds:1', 'git:x']);
  });

  it('takes an environment as its digest: another name or metadata for it is the same registration', () => {
    // The SDK registers the snapshot at every start; an operator may describe it by its own name.
    const s = new ArtifactState();
    const sdk = { ...art(`registry://environments/${d('e')}`, d('e'), [], 'environment'), name: 'runtime-environment', version: 'eeeeeeeeeeee', metadata: { snapshot_json: '{}' } };
    assert.equal(s.apply(sdk), 'added');
    assert.equal(s.check({ ...sdk, event_id: 'op', name: 'gpu-node-pool-a', version: '2026-11', metadata: { owner: 'platform' }, registered_by: 'operator' }), 'unchanged');
    assert.equal(s.check({ ...sdk, uri: 's3://envs/e' }), 'conflict');
    assert.equal(s.check({ ...sdk, kind: 'config' }), 'conflict');
    // Not for other kinds: a model's name, version and metadata are part of what it is.
    const m = art('m', d('a'));
    assert.equal(s.apply(m), 'added');
    assert.equal(s.check({ ...m, metadata: { owner: 'x' } }), 'conflict');
  });

  it('keys each different content of a registration apart on the compacted topic, and an identical retry alike', () => {
    // Compaction keeps the last message of a key: a refused same-digest registration sharing the
    // kept one's key would replace it for every reader.
    const first = { ...art('registry://models/m:1', d('a'), ['ds:1', 'git:x']), metadata: { auc: '0.9', f1: '0.8' } };
    const key = registrationKey(first);
    assert.ok(key.startsWith(`registry://models/m:1@${d('a')}@`), key);
    const retry = { ...first, event_id: 'retry', registered_at: 2, registered_by: 'ci', parents: ['git:x', 'ds:1', 'ds:1'], metadata: { f1: '0.8', auc: '0.9' }, uri: '' };
    assert.equal(registrationKey(retry), key);
    for (const other of [
      { ...first, parents: ['ds:2', 'git:x'] },
      { ...first, metadata: { auc: '0.91', f1: '0.8' } },
      { ...first, kind: 'dataset' as const },
      { ...first, uri: 's3://m' },
      { ...first, name: 'n' },
      { ...first, version: '2' },
      { ...first, digest: d('b') },
    ]) {
      assert.notEqual(registrationKey(other), key, JSON.stringify(other));
    }
    // An environment's other name is the same registration to readers, yet two messages: of two
    // kept apart the first is what readers keep; under one key compaction would keep the later.
    const env = art(`registry://environments/${d('e')}`, d('e'), [], 'environment');
    assert.notEqual(registrationKey({ ...env, name: 'pool-a' }), registrationKey(env));
  });

  it('tells the loser of a race what of its manifest was written, and a same-digest change what differs', () => {
    const lost = new RegistrationConflictError([{ ref: 'registry://models/race:1', registered: d('a'), given: d('b') }], true, ['registry://datasets/ds:v2']);
    assert.match(lost.message, /someone else at the same moment/);
    assert.match(lost.message, /Registered from the same manifest \(written before the refusal, kept\): registry:\/\/datasets\/ds:v2/);
    const changed = new RegistrationConflictError([{ ref: 'registry://models/race:1', registered: d('a'), given: d('a'), fields: ['parents'] }]);
    assert.match(changed.message, /already registered with digest sha256:a{64} and other parents; versions are immutable, so this registration is refused\. Register a new version/);
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

  it('says how to quote a version YAML reads as a number', () => {
    assert.throws(
      () => parseManifest(`artifacts:\n  - kind: model\n    name: y\n    version: 1.0\n    digest: "${d('e')}"\n`, 'm.yaml', 'me'),
      (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.version' && /YAML reads 1\.0 as a number; quote it: version: "1\.0"/.test(e.message),
    );
  });

  it('gives the quoting hint only where text is expected, naming the list of an item', () => {
    const fails = (yaml: string) => {
      try {
        parseManifest(`artifacts:\n  - ${yaml}\n`, 'm.yaml', 'me');
      } catch (e) {
        assert.ok(e instanceof ManifestError);
        return e;
      }
      assert.fail(`accepted: ${yaml}`);
    };
    const base = `kind: dataset, name: a, version: "1", digest: "${d('c')}"`;
    // A number where a list is due: quoting would not help.
    const list = fails(`{${base}, parents: 5}`);
    assert.equal(list.path, 'artifacts.0.parents');
    assert.doesNotMatch(list.message, /quote/);
    const item = fails(`{${base}, parents: [1.0]}`);
    assert.equal(item.path, 'artifacts.0.parents.0');
    assert.match(item.message, /each of parents must be text, and unquoted YAML reads 1\.0 as a number; quote it: "1\.0"/);
    // An empty value: quoting it would make an empty name, which is refused too.
    const empty = fails(`kind: dataset\n    name:\n    version: "1"\n    digest: "${d('c')}"`);
    assert.equal(empty.path, 'artifacts.0.name');
    assert.doesNotMatch(empty.message, /quote/);
    assert.match(fails(`{${base}, uri: true}`).message, /uri must be text, and unquoted YAML reads true as a boolean; quote it: uri: "true"/);
    assert.doesNotMatch(fails(`{kind: 5, name: a, version: "1", digest: "${d('c')}"}`).message, /quote/);
  });

  it("refuses ':' in the name of every kind whose ref is made from name and version", () => {
    // dataset a:b version c and dataset a version b:c would both be registry://datasets/a:b:c.
    assert.throws(
      () => parseManifest(`artifacts:\n  - {kind: dataset, name: "a:b", version: c, digest: "${d('c')}"}\n`, 'm.yaml', 'me'),
      (e: unknown) => e instanceof ManifestError && e.path === 'artifacts.0.name' && /registry:\/\/datasets\/<name>:<version>/.test(e.message) && /a-b/.test(e.message),
    );
    assert.throws(() => parseManifest(`artifacts:\n  - {kind: config, name: "p:q", version: "1", digest: "${d('c')}"}\n`, 'm.yaml', 'me'), /a config's name cannot contain ':'/);
    // With a ref of its own the name is not part of it.
    assert.equal(parseManifest(`artifacts:\n  - {kind: dataset, name: "a:b", version: c, ref: "s3://bucket/a-b@c", digest: "${d('c')}"}\n`, 'm.yaml', 'me')[0]!.ref, 's3://bucket/a-b@c');
    assert.equal(parseManifest(`artifacts:\n  - {kind: dataset, name: a, version: "b:c", digest: "${d('c')}"}\n`, 'm.yaml', 'me')[0]!.ref, 'registry://datasets/a:b:c');
  });

  it('refuses one ref twice in a manifest with other parents', () => {
    assert.throws(
      () => parseManifest(`artifacts:\n  - {kind: dataset, name: a, version: "1", digest: "${d('c')}"}\n  - {kind: dataset, name: a, version: "1", digest: "${d('c')}", parents: [x://y]}\n`, 'm.yaml', 'me'),
      /registry:\/\/datasets\/a:1 appears twice with different parents/,
    );
  });
});

describe('artifact-event contract', () => {
  it('reads no registration of a writer schema that appended a kind, rather than taking it for another kind', async () => {
    // With an enum default the sink (a plain AvroDecoder, as here) stored a `prompt` as a policy.
    // A new kind needs a new contract; the registry refuses an appended one (test/registry.test.ts).
    const contract = loadSchema('artifact-event');
    const newer = JSON.parse(JSON.stringify(contract)) as { fields: { name: string; type: { symbols: string[]; default?: string } }[] };
    const kind = newer.fields.find((f) => f.name === 'kind')!.type;
    assert.equal(kind.default, undefined);
    kind.symbols.push('prompt');
    const newerType = avro.Type.forSchema(newer as unknown as avro.Schema);
    const schemas = new Map([
      [1, JSON.stringify(contract)],
      [2, JSON.stringify(newer)],
    ]);
    const decoder = new AvroDecoder<ArtifactEventRecord>(avroType('artifact-event'), async (id) => schemas.get(id));
    const values = [encodeFramed(avroType('artifact-event'), 1, art('registry://models/m:1', d('1'))), encodeFramed(newerType, 2, { ...art('registry://prompts/p:1', d('4')), kind: 'prompt' })];
    await decoder.prepare(values);
    const [model, prompt] = values.map((v) => decoder.decode(v));
    assert.ok(model?.ok && model.value.kind === 'model', JSON.stringify(model));
    assert.equal(prompt?.ok === false && prompt.reason, 'incompatible_schema', JSON.stringify(prompt));
  });
});
