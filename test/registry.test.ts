import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Schema } from 'avsc';
import {
  avroType,
  createRegistry,
  encodeFramed,
  loadSchema,
  registerAvro,
  SchemaIncompatibleError,
  valueSubject,
  type ArtifactEventRecord,
} from '@dlog/contracts';
import { loadArtifactState, parseManifest, RegistrationConflictError, registerArtifacts } from '@dlog/artifacts';
import { createKafka, ensureTopics, loadTopicDefinitions } from '@dlog/kafka';
import { createStore, migrate, type Store } from '@dlog/store';
import { createSink, sinkTables, type Sink } from '../services/sink/src/index.js';
import { storeQuery } from '../packages/cli/src/audit-query.js';
import { formatLineageTree, lineageGraph } from '../packages/cli/src/lineage.js';
import { traceDecision } from '../packages/cli/src/trace.js';
import { planDeploy } from '../packages/cli/src/audit-events.js';
import { config, log, tempDir, unique, waitFor } from './helpers.js';

const sample = {
  event_id: '01890f5e-7a3c-7cc3-98a2-3f0c1b2d4e5f',
  request_id: 'req_abc123xyz',
  ts: Date.parse('2026-11-27T10:00:00Z'),
  endpoint: 'loan-approver',
  decision_type: 'loan_approval',
  tenant: null,
  model: { name: 'loan-approver', version: '2.4.1', digest: 'sha256:abc' },
  image: { ref: 'registry.example/inference-loan:2.4.1', digest: 'sha256:def' },
  config: { ref: 'configs/prod/loan-params:v3', params: { temperature: 0.1, top_p: null, max_tokens: null, thresholds: { approve: 0.7 }, extra: {} } },
  preprocessing: null,
  environment_digest: 'sha256:env',
  input_json: '{"income":52000}',
  input_hash: 'sha256-00',
  output: { decision: 'approved', confidence: 0.87, scores: { approved: 0.87, declined: 0.13 }, token_logprobs: null, output_json: null },
  trajectory: null,
  producer: { service: 'loan-api', sdk: 'custom', host: null },
  attributes: {},
};

describe('schema registry (Apicurio, Confluent-compatible API)', () => {
  const registry = createRegistry(config.schemaRegistryUrl);

  it('registers a contract from schemas/, encodes with framing and decodes it back', async () => {
    const subject = unique('inference-event');
    const id = await registerAvro(registry, config.schemaRegistryUrl, subject, loadSchema('inference-event'));
    const bytes = await registry.encode(id, sample);
    assert.equal(bytes[0], 0, 'Confluent wire format starts with magic byte 0');
    assert.equal(bytes.readInt32BE(1), id, 'then the schema id');
    // A fresh client must fetch the schema by id from the registry to decode.
    const decoded = await createRegistry(config.schemaRegistryUrl).decode(bytes);
    assert.deepEqual(JSON.parse(JSON.stringify(decoded)), sample);
  });

  it('registers a new subject from several processes at once (replicas starting on a fresh cluster)', async () => {
    // Apicurio answered all but one of simultaneous first rule settings with 409 "already
    // exists"; before the retry, about one round in five of four at once failed here.
    for (let round = 0; round < 12; round++) {
      const subject = unique('race-value');
      const ids = await Promise.all(Array.from({ length: 8 }, () => registerAvro(createRegistry(config.schemaRegistryUrl), config.schemaRegistryUrl, subject, loadSchema('inference-event'))));
      assert.equal(new Set(ids).size, 1);
    }
  });

  it('accepts an additive change with a default and refuses a breaking one', async () => {
    const subject = unique('inference-event');
    const base = loadSchema('inference-event') as unknown as { fields: unknown[] } & Record<string, unknown>;
    await registerAvro(registry, config.schemaRegistryUrl, subject, base as unknown as Schema);

    const additive = { ...base, fields: [...base.fields, { name: 'region', type: ['null', 'string'], default: null }] };
    await registerAvro(registry, config.schemaRegistryUrl, subject, additive as unknown as Schema);

    const breaking = { ...base, fields: [...base.fields, { name: 'region', type: 'string' }] };
    await assert.rejects(registerAvro(registry, config.schemaRegistryUrl, subject, breaking as unknown as Schema), (err: unknown) => {
      assert.ok(err instanceof SchemaIncompatibleError);
      assert.equal(err.subject, subject);
      return true;
    });
  });
});

