import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseManifest, readManifest, registerArtifacts, RegistrationConflictError } from '@dlog/artifacts';
import { loadConfig } from '@dlog/config';
import { avroType } from '@dlog/contracts';
import { createEnricher, type Enricher, type EnrichedDecisionRecord } from '@dlog/enricher';
import { createGate, type Gate } from '@dlog/gate';
import { createKafka } from '@dlog/kafka';
import { collect, log, tempDir, unique, waitFor } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const manifest = path.join(root, 'infra/examples/artifacts.yaml');

describe('artifact registry and enricher on the real stack', () => {
  const prefix = `${unique('enrich')}.`;
  const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, LOG_LEVEL: 'warn' });
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'test-enricher', log });
  const registryTopic = `${prefix}registry.artifacts`;
  let gate: Gate;
  let enricher: Enricher;

  before(async () => {
    gate = await createGate({ kafka, config, log });
    enricher = await createEnricher({ kafka, config, log });
    const first = await registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: readManifest(manifest, 'test') });
    assert.equal(first.added.length, 5);
    assert.deepEqual(first.unknownParents, []);
    await Promise.all([gate.start(), enricher.start()]);
  });
  after(async () => {
    await gate?.stop();
    await enricher?.stop();
  });

  it('re-registering the same version is a no-op; a changed digest is refused', async () => {
    const again = await registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: readManifest(manifest, 'test') });
    assert.deepEqual(again.added, []);
    assert.equal(again.unchanged.length, 5);

    const changed = readManifest(manifest, 'test').map((e) => (e.kind === 'model' ? { ...e, digest: `sha256:${'9'.repeat(64)}` } : e));
    await assert.rejects(
      registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: changed }),
      (err: unknown) => err instanceof RegistrationConflictError && /registry:\/\/models\/loan-approver:2\.4\.1 is already registered/.test(err.message),
    );

    // A parent that nothing registered (a typo, or registered later) is named, not refused.
    const typo = readManifest(manifest, 'test')
      .filter((e) => e.kind === 'model')
      .slice(0, 1)
      .map((e) => ({ ...e, version: 'typo-1', ref: `registry://models/${e.name}:typo-1`, parents: [...e.parents, 'registry://datasets/loan-aplications:v5'] }));
    const withTypo = await registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: typo });
    assert.deepEqual(withTypo.added, [typo[0]!.ref]);
    assert.deepEqual(withTypo.unknownParents, [{ ref: typo[0]!.ref, parent: 'registry://datasets/loan-aplications:v5' }]);

    // Two registrations of a new version with different digests at the same moment: both pass
    // the check before either is written; one is kept, the other refused after writing.
    for (let round = 0; round < 3; round++) {
      const racing = (digit: string) => readManifest(manifest, 'test').filter((e) => e.kind === 'model').slice(0, 1).map((e) => ({ ...e, version: `race-${round}`, ref: `registry://models/${e.name}:race-${round}`, digest: `sha256:${digit.repeat(64)}` }));
      const [a, b] = await Promise.allSettled([
        registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: racing('a') }),
        registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: racing('b') }),
      ]);
      assert.equal([a, b].filter((x) => x.status === 'fulfilled').length, 1, `round ${round}: exactly one wins (${a.status}, ${b.status})`);
      const loser = [a, b].find((x) => x.status === 'rejected') as PromiseRejectedResult;
      // Refused after writing (the race) or, when one happened to finish first, before.
      assert.ok(loser.reason instanceof RegistrationConflictError, String(loser.reason));
      assert.match(loser.reason.message, /at the same moment|is already registered/);
    }

    // The same through the CLI: a clear message and a non-zero exit.
    const file = path.join(tempDir('manifest'), 'changed.yaml');
    writeFileSync(file, `artifacts:\n  - {kind: model, name: loan-approver, version: 2.4.1, digest: "sha256:${'8'.repeat(64)}"}\n`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', 'register', file], {
      cwd: root,
      env: { ...process.env, DLOG_TOPIC_PREFIX: prefix },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /versions are immutable/);
  });

  it('attaches artifacts and lineage to each decision; unknown artifacts pass flagged', async () => {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const known = (i: number) => ({
      event_id: `k${i}`,
      request_id: `k${i}`,
      ts: Date.now(),
      endpoint: 'loan-api',
      decision_type: 'classification',
      model: { name: 'loan-approver', version: '2.4.1', digest: 'sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0' },
      image: { ref: 'registry.example/inference-loan:2.4.1' },
      config: { ref: 'configs/prod/loan-params:v3', params: {} },
      input: { x: i },
      output: { decision: 'approved' },
      producer: { service: 't', sdk: 'custom' },
    });
    const unknownModel = (i: number) => ({ ...known(i), event_id: `u${i}`, request_id: `u${i}`, model: { name: 'mystery', version: '0.1' } });
    await producer.send({
      topic: `${prefix}inference.raw`,
      messages: [...Array.from({ length: 50 }, (_, i) => known(i)), ...Array.from({ length: 10 }, (_, i) => unknownModel(i))].map((e) => ({
        key: e.request_id,
        value: JSON.stringify(e),
      })),
    });
    await producer.disconnect();

    const out = await collect(`${prefix}decisions.enriched.v1`);
    try {
      await waitFor(() => out.messages.length >= 60, { timeoutMs: 60_000, what: '60 enriched decisions' });
      const type = avroType('enriched-decision');
      const records = out.messages.map((m) => type.fromBuffer(m.value!.subarray(5)) as EnrichedDecisionRecord);
      assert.equal(records.length, 60);
      const good = records.filter((r) => r.event_id.startsWith('k'));
      assert.ok(good.every((r) => r.resolved && r.unresolved_refs.length === 0 && r.digest_mismatches.length === 0));
      const lineage = good[0]!.lineage.map((l) => `${l.kind}:${l.ref}`).sort();
      assert.ok(lineage.includes('dataset:registry://datasets/loan-applications-2026q3:v5'), lineage.join());
      assert.ok(lineage.includes('code:git://github.com/acme/loan-model@3f2a1c9'), lineage.join());
      assert.deepEqual(good[0]!.artifacts.map((a) => a.role).sort(), ['config', 'image', 'model']);
      const bad = records.filter((r) => r.event_id.startsWith('u'));
      assert.equal(bad.length, 10);
      assert.ok(bad.every((r) => !r.resolved && r.unresolved_refs.includes('registry://models/mystery:0.1')));
      assert.equal(enricher.stats.unresolved, 10);
    } finally {
      await out.stop();
    }
  });

  // Last: its decisions may pass unresolved while the enricher's follower reads the registration.
  it('carries the nearest 1,000 ancestors of a model trained on 1,500 partitions, and counts the cut', async () => {
    // Uncut, every decision of a model with ~10,000 ancestors was over what Kafka holds.
    const shards = Array.from({ length: 1500 }, (_, i) => `registry://datasets/clickstream-daily:2023-${String(i).padStart(5, '0')}`);
    const yaml = [
      'artifacts:',
      ...shards.map((ref, i) => `  - {kind: dataset, ref: "${ref}", name: clickstream-daily, version: "2023-${String(i).padStart(5, '0')}", digest: "sha256:${i.toString(16).padStart(64, '0')}"}`),
      `  - {kind: model, name: wide-model, version: "1", digest: "sha256:${'7'.repeat(64)}", parents: [${shards.map((r) => `"${r}"`).join(', ')}]}`,
    ].join('\n');
    await registerArtifacts({ kafka, topic: registryTopic, schemaRegistryUrl: config.schemaRegistryUrl, log, events: parseManifest(yaml, 'wide.yaml', 'test') });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const out = await collect(`${prefix}decisions.enriched.v1`);
    const type = avroType('enriched-decision');
    try {
      let n = 0;
      const wide = await waitFor(
        async () => {
          const id = `w${n++}`;
          const event = { event_id: id, request_id: id, ts: Date.now(), endpoint: 'wide-api', decision_type: 'classification', model: { name: 'wide-model', version: '1' }, input: { x: n }, output: { decision: 'ok' }, producer: { service: 't', sdk: 'custom' } };
          await producer.send({ topic: `${prefix}inference.raw`, messages: [{ key: id, value: JSON.stringify(event) }] });
          return out.messages.map((m) => type.fromBuffer(m.value!.subarray(5)) as EnrichedDecisionRecord).find((r) => r.event_id.startsWith('w') && r.resolved);
        },
        { timeoutMs: 60_000, intervalMs: 500, what: 'a decision of wide-model enriched with the model registered' },
      );
      assert.equal(wide.lineage.length, 1000);
      assert.deepEqual(
        wide.lineage.map((l) => [l.ref, l.depth, l.via]),
        shards.slice(0, 1000).map((ref) => [ref, 1, 'registry://models/wide-model:1']),
        'the nearest generation, by ref',
      );
      assert.ok(enricher.stats.lineageCut >= 1, JSON.stringify(enricher.stats));
    } finally {
      await producer.disconnect();
      await out.stop();
    }
  });
});
