import assert from 'node:assert/strict';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import type { EachBatchPayload, Kafka, Message } from 'kafkajs';
import pino from 'pino';
import { ArtifactState, registrationKey, type ArtifactEventRecord } from './artifact-state.js';
import { ancestryCycle, loadArtifactState, registerArtifacts, RegistrationConflictError, writeRegistrations } from './registry-topic.js';
import { ManifestError, parseManifest, readManifest } from './manifest.js';
import avro from 'avsc';
import { avroType, AvroDecoder, encodeFramed, loadSchema } from '@dlog/contracts';
import { MAX_RECORD_BYTES, recordBytes } from '@dlog/kafka';
import { waitFor } from '@dlog/runtime';

const d = (c: string) => `sha256:${c.repeat(64)}`;

function art(ref: string, digest: string, parents: string[] = [], kind: ArtifactEventRecord['kind'] = 'model'): ArtifactEventRecord {
  return { event_id: ref, kind, ref, name: ref, version: '1', digest, uri: null, metadata: {}, parents, registered_at: 1, registered_by: 't' };
}

describe('ArtifactState', () => {
  it('keeps versions immutable: same digest is a no-op, another digest a conflict', () => {
    const s = new ArtifactState();
    assert.equal(s.apply(art('m', d('a'))), 'added');
    assert.equal(s.apply(art('m', d('a'))), 'unchanged');
    const refused = art('m', d('b'));
    assert.equal(s.apply(refused), 'conflict');
    assert.equal(s.get('m')?.digest, d('a'));
    assert.equal(s.conflicts.length, 1);
    // The same refused registration read again (a follower reading the topic once more): once.
    assert.equal(s.apply(refused), 'conflict');
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

  it('keys every registration apart on the compacted topic, but a resend of the same write alike', () => {
    // Compaction keeps the last message of a key. Two runs registering the same content around a
    // third's other digest (A, B, A) shared a key: compaction dropped the first A, and B, refused
    // when written, became the first in the log, the one every restarted reader kept.
    const first = { ...art('registry://models/m:1', d('a'), ['ds:1', 'git:x']), metadata: { auc: '0.9', f1: '0.8' } };
    const key = registrationKey(first);
    assert.ok(key.startsWith('registry://models/m:1@'), key);
    assert.equal(registrationKey({ ...first }), key, 'a resend of one write collapses');
    const again = { ...first, event_id: 'second-run', registered_at: 2 };
    assert.notEqual(registrationKey(again), key, 'the same content from another run keeps its place in the log');
    const log = [first, { ...first, event_id: 'other-digest', digest: d('b') }, again];
    const compacted = [...new Map(log.map((e) => [registrationKey(e), e])).values()];
    const kept = new ArtifactState();
    for (const e of compacted) kept.apply(e);
    assert.equal(kept.get('registry://models/m:1')?.digest, d('a'), 'after compaction readers still keep the first registration');
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
    assert.equal(s.lineage('model').cut, false);
  });

  it('cuts a wide lineage at 1,000 ancestors, nearest first and by ref within a generation, and says so', () => {
    // A model trained on 1,500 daily partitions: uncut, each of its decisions carried ~145 KB of
    // lineage, and past ~10,000 partitions every one was over what Kafka holds.
    const shards = Array.from({ length: 1500 }, (_, i) => `registry://datasets/daily:${String(i).padStart(5, '0')}`);
    const stateOf = (parents: string[]) => {
      const s = new ArtifactState();
      s.apply(art('registry://datasets/pretrain', d('1'), [], 'dataset'));
      s.apply(art('base', d('2'), ['registry://datasets/pretrain']));
      s.apply(art('model', d('3'), [...parents, 'base']));
      return s;
    };
    const lineageOf = (parents: string[]) => stateOf(parents).lineage('model');
    assert.equal(stateOf(shards).ancestors('model').length, 1000);
    const l = lineageOf(shards);
    assert.equal(l.ancestors.length, 1000);
    assert.equal(l.cut, true);
    assert.ok(l.ancestors.every((a) => a.depth === 1 && a.via === 'model'), 'the farther generation (pretrain) is what goes first');
    assert.deepEqual(l.ancestors.slice(0, 3).map((a) => a.ref), ['base', 'registry://datasets/daily:00000', 'registry://datasets/daily:00001']);
    assert.equal(l.ancestors.at(-1)!.ref, 'registry://datasets/daily:00998');
    // Parents are a set: the order a manifest listed them in moves no cut.
    assert.deepEqual(lineageOf([...shards].reverse()), l);
    // Exactly the limit is whole; one more is cut, though the generation it fills is not.
    assert.deepEqual([lineageOf(shards.slice(0, 998)).ancestors.length, lineageOf(shards.slice(0, 998)).cut], [1000, false]);
    assert.deepEqual([lineageOf(shards.slice(0, 999)).ancestors.length, lineageOf(shards.slice(0, 999)).cut], [1000, true]);
  });

  it('says when a lineage is cut at 32 generations', () => {
    const chain = (n: number) => {
      const s = new ArtifactState();
      for (let i = 0; i < n; i++) s.apply(art(`d${i}`, d('1'), [`d${i + 1}`], 'dataset'));
      return s.lineage('d0');
    };
    assert.deepEqual([chain(40).ancestors.length, chain(40).cut], [32, true]);
    // d32 is named by d31 but not registered: still an ancestor, and the lineage ends there.
    assert.deepEqual([chain(32).ancestors.length, chain(32).cut], [32, false]);
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
    // A digest in upper-case hex is the same digest (tools print either): stored lower-case.
    const upper = parseManifest(`artifacts:\n  - {kind: model, name: m, version: "1", digest: "${d('c').toUpperCase()}"}\n`, 'm.yaml', 'me');
    assert.equal(upper[0]?.digest, d('c'));
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

  it('refuses a metadata number or boolean that would not be stored as written, saying how to quote it', () => {
    // Stored as String(value): a commit 0e12345 became "0", and as versions are immutable the
    // corrected manifest was then refused as a conflict.
    const manifest = (metadata: string) => `artifacts:\n  - {kind: dataset, name: x, version: v1, digest: "${d('a')}", metadata: {${metadata}}}\n`;
    for (const [typed, stored] of [
      ['0e12345', '0'],
      ['0.9120', '0.912'],
      ['0x1F', '31'],
      ['12345678901234567890', '12345678901234567000'],
      ['2024.10', '2024.1'],
      ['1e3', '1000'],
      ['True', 'true'],
    ] as const) {
      assert.throws(
        () => parseManifest(manifest(`v: ${typed}`), 'm.yaml', 'me'),
        (e: unknown) =>
          e instanceof ManifestError &&
          e.path === 'artifacts.0.metadata.v' &&
          e.message.includes(`metadata v would be stored as ${stored}, not ${typed}`) &&
          e.message.includes(`quote it: v: "${typed}"`),
        typed,
      );
    }
    assert.throws(() => parseManifest(manifest('0x1F: build'), 'm.yaml', 'me'), /metadata key 0x1F would be stored as 31: unquoted YAML reads it as a number; quote it: "0x1F"/);
    assert.throws(() => parseManifest(`{"artifacts": [{"kind": "dataset", "name": "x", "version": "v1", "digest": "${d('a')}", "metadata": {"auc": 0.9120}}]}`, 'm.json', 'me'), /quote it: auc: "0\.9120"/);
    // What prints as written is kept, as the project's examples write it; quoted text as it is.
    const [e] = parseManifest(manifest('rows: 1200000, auc: 0.912, temperature: 0.1, enabled: true, commit: "0e12345", exact: "0.9120"'), 'm.yaml', 'me');
    assert.deepEqual(e!.metadata, { rows: '1200000', auc: '0.912', temperature: '0.1', enabled: 'true', commit: '0e12345', exact: '0.9120' });
    const example = readManifest(path.resolve(import.meta.dirname, '../../../infra/examples/artifacts.yaml'), 'me');
    assert.deepEqual(example.find((a) => a.kind === 'model')?.metadata, { framework: 'xgboost-2.1', auc: '0.912' });
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

describe('registry topic', () => {
  const silent = pino({ level: 'silent' });
  const topic = 'registry.artifacts';
  const t = avroType('artifact-event');
  const reg = (digest: string, eventId: string): ArtifactEventRecord => ({ ...art('registry://models/loan-approver:2.5.0', digest), event_id: eventId, name: 'loan-approver', version: '2.5.0' });
  const realFetch = globalThis.fetch;
  afterEach(() => {
    globalThis.fetch = realFetch;
  });

  /** The registry's schema by id, as the stub registry answers for `id`: 404, 500 or the contract. */
  function registryAnswers(answer: (id: number, call: number) => 404 | 500 | 200): { calls: Map<number, number> } {
    const calls = new Map<number, number>();
    globalThis.fetch = (async (url: string | URL | Request) => {
      const id = Number(String(url).split('/').pop());
      const call = (calls.get(id) ?? 0) + 1;
      calls.set(id, call);
      const status = answer(id, call);
      if (status !== 200) return new Response('', { status });
      return new Response(JSON.stringify({ schema: JSON.stringify(loadSchema('artifact-event')) }), { status: 200 });
    }) as typeof fetch;
    return { calls };
  }

  /**
   * A one-partition topic read as kafkajs reads it: a batch from the last offset handled, and a
   * batch whose handler throws delivered again after a backoff (the follower retries within its
   * handler; were it to throw, this would still deliver the batch again).
   */
  function topicOf(values: Buffer[], keys: (string | null)[] = []) {
    const log = [...values];
    let eachBatch: ((p: EachBatchPayload) => Promise<void>) | undefined;
    let stopped = false;
    let next = 0;
    const deliver = async () => {
      while (!stopped) {
        if (!eachBatch || next >= log.length) {
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        const from = next;
        const messages = log.slice(from).map((value, i) => ({ offset: String(from + i), value, key: keys[from + i] === undefined || keys[from + i] === null ? null : Buffer.from(keys[from + i]!), headers: {}, timestamp: '0', attributes: 0 }));
        const batch = { topic, partition: 0, messages, lastOffset: () => String(log.length - 1) };
        try {
          await eachBatch({ batch, heartbeat: async () => {}, isRunning: () => !stopped, isStale: () => false } as unknown as EachBatchPayload);
          next = from + messages.length;
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const kafka = {
      admin: () => ({ connect: async () => {}, disconnect: async () => {}, fetchTopicOffsets: async () => [{ partition: 0, low: '0', high: String(log.length) }] }),
      consumer: () => ({
        connect: async () => {},
        subscribe: async () => {},
        // Only kafkajs's event for batches it filtered empty is listened to; this log has none.
        events: { END_BATCH_PROCESS: 'consumer.end_batch_process' },
        on: () => () => undefined,
        disconnect: async () => {
          stopped = true;
        },
        run: async (o: { eachBatch: (p: EachBatchPayload) => Promise<void> }) => {
          eachBatch = o.eachBatch;
          void deliver();
        },
      }),
    } as unknown as Kafka;
    return { kafka, append: (v: Buffer) => log.push(v) };
  }

  it('reads again a registration whose schema the registry does not serve yet, instead of skipping it for good', async () => {
    // Skipped, the version stayed unknown until a restart, and a later registration of the same
    // ref with another digest (refused by every other reader) was the one this process kept.
    registryAnswers((id, call) => (id === 11 && call === 1 ? 404 : id === 11 && call === 2 ? 500 : 200));
    const topicLog = topicOf([encodeFramed(t, 11, reg(d('a'), 'first'))]);
    const f = await loadArtifactState({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, follow: true, timeoutMs: 5_000 });
    try {
      assert.equal(f.state.get('registry://models/loan-approver:2.5.0')?.event_id, 'first');
      assert.equal(f.stats.skipped, 0);
      assert.equal(f.stats.retried, 2, 'once for the 404, once for the registry error');
      topicLog.append(encodeFramed(t, 12, reg(d('b'), 'refused')));
      await waitFor(() => f.state.conflicts.length === 1, { timeoutMs: 5_000, what: 'the later registration read' });
      assert.equal(f.state.get('registry://models/loan-approver:2.5.0')?.digest, d('a'));
    } finally {
      await f.stop();
    }
  });

  it('ends a start-up load whose registration schema never appears with an error naming it, within its timeout', async () => {
    registryAnswers((id) => (id === 11 ? 404 : 200));
    const started = Date.now();
    await assert.rejects(
      loadArtifactState({ kafka: topicOf([encodeFramed(t, 11, reg(d('a'), 'first'))]).kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, timeoutMs: 300 }),
      /not read to its end within 300 ms: schema id 11 is not in the registry at http:\/\/sr, so the registration at partition 0 offset 0 cannot be read; point SCHEMA_REGISTRY_URL at the registry/,
    );
    assert.ok(Date.now() - started < 1_500, `${Date.now() - started} ms`);
  });

  it('skips a registration whose schema never appears once its grace is over, counts it, and reads on', async () => {
    // Held for good, it stopped every enricher start (and dlog register's read-back) until the
    // compacted topic dropped it, which it does not while it is its key's newest record.
    registryAnswers((id) => (id === 11 ? 404 : 200));
    const topicLog = topicOf([encodeFramed(t, 11, reg(d('a'), 'lost')), encodeFramed(t, 12, { ...reg(d('c'), 'other'), ref: 'registry://models/other:1', name: 'other', version: '1' })]);
    const f = await loadArtifactState({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, follow: true, timeoutMs: 10_000, unknownSchemaGraceMs: 300 });
    try {
      assert.equal(f.state.get('registry://models/loan-approver:2.5.0'), undefined);
      assert.equal(f.state.get('registry://models/other:1')?.event_id, 'other');
      assert.deepEqual([f.stats.skipped, f.stats.skippedBy], [1, { unknown_schema_id: 1 }]);
      assert.ok(f.stats.retried >= 1);
    } finally {
      await f.stop();
    }
  });

  it('gives an unserved schema its grace once, not again for every batch of registrations written with it', async () => {
    // Per batch, a registry topic of several batches under such an id outlasted the load timeout.
    registryAnswers((id) => (id === 11 ? 404 : 200));
    const topicLog = topicOf([encodeFramed(t, 11, reg(d('a'), 'lost-1'))]);
    const f = await loadArtifactState({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, follow: true, timeoutMs: 10_000, unknownSchemaGraceMs: 400 });
    try {
      assert.equal(f.stats.skippedBy.unknown_schema_id, 1);
      const started = Date.now();
      topicLog.append(encodeFramed(t, 11, { ...reg(d('b'), 'lost-2'), ref: 'registry://models/b:1', name: 'b', version: '1' }));
      topicLog.append(encodeFramed(t, 12, { ...reg(d('c'), 'read'), ref: 'registry://models/c:1', name: 'c', version: '1' }));
      await waitFor(() => f.state.get('registry://models/c:1') !== undefined, { timeoutMs: 5_000, what: 'the registration behind it' });
      assert.ok(Date.now() - started < 300, `a later batch waited ${Date.now() - started} ms`);
      assert.equal(f.stats.skippedBy.unknown_schema_id, 2);
    } finally {
      await f.stop();
    }
  });

  it('refuses to register while a registration on the topic cannot be read, since it may hold the version', async () => {
    // Checked against the rest, another digest passed and "registered" was printed, while every
    // reader able to read the first kept it and ignored the new one.
    registryAnswers((id) => (id === 11 ? 404 : 200));
    const unread = reg(d('a'), 'unread');
    const topicLog = topicOf([encodeFramed(t, 11, unread)], [registrationKey(unread)]);
    await assert.rejects(
      registerArtifacts({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, events: [reg(d('b'), 'mine')], unknownSchemaGraceMs: 100 }),
      (err: Error) =>
        /1 registration\(s\) of this manifest's versions on registry\.artifacts were written with a schema the registry at http:\/\/sr does not serve \(registry:\/\/models\/loan-approver:2\.5\.0@unread at partition 0 offset 0\).*nothing was written.*SCHEMA_REGISTRY_URL/.test(err.message),
    );
    // One of another version does not stop this one (a record whose schema a registry lost would
    // otherwise block every registration for good): there is no producer here, so getting as far
    // as writing is the proof.
    await assert.rejects(
      registerArtifacts({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, events: [{ ...reg(d('b'), 'other'), ref: 'registry://models/other:1', name: 'other', version: '1' }], unknownSchemaGraceMs: 100 }),
      (err: Error) => !/does not serve/.test(err.message),
    );
  });

  it('refuses a registration that would make a version its own ancestor, in the manifest or with what is registered', async () => {
    const parents = new Map<string, string[]>([['m:1', ['ds:1', 'git:a']], ['ds:1', ['raw:1']], ['raw:1', ['m:1']], ['git:a', []]]);
    assert.deepEqual(ancestryCycle('m:1', (r) => parents.get(r)), ['m:1', 'ds:1', 'raw:1', 'm:1']);
    assert.equal(ancestryCycle('git:a', (r) => parents.get(r)), undefined);
    assert.deepEqual(ancestryCycle('self:1', () => ['self:1']), ['self:1', 'self:1']);
    // A lineage 50,000 generations deep (hourly snapshots, each the next one's parent): a recursive
    // walk overflowed the stack.
    const deep = (r: string) => (r === 'snap:0' ? [] : [`snap:${Number(r.slice(5)) - 1}`]);
    assert.equal(ancestryCycle('snap:50000', deep), undefined);
    // The child is registered already, naming a parent not registered yet; the parent then names the child.
    registryAnswers(() => 200);
    const child = { ...art('registry://models/child:1', d('a'), ['registry://datasets/p:1']), event_id: 'child', name: 'child', version: '1' };
    const topicLog = topicOf([encodeFramed(t, 12, child)]);
    const parent = { ...art('registry://datasets/p:1', d('b'), ['registry://models/child:1'], 'dataset'), event_id: 'p', name: 'p', version: '1' };
    await assert.rejects(
      registerArtifacts({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log: silent, events: [parent] }),
      /registry:\/\/datasets\/p:1 would be its own ancestor \(registry:\/\/datasets\/p:1 → registry:\/\/models\/child:1 → registry:\/\/datasets\/p:1\): nothing was written/,
    );
  });

  it('reports conflicts in the history once, and warns only of one that arrives while following', async () => {
    // Every dlog register run printed a warning per registration ever refused, anyone's.
    registryAnswers(() => 200);
    const lines: { level: number; msg: string; conflicts?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const topicLog = topicOf([encodeFramed(t, 12, reg(d('a'), 'first')), encodeFramed(t, 12, reg(d('b'), 'refused-1')), encodeFramed(t, 12, reg(d('c'), 'refused-2'))]);
    const f = await loadArtifactState({ kafka: topicLog.kafka, topic, schemaRegistryUrl: 'http://sr', log, follow: true, timeoutMs: 5_000 });
    try {
      assert.equal(f.stats.conflicts, 2);
      assert.deepEqual(lines.filter((l) => l.level >= 40).map((l) => l.msg), []);
      assert.deepEqual(lines.filter((l) => l.conflicts !== undefined).map((l) => l.conflicts), [2]);
      topicLog.append(encodeFramed(t, 12, reg(d('e'), 'refused-live')));
      await waitFor(() => f.stats.conflicts === 3, { timeoutMs: 5_000, what: 'the live conflict read' });
      assert.deepEqual(lines.filter((l) => l.level >= 40).map((l) => l.msg), ['conflicting registration ignored: versions are immutable']);
    } finally {
      await f.stop();
    }
  });

  it('skips and counts only what can never be read, and reads the rest', async () => {
    const { calls } = registryAnswers(() => 200);
    const f = await loadArtifactState({
      kafka: topicOf([Buffer.from('not framed'), Buffer.concat([encodeFramed(t, 11, reg(d('a'), 'x')).subarray(0, 5), Buffer.from([0xff, 0xff])]), encodeFramed(t, 11, reg(d('a'), 'ok'))]).kafka,
      topic,
      schemaRegistryUrl: 'http://sr',
      log: silent,
      timeoutMs: 5_000,
    });
    assert.equal(f.state.get('registry://models/loan-approver:2.5.0')?.event_id, 'ok');
    assert.deepEqual([f.stats.skipped, f.stats.skippedBy, f.stats.retried], [2, { wrong_magic_byte: 1, invalid_avro: 1 }, 0]);
    assert.equal(calls.get(11), 1);
  });

  it('writes a large manifest in sends the broker takes, and says how far it got when one fails', async () => {
    // One send of 4,000 registrations was ~1.9 MB, refused whole by the broker's 1 MiB default.
    const messages: Message[] = Array.from({ length: 4000 }, (_, i) => {
      const e = { ...art(`registry://datasets/clickstream-daily:2023-${String(i).padStart(5, '0')}`, `sha256:${i.toString(16).padStart(64, '0')}`, [], 'dataset'), uri: `s3://ml-data/clickstream/daily/2023-${i}/`, metadata: { rows: String(1000 + i), owner: 'growth' } };
      return { key: registrationKey(e), value: encodeFramed(t, 1, e) };
    });
    const sends: Message[][] = [];
    await writeRegistrations({ send: async (r) => (sends.push(r.messages), []) }, topic, messages);
    assert.ok(sends.length > 1, `${sends.length} sends`);
    for (const part of sends) assert.ok(part.reduce((n, m) => n + recordBytes(m), 0) < MAX_RECORD_BYTES);
    assert.deepEqual(sends.flat(), messages, 'all of them, in order');

    let n = 0;
    await assert.rejects(
      writeRegistrations({ send: async () => (n++ === 1 ? Promise.reject(new Error('broker gone')) : []) }, topic, messages),
      new RegExp(`failed after ${sends[0]!.length} of 4000 were written \\(broker gone\\)\\. Register the manifest again`),
    );
  });
});