describe('artifact-event contract: kinds appended later', () => {
  it('refuses a contract that appends a kind, where it is registered, not in its readers', async () => {
    const contract = loadSchema('artifact-event');
    const kindOf = (schema: unknown) => (schema as { fields: { name: string; type: { symbols: string[]; default?: string } }[] }).fields.find((f) => f.name === 'kind')!.type;
    const register = (subject: string, schema: unknown) => registerAvro(createRegistry(config.schemaRegistryUrl), config.schemaRegistryUrl, subject, schema as Schema);
    const refused = (subject: string) => (err: unknown) => err instanceof SchemaIncompatibleError && err.subject === subject;
    const appended = JSON.parse(JSON.stringify(contract)) as unknown;
    kindOf(appended).symbols.push('prompt');

    // A reader of the contract could not read a `prompt`: under FULL_TRANSITIVE the registry says
    // so to whoever registers it, instead of every reader dead-lettering (or, with an enum
    // default, the sink storing it as another kind).
    const fresh = unique('artifacts-fresh');
    await register(fresh, contract);
    await assert.rejects(register(fresh, appended), refused(fresh));

    // Subjects that hold the contract of the one release-candidate build with an enum default
    // ("policy") take the contract without it: a default changes no data either way.
    const withDefault = JSON.parse(JSON.stringify(contract)) as unknown;
    kindOf(withDefault).default = 'policy';
    const held = unique('artifacts-held-default');
    await register(held, withDefault);
    await register(held, contract);
    await assert.rejects(register(held, appended), refused(held));
  });
});

describe('artifact registry in ClickHouse: the first registration of a ref in the log is the one kept', () => {
  const prefix = `${unique('reg-race')}.`;
  const topic = `${prefix}registry.artifacts`;
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'registry-test', log });
  let store: Store | undefined;
  let sink: Sink | undefined;
  after(async () => {
    await sink?.stop();
    await store?.close();
  });

  it('views, lineage, trace and deploy read the registration every reader keeps, and show the other as refused', async () => {
    const ref = 'registry://models/race:1';
    const d = (c: string) => `sha256:${c.repeat(64)}`;
    const reg = (over: Partial<ArtifactEventRecord> & Pick<ArtifactEventRecord, 'ref' | 'name' | 'version' | 'digest'>): ArtifactEventRecord => ({
      event_id: unique('e'),
      kind: 'dataset',
      uri: null,
      metadata: {},
      parents: [],
      registered_at: Date.now(),
      registered_by: 'test',
      ...over,
    });
    // Two registrations of one version at the same moment (both passed `dlog register`'s check):
    // the one written first wins, though the loser has the lower digest and the earlier client
    // clock, the two guesses readers made before.
    const events = [
      reg({ ref: 'registry://datasets/ds:v1', name: 'ds', version: 'v1', digest: d('1') }),
      reg({ ref: 'registry://datasets/ds:v2', name: 'ds', version: 'v2', digest: d('2') }),
      reg({ kind: 'model', ref, name: 'race', version: '1', digest: d('a'), parents: ['registry://datasets/ds:v1'], registered_at: Date.now() }),
      reg({ kind: 'model', ref, name: 'race', version: '1', digest: d('0'), parents: ['registry://datasets/ds:v2', 'git://x/race@abc'], registered_at: Date.now() - 60_000 }),
      // The kept digest again, saying other parents: refused too, by every reader and in ClickHouse.
      reg({ kind: 'model', ref, name: 'race', version: '1', digest: d('a'), parents: ['registry://datasets/ds:v2'], registered_at: Date.now() + 1 }),
    ];
    const admin = kafka.admin();
    await admin.connect();
    try {
      const def = loadTopicDefinitions().find((t) => t.name === 'registry.artifacts')!;
      await ensureTopics(admin, [{ ...def, name: topic }]);
    } finally {
      await admin.disconnect();
    }
    const id = await registerAvro(createRegistry(config.schemaRegistryUrl), config.schemaRegistryUrl, valueSubject(topic), loadSchema('artifact-event'));
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: events.map((e) => ({ key: `${e.ref}@${e.digest}`, value: encodeFramed(avroType('artifact-event'), id, e) })) });
    await producer.disconnect();
    // What the enricher keeps: the rule ClickHouse must agree with.
    const { state } = await loadArtifactState({ kafka, topic, schemaRegistryUrl: config.schemaRegistryUrl, log });
    assert.equal(state.get(ref)?.digest, d('a'));

    store = await createStore({ database: 'dlog', dataDir: tempDir('reg-race'), createDatabase: true, log });
    await migrate(store);
    sink = createSink({
      kafka,
      store,
      log,
      tables: sinkTables.filter((t) => t.table === 'artifacts'),
      config: { ...config, sinkGroupId: unique('reg-race-group'), topicPrefix: prefix, sinkBatchRows: 100, sinkFlushIntervalMs: 100 },
    });
    await sink.start();
    const q = storeQuery(store);
    await waitFor(async () => (Number((await q('SELECT count() AS n FROM artifacts'))[0]?.n) >= 5 ? true : undefined), { timeoutMs: 30_000, what: 'the registrations in ClickHouse' });

    const g = await lineageGraph(q, ref);
    assert.equal(g.nodes.get(ref)?.digest, d('a'));
    assert.deepEqual(g.edges.map((e) => e.parent).sort(), ['registry://datasets/ds:v1']);
    assert.deepEqual(g.refused.map((r) => r.digest), [d('0'), d('a')]);
    assert.match(formatLineageTree(g), /refused: sha256:0{64} registered later by test/);
    assert.match(formatLineageTree(g), /refused: sha256:a{64} \(the kept digest, saying something else of it\) registered later by test/);
    // Downstream too, only the kept registration's parents are edges: nothing was built from ds:v2.
    assert.deepEqual((await lineageGraph(q, 'registry://datasets/ds:v2')).edges, []);
    assert.deepEqual((await lineageGraph(q, 'registry://datasets/ds:v1')).edges, [{ child: ref, parent: 'registry://datasets/ds:v1' }]);
    assert.deepEqual((await q('SELECT digest FROM v_artifacts WHERE ref = {ref:String}', { ref })).map((r) => r.digest), [d('a')]);
    assert.deepEqual((await q('SELECT parent_ref, parent_kind FROM v_lineage WHERE child_ref = {ref:String}', { ref })).map((r) => [r.parent_ref, r.parent_kind]), [['registry://datasets/ds:v1', 'dataset']]);

    // A decision that named the model before it was registered: trace reports the kept one.
    await store.client.command({
      query: `INSERT INTO decisions (event_id, request_id, ts, model_name, model_version, resolved, unresolved_refs, sample_rate)
              VALUES ('race-decision', 'race-decision', now64(3), 'race', '1', false, ['${ref}'], 1)`,
    });
    const pkg = (await traceDecision(q, 'race-decision')).packages[0]!;
    assert.deepEqual(pkg.registeredSince.map((r) => r.digest), [d('a')]);
    assert.deepEqual(pkg.lineageSince.map((l) => l.ref), ['registry://datasets/ds:v1']);

    const deployment = await planDeploy(q, { endpoint: 'race-api', model: { name: 'race', version: '1' }, actor: 'test' });
    assert.equal(deployment.model_digest, d('a'));

    // The refused registration stays visible for audit, with its place in the log.
    const all = await q('SELECT digest, outcome, source_partition, source_offset FROM v_artifact_registrations WHERE ref = {ref:String} ORDER BY source_offset', { ref });
    assert.deepEqual(all.map((r) => [r.digest, r.outcome, r.source_partition, Number(r.source_offset)]), [
      [d('a'), 'registered', 0, 2],
      [d('0'), 'refused', 0, 3],
      [d('a'), 'refused', 0, 4],
    ]);
  });

  it('dlog register: the loser of a race hears what of its manifest was written; a changed repeat is refused', async () => {
    const topic2 = `${prefix}race2.registry.artifacts`;
    const admin = kafka.admin();
    await admin.connect();
    try {
      const def = loadTopicDefinitions().find((t) => t.name === 'registry.artifacts')!;
      await ensureTopics(admin, [{ ...def, name: topic2 }]);
    } finally {
      await admin.disconnect();
    }
    const register = (yaml: string) => registerArtifacts({ kafka, topic: topic2, schemaRegistryUrl: config.schemaRegistryUrl, log, events: parseManifest(yaml, 'm.yaml', 'test') });
    const manifest = (ds: string, model: string, parents: string) =>
      `artifacts:\n  - {kind: dataset, name: ds, version: ${ds}, digest: "sha256:${ds.slice(1).repeat(64)}"}\n` +
      `  - {kind: model, name: race, version: "1", digest: "sha256:${model.repeat(64)}", parents: [${parents}]}\n`;
    // Both read the registry before either writes (reading takes a consumer group join), so both
    // pass the check; the log decides.
    const results = await Promise.allSettled([register(manifest('v1', 'a', 'registry://datasets/ds:v1')), register(manifest('v2', 'b', 'registry://datasets/ds:v2'))]);
    const won = results.findIndex((r) => r.status === 'fulfilled');
    const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.ok(won >= 0 && lost, JSON.stringify(results.map((r) => r.status)));
    assert.ok(lost.reason instanceof RegistrationConflictError && lost.reason.lostRace, String(lost.reason));
    const loserDataset = `registry://datasets/ds:${won === 0 ? 'v2' : 'v1'}`;
    assert.deepEqual(lost.reason.written, [loserDataset]);
    assert.match(lost.reason.message, new RegExp(`written before the refusal, kept\\): ${loserDataset.replace(/[/:.]/g, '\\$&')}`));

    // The winner again with an extra parent: same digest, other parents.
    const w = won === 0 ? ['v1', 'a'] : ['v2', 'b'];
    await assert.rejects(register(manifest(w[0]!, w[1]!, `registry://datasets/ds:${w[0]}, git://github.com/acme/race@abc123`)), (err: unknown) => {
      assert.ok(err instanceof RegistrationConflictError && !err.lostRace);
      assert.match(err.message, /already registered with digest sha256:\w+ and other parents; versions are immutable, so this registration is refused/);
      return true;
    });
    // Unknown parents are warned of for what is written; an identical repeat writes nothing.
    const lonely = `artifacts:\n  - {kind: model, name: lonely, version: "1", digest: "sha256:${'c'.repeat(64)}", parents: [git://github.com/acme/lonely@abc]}\n`;
    assert.deepEqual((await register(lonely)).unknownParents, [{ ref: 'registry://models/lonely:1', parent: 'git://github.com/acme/lonely@abc' }]);
    const again = await register(lonely);
    assert.deepEqual([again.added, again.unchanged, again.unknownParents], [[], ['registry://models/lonely:1'], []]);
  });
});

describe('artifact registry topic: a manifest larger than one produce request, and a schema the registry does not serve yet', () => {
  const prefix = `${unique('reg-big')}.`;
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'registry-big-test', log });
  const url = config.schemaRegistryUrl;
  const realFetch = globalThis.fetch;
  const topics = { big: `${prefix}registry.artifacts`, late: `${prefix}late.registry.artifacts`, aborted: `${prefix}aborted.registry.artifacts` };
  before(async () => {
    const admin = kafka.admin();
    await admin.connect();
    try {
      const def = loadTopicDefinitions().find((t) => t.name === 'registry.artifacts')!;
      await ensureTopics(admin, Object.values(topics).map((name) => ({ ...def, name })));
    } finally {
      await admin.disconnect();
    }
  });
  after(() => {
    globalThis.fetch = realFetch;
  });

  it('registers 3,000 artifacts of one manifest, in sends the broker takes, and again as a no-op', async () => {
    // As one send (~1.4 MB) the broker refused the whole manifest (its default limit is 1 MiB).
    const pad = (i: number) => String(i).padStart(5, '0');
    const yaml = [
      'artifacts:',
      ...Array.from(
        { length: 3000 },
        (_, i) => `  - {kind: dataset, name: clickstream-daily, version: "2023-${pad(i)}", digest: "sha256:${i.toString(16).padStart(64, '0')}", uri: "s3://ml-data/clickstream/daily/2023-${pad(i)}/", metadata: {rows: ${1000 + i}, owner: growth}}`,
      ),
    ].join('\n');
    const register = () => registerArtifacts({ kafka, topic: topics.big, schemaRegistryUrl: url, log, events: parseManifest(yaml, 'big.yaml', 'test') });
    assert.equal((await register()).added.length, 3000);
    const again = await register();
    assert.deepEqual([again.added.length, again.unchanged.length], [0, 3000]);
    const { state, stats } = await loadArtifactState({ kafka, topic: topics.big, schemaRegistryUrl: url, log });
    assert.deepEqual([state.size, stats.skipped], [3000, 0]);
  });

  it('reads a registration again, batch redelivered by kafkajs, until the registry serves its schema; a load whose schema never comes ends within its timeout', async () => {
    const id = await registerAvro(createRegistry(url), url, valueSubject(topics.late), loadSchema('artifact-event'));
    const ref = 'registry://models/late-schema:1';
    const event: ArtifactEventRecord = { event_id: unique('e'), kind: 'model', ref, name: 'late-schema', version: '1', digest: `sha256:${'a'.repeat(64)}`, uri: null, metadata: {}, parents: [], registered_at: Date.now(), registered_by: 'test' };
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({ topic: topics.late, acks: -1, messages: [{ key: ref, value: encodeFramed(avroType('artifact-event'), id, event) }] });
    await producer.disconnect();

    // A registry replica that does not serve the id yet: 404 twice, then the schema.
    let refused = 0;
    const notServed = (times: number) =>
      (async (input: string | URL | Request, init?: RequestInit) => {
        if (String(input instanceof Request ? input.url : input).endsWith(`/schemas/ids/${id}`) && refused < times) {
          refused++;
          return new Response('', { status: 404 });
        }
        return realFetch(input, init);
      }) as typeof fetch;
    globalThis.fetch = notServed(2);
    try {
      const { state, stats } = await loadArtifactState({ kafka, topic: topics.late, schemaRegistryUrl: url, log, timeoutMs: 60_000 });
      assert.equal(state.get(ref)?.event_id, event.event_id);
      assert.equal(refused, 2);
      assert.deepEqual([stats.retried >= 2, stats.skipped], [true, 0]);

      refused = 0;
      globalThis.fetch = notServed(Infinity);
      const started = Date.now();
      await assert.rejects(
        loadArtifactState({ kafka, topic: topics.late, schemaRegistryUrl: url, log, timeoutMs: 5_000 }),
        new RegExp(`not read to its end within 5000 ms: schema id ${id} is not in the registry at .*, so the registration at partition 0 offset 0 cannot be read`),
      );
      // Joining the throwaway group comes before the timeout starts; a stop held by kafkajs' backoff is not waited for.
      assert.ok(Date.now() - started < 15_000, `${Date.now() - started} ms`);
    } finally {
      globalThis.fetch = realFetch;
    }
  });

  it('reads to the end of a topic whose last records are an aborted transaction, which kafkajs hands to no batch', async () => {
    // A transactional writer that gave up (dlog dlq replay aborts on any failure) leaves aborted
    // registrations and the abort marker at the end. A fetch of nothing else reaches no eachBatch,
    // and loads waited for them until their timeout: the enricher could not start and every dlog
    // register failed, until someone wrote more.
    const reg = (name: string) =>
      parseManifest(`artifacts:\n  - {kind: dataset, name: ${name}, version: v1, digest: "sha256:${'e'.repeat(64)}"}\n`, 'a.yaml', 'test');
    const id = await registerAvro(createRegistry(url), url, valueSubject(topics.aborted), loadSchema('artifact-event'));
    const producer = kafka.producer({ transactionalId: unique('aborting-writer'), idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const tx = await producer.transaction();
      const [gone] = reg('gone');
      await tx.send({ topic: topics.aborted, acks: -1, messages: [{ key: gone!.ref, value: encodeFramed(avroType('artifact-event'), id, gone!) }] });
      await tx.abort();
    } finally {
      await producer.disconnect();
    }
    const { state } = await loadArtifactState({ kafka, topic: topics.aborted, schemaRegistryUrl: url, log, timeoutMs: 15_000 });
    assert.equal(state.size, 0);
    const added = await registerArtifacts({ kafka, topic: topics.aborted, schemaRegistryUrl: url, log, events: reg('after') });
    assert.deepEqual(added.added, ['registry://datasets/after:v1']);
    const now = await loadArtifactState({ kafka, topic: topics.aborted, schemaRegistryUrl: url, log, timeoutMs: 15_000 });
    assert.deepEqual([now.state.size, now.state.get('registry://datasets/gone:v1')], [1, undefined]);
  });
});
