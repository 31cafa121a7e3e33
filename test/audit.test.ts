import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '@dlog/config';
import { createPipeline, type Pipeline } from '@dlog/pipeline';
import { simulate, simulatedModels, type SimulateSummary } from '../packages/cli/src/simulate.js';
import { readFileSync } from 'node:fs';
import { createStore, migrate, runReadOnlyQuery, startQueryServer, type Store } from '@dlog/store';
import { AuditInputError, fmt, storeQuery, TruncatedAnswerError, wholeAnswers, type AuditQuery } from '../packages/cli/src/audit-query.js';
import { computeScope, deploymentWindows, emptyScopeMessage, formatScope, isEmptyScope, scopeDecisions } from '../packages/cli/src/scope.js';
import { computeDiff, formatDiff, psi } from '../packages/cli/src/diff.js';
import { planScopeRemediation } from '../packages/cli/src/remediate-command.js';
import { formatTrace, traceDecision, type TraceStep } from '../packages/cli/src/trace.js';
import { formatDot, formatLineageTree, formatMermaid, lineageGraph } from '../packages/cli/src/lineage.js';
import { planDeploy, planRollback, publishDeployment, publishRemediation } from '../packages/cli/src/audit-events.js';
import { parseManifest, registerArtifacts } from '@dlog/artifacts';
import { deadLetterCommand } from '../services/alerter/src/evaluate.js';
import { createKafka } from '@dlog/kafka';
import { createDecisionLogger } from '@dlog/sdk';
import { freePort, log, tempDir, unique, waitFor } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const label = (m: { name: string; version: string }) => `${m.name}:${m.version}`;

/** The real CLI, for the mistakes it must catch before it needs a store. */
function dlog(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', ...args], { cwd: root, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
  });
}

describe('audit toolkit on simulated traffic: trace, scope, diff, lineage, deploy, rollback, remediate', () => {
  const prefix = `${unique('audit')}.`;
  const config = loadConfig({ ...process.env, DLOG_TOPIC_PREFIX: prefix, CLICKHOUSE_DATA_DIR: `${tempDir('audit')}/clickhouse`, LOG_LEVEL: 'warn' });
  let pipeline: Pipeline;
  let summary: SimulateSummary;
  let q: AuditQuery;

  before(async () => {
    pipeline = await createPipeline({ config, log, queryServer: false });
    q = storeQuery(pipeline.store);
    summary = await simulate(config, log, { events: 3_000, rate: 0, badShare: 0, applicants: 300 });
    const good = Object.values(summary.recorded).reduce((s, n) => s + n, 0);
    await waitFor(
      async () => {
        const [t] = await q('SELECT sum(kept) AS kept, sum(dropped) AS dropped FROM v_decision_totals');
        const [d] = await q('SELECT count() AS n FROM decisions');
        const [dep] = await q('SELECT count() AS n FROM v_deployments');
        const [art] = await q('SELECT count() AS n FROM v_artifacts');
        return t && d && Number(t.kept) + Number(t.dropped) >= good && Number(d.n) >= Number(t.kept) && Number(dep?.n) >= 3 && Number(art?.n) >= 13 ? true : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 300, what: 'simulated decisions, deployments and artifacts to be queryable' },
    );
  });
  after(async () => {
    await pipeline?.stop();
  });

  it('scope of the canary matches the simulated truth exactly, with its deployment window', async () => {
    const s = await computeScope(q, { model: simulatedModels.canary });
    assert.equal(s.exact, summary.recorded[label(simulatedModels.canary)]);
    assert.equal(s.sampled, s.exact, 'loan decisions are all kept');
    assert.equal(s.byDecision.reduce((n, b) => n + (b.exact ?? 0), 0), s.exact);
    assert.deepEqual(s.endpoints.map((e) => e.endpoint), ['loan-api']);
    const w = s.windows.find((x) => x.endpoint === 'loan-api');
    assert.ok(w && w.to === null && Math.abs(w.share - 0.2) < 1e-9, JSON.stringify(s.windows));
    assert.match(formatScope(s), /decisions \(exact\)\s+\d+/);

    // A filter on a column the counts keep stays exact; on others only the estimate exists.
    const declined = await computeScope(q, { model: simulatedModels.canary, where: 'decision=declined' });
    assert.equal(declined.exact, s.byDecision.find((b) => b.decision === 'declined')?.exact);
    const unsure = await computeScope(q, { model: simulatedModels.canary, where: 'confidence<0.6 and decision=declined' });
    assert.equal(unsure.exact, null);
    assert.match(unsure.exactNote ?? '', /confidence/);
    assert.ok(unsure.sampled > 0 && unsure.sampled < declined.sampled);
  });

  it('scope of a sampled model: exact from counts, weighted estimate from the kept ones', async () => {
    const s = await computeScope(q, { model: simulatedModels.recommender });
    assert.equal(s.exact, summary.recorded[label(simulatedModels.recommender)]);
    assert.ok(s.sampled < s.exact!, 'most recommendations were sampled out');
    assert.ok(Math.abs(s.weighted - s.sampled * 10) < 1e-6, 'each kept one stands for 10');
    // A filter the counts cannot answer: per endpoint too, the estimate is weighted, not the stored count.
    const unsure = await computeScope(q, { model: simulatedModels.recommender, where: 'confidence<0.7' });
    assert.equal(unsure.exact, null);
    // A map key a decision does not have reads as 0 in ClickHouse: such decisions must not match.
    const noScore = await computeScope(q, { model: simulatedModels.recommender, where: 'scores.no_such_score<0.5' });
    assert.equal(noScore.sampled, 0, 'decisions without the score were counted as scoring 0');
    const ep = unsure.endpoints.find((e) => e.endpoint === 'recommendations')!;
    assert.ok(ep.sampled > 0 && Math.abs(ep.weighted - ep.sampled * 10) < 1e-6, JSON.stringify(ep));
    assert.ok(formatScope(unsure).includes(`recommendations (~${fmt(ep.weighted, 1)})`), formatScope(unsure));
  });

  it('scope of a dataset and of a code commit: every version built from them, whole or through its preprocessing', async () => {
    const stable = label(simulatedModels.stable);
    const canary = label(simulatedModels.canary);
    // v5 trained 2.4.1, and 2.5.0 through v6: both versions whole, so the counts are exact.
    const v5 = await computeScope(q, { artifact: 'registry://datasets/loan-applications:v5' });
    assert.deepEqual(v5.versions.map((v) => [v.model, v.whole]).sort(), [[stable, true], [canary, true]]);
    assert.equal(v5.exact, summary.recorded[stable]! + summary.recorded[canary]!);
    // The commit built 2.4.1 and the feature pipeline every loan decision ran through: 2.5.0's
    // decisions are in scope through their preprocessing artifact, which the counts do not know.
    const commit = await computeScope(q, { artifact: 'git://example.com/acme/loan-model@3f2a1c9' });
    const [canaryStored] = await q('SELECT count() AS n FROM v_decisions WHERE model_name = {n:String} AND model_version = {v:String}', { n: simulatedModels.canary.name, v: simulatedModels.canary.version });
    assert.deepEqual(
      commit.versions.map((v) => [v.model, v.whole, v.whole ? v.exact : v.sampled]).sort(),
      [[stable, true, summary.recorded[stable]], [canary, false, Number(canaryStored!.n)]],
    );
    assert.equal(commit.exact, null);
    assert.ok(commit.downstream.includes('registry://preprocessing/loan-features:v7'), commit.downstream.join(', '));
  });

  it('unknown version and empty scope say what exists and what to type', async () => {
    await assert.rejects(computeScope(q, { model: { name: 'loan-approver', version: '9.9.9' } }), (err: unknown) => {
      assert.ok(err instanceof AuditInputError);
      assert.match(err.message, /loan-approver:2\.4\.1 .*decisions/);
      assert.match(err.message, /loan-approver:2\.5\.0/);
      assert.match(err.message, /Type e\.g\. dlog scope --model loan-approver:/);
      return true;
    });
    await assert.rejects(computeScope(q, { model: { name: 'nonsense', version: '1' } }), /No model named "nonsense".*\n.*item-recommender:7\.1\.0/s);
    const empty = await computeScope(q, { model: simulatedModels.canary, since: Date.now() + 3_600_000 });
    assert.ok(isEmptyScope(empty));
    assert.match(emptyScopeMessage(empty, { first: '2026-01-01 00:00:00', last: '2026-01-01 01:00:00' }), /Widen the window/);
  });

  it('scopes one customer by the token of a hashed nested input field', async () => {
    const [row] = await q("SELECT input_fields['applicant.customer_id'] AS token FROM v_decisions WHERE mapContains(input_fields, 'applicant.customer_id') AND model_version = {v:String} LIMIT 1", { v: simulatedModels.stable.version });
    assert.ok(row && String(row.token).length > 0, 'the gate hashed applicant.customer_id');
    const token = String(row.token);
    const where = `input_fields.applicant.customer_id=${token}`;
    const s = await computeScope(q, { model: simulatedModels.stable, where });
    const [n] = await q("SELECT count() AS n FROM v_decisions WHERE input_fields['applicant.customer_id'] = {t:String} AND model_version = {v:String}", { t: token, v: simulatedModels.stable.version });
    assert.ok(s.sampled >= 1);
    assert.equal(s.sampled, Number(n!.n));
    // The same customer under any key of the input.
    const anyKey = await computeScope(q, { model: simulatedModels.stable, where: `input_fields.*=${token}` });
    assert.equal(anyKey.sampled, s.sampled);
  });

  it('exports the stored decisions of a scope page by page, each once', async () => {
    const s = await computeScope(q, { model: simulatedModels.stable, where: 'decision=approved' });
    const ids: string[] = [];
    for await (const page of scopeDecisions(q, { model: simulatedModels.stable, where: 'decision=approved' }, 100)) ids.push(...page.map((r) => String(r.event_id)));
    assert.equal(ids.length, s.sampled);
    assert.equal(new Set(ids).size, ids.length);
  });

  it('diff finds the injected disagreement on the same inputs', async () => {
    const d = await computeDiff(q, { a: simulatedModels.stable, b: simulatedModels.canary });
    assert.ok(d.paired.inputs > 20, `paired inputs: ${d.paired.inputs}`);
    assert.ok(d.paired.agreement !== null && d.paired.agreement < 1 && d.paired.agreement > 0.3, String(d.paired.agreement));
    const cell = (a: string, b: string) => d.confusion.find((c) => c.a === a && c.b === b)?.inputs ?? 0;
    assert.ok(cell('approved', 'declined') > 0, 'the canary declines applicants the stable version approves');
    assert.equal(cell('declined', 'approved'), 0, 'and never the other way round');
    assert.ok(d.paired.confidenceShift! < -0.1, `confidence shift ${d.paired.confidenceShift}`);
    assert.ok(d.mixPsi > 0, 'decision mix moved');
    assert.ok(d.confidencePsi! > 0.25, 'confidence distribution moved a lot');
    assert.ok(d.overallConfidence.a! > 0.8 && d.overallConfidence.b! < 0.76, JSON.stringify(d.overallConfidence));
    assert.match(formatDiff(d), /agreement\s+\d+\.\d%/);
  });

  it('trace of an agent step shows the whole trajectory; a loan decision its model lineage', async () => {
    const [step] = await q("SELECT event_id, trace_id FROM v_decisions WHERE decision_type = 'agent_step' AND step >= 2 LIMIT 1");
    assert.ok(step, 'an agent step deep in a trajectory');
    const t = await traceDecision(q, String(step.event_id));
    assert.equal(t.matchedBy, 'event_id');
    const pkg = t.packages[0]!;
    const [n] = await q('SELECT count() AS n FROM v_decisions WHERE trace_id = {t:String}', { t: step.trace_id });
    const flat = (ns: TraceStep[]): TraceStep[] => ns.flatMap((x) => [x, ...flat(x.children)]);
    assert.equal(flat(pkg.trajectory!).length, Number(n!.n));
    assert.equal(pkg.trajectory!.length, 1, 'one root: every step hangs off its parent');
    assert.deepEqual(flat(pkg.trajectory!).map((s) => s.step), [...Array(Number(n!.n)).keys()].map((i) => i + 1), 'steps in order, from 1');
    const text = formatTrace(t);
    assert.match(text, /Trajectory .* stored steps/);
    assert.match(text, /◀ this decision/);

    const [loan] = await q('SELECT request_id FROM v_decisions WHERE model_version = {v:String} LIMIT 1', { v: simulatedModels.canary.version });
    const lt = await traceDecision(q, String(loan!.request_id));
    assert.equal(lt.matchedBy, 'request_id');
    const out = formatTrace(lt);
    for (const want of ['registry://datasets/loan-applications:v6', 'git://example.com/acme/loan-model@8d41e07', 'registry.example/inference-loan:2.5.0', 'configs/prod/loan-params:v3', 'loan-features:v7', 'sha256-', 'tier ']) {
      assert.ok(out.includes(want), `trace shows ${want}\n${out}`);
    }
    assert.equal(lt.packages[0]!.trajectory, null);
    await assert.rejects(traceDecision(q, 'no-such-id'), /No decision has event_id or request_id "no-such-id"/);
  });

  it('trace names what was registered after a decision that named it unknown, without changing the decision', async () => {
    // The image of a release candidate, logged before anyone registered it.
    const image = 'registry.example/inference-loan:2.6.0-rc1';
    const logger = createDecisionLogger({
      service: 'audit-test',
      brokers: config.kafkaBrokers,
      registryUrl: config.schemaRegistryUrl,
      topic: `${prefix}inference.raw`,
      artifactTopic: `${prefix}registry.artifacts`,
    });
    logger.record({
      requestId: 'late-registration-1',
      model: simulatedModels.stable,
      endpoint: 'loan-api',
      decisionType: 'loan_approval',
      image: { ref: image, digest: `sha256:${'6'.repeat(64)}` },
      input: { application: { amount: 1000 } },
      output: { decision: 'approved', confidence: 0.9 },
    });
    // The same image ref, declared with other bytes than will be registered.
    logger.record({
      requestId: 'late-registration-2',
      model: simulatedModels.stable,
      endpoint: 'loan-api',
      decisionType: 'loan_approval',
      image: { ref: image, digest: `sha256:${'7'.repeat(64)}` },
      input: { application: { amount: 2000 } },
      output: { decision: 'approved', confidence: 0.9 },
    });
    await logger.close(30_000);
    await waitFor(async () => ((await q("SELECT 1 FROM decisions WHERE request_id = 'late-registration-2'")).length ? true : undefined), { timeoutMs: 60_000, what: 'the second late decision' });
    const [stored] = await waitFor(async () => {
      const r = await q("SELECT resolved, unresolved_refs FROM decisions WHERE request_id = 'late-registration-1'");
      return r.length ? r : undefined;
    }, { timeoutMs: 60_000, what: 'the decision naming an unregistered image' });
    assert.equal(stored!.resolved, false);
    assert.deepEqual(stored!.unresolved_refs, [image]);
    const before = await traceDecision(q, 'late-registration-1');
    assert.deepEqual(before.packages[0]!.registeredSince, []);

    const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'audit-test', log });
    await registerArtifacts({
      kafka,
      topic: `${prefix}registry.artifacts`,
      schemaRegistryUrl: config.schemaRegistryUrl,
      log,
      events: parseManifest(
        `artifacts:\n  - {kind: dataset, name: rc-calibration, version: v1, digest: "sha256:${'8'.repeat(64)}"}\n` +
          `  - {kind: image, ref: "${image}", name: inference-loan, version: 2.6.0-rc1, digest: "sha256:${'6'.repeat(64)}", parents: [registry://models/loan-approver:2.4.1, registry://datasets/rc-calibration:v1]}\n`,
        'late.yaml',
        'test',
      ),
    });
    await waitFor(async () => ((await q('SELECT 1 FROM v_artifacts WHERE ref = {r:String}', { r: image })).length ? true : undefined), { timeoutMs: 60_000, what: 'the late registration in the store' });
    const t = await traceDecision(q, 'late-registration-1');
    const pkg = t.packages[0]!;
    assert.deepEqual(pkg.registeredSince.map((a) => [a.kind, a.ref, a.version]), [['image', image, '2.6.0-rc1']]);
    assert.equal(pkg.decision.resolved, false, 'the stored decision is as it was');
    assert.match(formatTrace(t), /Registered since the decision[^\n]*\n\s+image\s+registry\.example\/inference-loan:2\.6\.0-rc1/);
    assert.equal(pkg.registeredSince[0]!.mismatch, false);
    // The image's parents are ancestors of the decision now, though not in its record.
    await waitFor(async () => ((await q("SELECT 1 FROM v_lineage WHERE parent_ref = 'registry://datasets/rc-calibration:v1' AND parent_kind = 'dataset'")).length ? true : undefined), {
      timeoutMs: 60_000,
      what: 'the late lineage in the store',
    });
    const now = (await traceDecision(q, 'late-registration-1')).packages[0]!;
    assert.deepEqual(now.lineageSince.map((l) => [l.kind, l.ref, l.via]), [['dataset', 'registry://datasets/rc-calibration:v1', image]]);
    assert.match(formatTrace({ ...t, packages: [now] }), /Ancestors registered since the decision[^\n]*\n\s+dataset\s+registry:\/\/datasets\/rc-calibration:v1/);
    // Declared with other bytes: what was registered later is not what made it, and trace says so.
    const other = await traceDecision(q, 'late-registration-2');
    assert.equal(other.packages[0]!.registeredSince[0]!.mismatch, true);
    assert.match(formatTrace(other), /DIGEST MISMATCH: the decision declared sha256:7777/);
  });

  it('trace lists a parent registered after its child, which the record names as unknown', async () => {
    const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: 'audit-test', log });
    const register = (yaml: string) =>
      registerArtifacts({ kafka, topic: `${prefix}registry.artifacts`, schemaRegistryUrl: config.schemaRegistryUrl, log, events: parseManifest(yaml, 'late-parent.yaml', 'test') });
    const modelDigest = `sha256:${'9'.repeat(64)}`;
    await register(`artifacts:\n  - {kind: model, name: late-parent-model, version: "1", digest: "${modelDigest}", parents: [registry://datasets/late-parent:v1]}\n`);
    await waitFor(async () => ((await q("SELECT 1 FROM v_artifacts WHERE ref = 'registry://models/late-parent-model:1'")).length ? true : undefined), { timeoutMs: 60_000, what: 'the model in the store' });
    const logger = createDecisionLogger({ service: 'audit-test', brokers: config.kafkaBrokers, registryUrl: config.schemaRegistryUrl, topic: `${prefix}inference.raw`, artifactTopic: `${prefix}registry.artifacts` });
    logger.record({ requestId: 'late-parent-1', model: { name: 'late-parent-model', version: '1', digest: modelDigest }, endpoint: 'x-api', decisionType: 'classification', input: { a: 1 }, output: { decision: 'ok' } });
    await logger.close(30_000);
    const [row] = await waitFor(async () => {
      const r = await q("SELECT resolved, lineage FROM decisions WHERE request_id = 'late-parent-1'");
      return r.length ? r : undefined;
    }, { timeoutMs: 60_000, what: 'the decision of the model whose parent is not registered' });
    assert.equal(row!.resolved, true);
    assert.deepEqual((row!.lineage as { ref: string; kind: string }[]).map((l) => [l.ref, l.kind]), [['registry://datasets/late-parent:v1', 'unknown']]);
    await register(
      `artifacts:\n  - {kind: dataset, name: late-grandparent, version: v0, digest: "sha256:${'a'.repeat(64)}"}\n` +
        `  - {kind: dataset, name: late-parent, version: v1, digest: "sha256:${'b'.repeat(64)}", parents: [registry://datasets/late-grandparent:v0]}\n`,
    );
    const pkg = await waitFor(async () => {
      const p = (await traceDecision(q, 'late-parent-1')).packages[0]!;
      return p.lineageSince.length === 2 ? p : undefined;
    }, { timeoutMs: 60_000, what: 'the late parents in the store' });
    assert.deepEqual(pkg.lineageSince.map((l) => [l.kind, l.ref, l.depth, l.via]), [
      ['dataset', 'registry://datasets/late-parent:v1', 1, 'registry://models/late-parent-model:1'],
      ['dataset', 'registry://datasets/late-grandparent:v0', 2, 'registry://models/late-parent-model:1'],
    ]);
  });

  it("a dead-letter alert's command runs as it is and sums the window's exact traffic", async () => {
    const cmd = deadLetterCommand(Date.now() - 6 * 3_600_000, Date.now() + 60_000);
    const sql = /^dlog query "([^"]+)"$/.exec(cmd)?.[1];
    assert.ok(sql, cmd);
    const rows = await q(sql);
    const [all] = await q('SELECT sum(total) AS n FROM v_decision_totals');
    assert.equal(rows.reduce((n, r) => n + Number(r.decisions), 0), Number(all!.n));
    assert.ok(rows.some((r) => r.endpoint === 'loan-api' && r.model_version === simulatedModels.canary.version));
  });

  it('lineage: upstream and downstream of a model, as a tree, Mermaid and DOT', async () => {
    const g = await lineageGraph(q, 'registry://models/loan-approver:2.5.0');
    const tree = formatLineageTree(g);
    for (const want of ['loan-applications:v6', 'loan-applications:v5', 'loan-model@8d41e07', 'inference-loan:2.5.0']) assert.ok(tree.includes(want), tree);
    assert.match(tree, /upstream[\s\S]*loan-applications:v6[\s\S]*downstream[\s\S]*inference-loan:2\.5\.0/);
    assert.match(formatMermaid(g), /^flowchart LR\n[\s\S]* --> /);
    assert.match(formatDot(g), /^digraph lineage \{[\s\S]* -> [\s\S]*\}\n$/);
    const ds = await lineageGraph(q, 'registry://datasets/loan-applications:v5');
    assert.ok(formatLineageTree(ds).includes('loan-approver:2.4.1'), 'a dataset reaches the models trained on it, and on its successor');
    // Decisions are counted on every artifact they name, not only on models.
    const commit = await lineageGraph(q, 'git://example.com/acme/loan-model@3f2a1c9');
    const [pre] = await q("SELECT count() AS n FROM v_decisions WHERE preprocessing_ref = 'registry://preprocessing/loan-features:v7'");
    assert.ok(Number(pre!.n) > 0);
    assert.deepEqual(commit.nodes.get('registry://preprocessing/loan-features:v7')?.named, { stored: Number(pre!.n), weighted: Number(pre!.n) });
    assert.match(formatLineageTree(ds), /inference-loan:2\.5\.0 {2}\(image, \d+ decisions stored\)/);
    await assert.rejects(lineageGraph(q, 'registry://datasets/loan-applications:v99'), /Artifacts with a similar name:[\s\S]*loan-applications:v5/);
  });

  it('rollback closes the canary window; deploy and rollback refuse versions that do not fit', async () => {
    await assert.rejects(planRollback(q, { endpoint: 'loan-api', to: { name: 'loan-approver', version: '1.0.0' }, reason: 'x', actor: 't' }), /never served loan-api[\s\S]*loan-approver:2\.4\.1/);
    await assert.rejects(planRollback(q, { endpoint: 'nope', to: simulatedModels.stable, reason: 'x', actor: 't' }), /Endpoints with deployments: .*loan-api/);
    await assert.rejects(planDeploy(q, { endpoint: 'loan-api', model: { name: 'loan-approver', version: '3.0.0' }, actor: 't' }), /Versions that exist/);
    const canary = await planDeploy(q, { endpoint: 'loan-api', model: simulatedModels.canary, share: 0.2, canary: true, actor: 'test' });
    assert.equal(canary.action, 'canary');
    assert.equal(canary.previous_model_ref, 'registry://models/loan-approver:2.4.1');

    const e = await planRollback(q, { endpoint: 'loan-api', to: simulatedModels.stable, reason: 'INC-42 canary declines', actor: 'test' });
    assert.equal(e.previous_model_ref, 'registry://models/loan-approver:2.5.0');
    await publishDeployment(config, log, e);
    const windows = await waitFor(
      async () => {
        const w = await deploymentWindows(q, simulatedModels.canary);
        return w.length > 0 && w.every((x) => x.to !== null) ? w : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 300, what: 'the rollback to close the canary window' },
    );
    assert.equal(windows.length, 1);
    const stable = await deploymentWindows(q, simulatedModels.stable);
    assert.equal(stable.at(-1)!.to, null, 'the stable version serves on');
    assert.equal(stable.at(-1)!.share, 1);

    // Staging's endpoint of the same name has a history of its own: its deploy neither closes
    // prod's windows nor becomes what a prod rollback returns from.
    const staging = await planDeploy(q, { endpoint: 'loan-api', environment: 'staging', model: simulatedModels.canary, actor: 'test' });
    assert.equal(staging.previous_model_ref, null, 'nothing served loan-api in staging before');
    await publishDeployment(config, log, staging);
    await waitFor(async () => ((await q("SELECT count() AS n FROM v_deployments WHERE environment = 'staging'"))[0]!.n === 1 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 300,
      what: 'the staging deployment to be queryable',
    });
    const prodStable = await deploymentWindows(q, simulatedModels.stable);
    assert.equal(prodStable.at(-1)!.to, null, 'prod\'s stable window stays open');
    assert.equal(prodStable.at(-1)!.environment, 'prod');
    await assert.rejects(planRollback(q, { endpoint: 'loan-api', to: simulatedModels.stable, reason: 'x', actor: 't' }), /several environments \(prod, staging\)[\s\S]*--environment prod/);
    await assert.rejects(planRollback(q, { endpoint: 'loan-api', environment: 'prod', to: simulatedModels.stable, reason: 'x', actor: 't' }), /already serves all of loan-api/);

    // Deployments recorded without an environment (before environments were given) are part of
    // every environment's history: a first prod deploy replaces what they left serving.
    const legacy = await planDeploy(q, { endpoint: 'legacy-api', model: simulatedModels.stable, actor: 'test' });
    assert.equal(legacy.environment, null);
    await publishDeployment(config, log, legacy);
    await waitFor(async () => ((await q("SELECT count() AS n FROM v_deployments WHERE endpoint = 'legacy-api'"))[0]!.n === 1 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 300,
      what: 'the legacy deployment to be queryable',
    });
    const prodDeploy = await planDeploy(q, { endpoint: 'legacy-api', environment: 'prod', model: simulatedModels.canary, actor: 'test' });
    assert.equal(prodDeploy.previous_model_ref, 'registry://models/loan-approver:2.4.1');
  });

  it('remediation appends events referencing the originals and leaves them untouched', async () => {
    const fingerprint = async () =>
      (await q("SELECT count() AS n, sum(cityHash64(event_id, decision, toString(confidence), toString(ts), input_hash)) AS h FROM decisions WHERE model_name = 'loan-approver'"))[0];
    const beforeFp = await fingerprint();
    const plan = await planScopeRemediation(q, { model: simulatedModels.canary, where: 'decision=declined', reason: 'INC-42', action: 'review', actor: 'test' });
    const ids = plan.events.flatMap((ev) => ev.event_ids);
    assert.equal(ids.length, plan.scope.sampled);
    assert.ok(ids.length > 0);
    await publishRemediation(config, log, plan);
    const rows = await waitFor(
      async () => {
        const r = await q('SELECT event_id FROM v_remediated_decisions WHERE remediation_id = {id:String}', { id: plan.remediation_id });
        return r.length >= ids.length ? r : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 300, what: 'the remediation to land' },
    );
    assert.deepEqual(rows.map((r) => String(r.event_id)).sort(), [...ids].sort());
    const [rem] = await q('SELECT action, reason, exact_total, stored_total, decisions_referenced FROM v_remediations WHERE remediation_id = {id:String}', { id: plan.remediation_id });
    assert.equal(Number(rem!.decisions_referenced), ids.length);
    assert.equal(Number(rem!.exact_total), plan.scope.exact);
    assert.deepEqual(await fingerprint(), beforeFp, 'the decisions are exactly as they were');
    const t = await traceDecision(q, ids[0]!);
    assert.match(formatTrace(t), /Remediations \(the decision itself is unchanged\):\n.*review .*INC-42/);
  });

  it('the CLI names the mistake before it needs a store', async () => {
    const env = { CLICKHOUSE_DATA_DIR: `${tempDir('audit-cli')}/clickhouse`, DLOG_QUERY_PORT: String(await freePort()), LOG_LEVEL: 'warn' };
    const [model, filter, format] = await Promise.all([
      dlog(['scope', '--model', 'nonsense'], env),
      dlog(['scope', '--model', 'loan-approver:2.5.0', '--where', 'decision=declined and confidence<<0.7'], env),
      dlog(['lineage', 'registry://models/x:1', '--format', 'png'], env),
    ]);
    assert.equal(model.code, 1);
    assert.match(model.stderr, /--model takes name:version \(got "nonsense"\), e\.g\. --model loan-approver:2\.5\.0/);
    assert.equal(filter.code, 1);
    assert.match(filter.stderr, /Unknown operator "<<" in "confidence<<0\.7"/);
    assert.match(filter.stderr, /filter     := condition \( "and" condition \)\*/);
    assert.equal(format.code, 1);
    assert.match(format.stderr, /--format is text, mermaid or dot \(got "png"\)/);
  });
});

/**
 * Hand-made stores, for what simulated traffic does not reach: answers past the query path's
 * limits (100,000 rows, 64 MiB), read through it as the CLI reads them (a cut answer throws),
 * and the scope of a dataset or image across model versions. No Kafka: an embedded store of its own.
 */
describe('audit commands on a hand-made store: answers past the query limits, the scope of an artifact', () => {
  const dataDir = `${tempDir('audit-made')}/clickhouse`;
  let store: Store | undefined;
  let q: AuditQuery;
  /** Items each version of `many` decided, each once: more lines than an answer may have. */
  const items = 100_010;
  const long = 4_000;

  const exec = (query: string) => store!.client.command({ query });
  const insert = (table: string, values: Record<string, unknown>[]) => store!.client.insert({ table, values, format: 'JSONEachRow' });

  before(async () => {
    store = await createStore({ database: 'dlog', dataDir });
    await migrate(store);
    q = wholeAnswers((sql, params) => runReadOnlyQuery(store!, { sql, params }));
    const decision = (version: string, name: string, decisionSql: string, n: number, extra = '') => `
      INSERT INTO decisions (event_id, request_id, ts, endpoint, decision_type, model_name, model_version, input_hash, decision, confidence, tier, sample_rate, policy_version, resolved, source_partition, source_offset, gate_ts, enriched_at${extra ? ', output_json' : ''})
      SELECT concat('${name}-${version}-', toString(number)), toString(number), toDateTime64('2026-11-27 06:00:00', 3, 'UTC') + toIntervalMillisecond(number * 10), 'rec-api', 'recommendation',
             '${name}', '${version}', concat('sha256-', toString(number)), ${decisionSql}, 0.5, 'standard', 1, 'p1', true, 0, number, now64(3), now64(3)${extra}
      FROM numbers(${n})`;
    const counted = (version: string, name: string) => `
      INSERT INTO decision_counts (minute, model_name, model_version, endpoint, decision_type, tier, decision, policy_version, kept, dropped, batch_id, row_key)
      SELECT toStartOfMinute(ts) AS m, model_name, model_version, endpoint, decision_type, tier, decision, policy_version, count(), 0, 'b', concat(toString(m), decision)
      FROM decisions WHERE model_name = '${name}' AND model_version = '${version}'
      GROUP BY m, model_name, model_version, endpoint, decision_type, tier, decision, policy_version`;
    // many:2 agrees with many:1 on the even inputs, and answers the odd ones with one decision.
    await exec(decision('1', 'many', "concat('item-', toString(number))", items));
    await exec(decision('2', 'many', "if(number % 2 = 0, concat('item-', toString(number)), 'other')", items));
    await exec(counted('1', 'many'));
    await exec(counted('2', 'many'));
    // Generated answers of 20 KB: 4,000 of them are 80 MB of JSON, past the 64 MiB of one answer.
    await exec(decision('1', 'long', "concat('answer ', toString(number), ' ', repeat('lorem ipsum ', 1700))", long));
    await exec(counted('1', 'long'));

    // The registry: dataset v5 (bad) → v6 → model 2.5.0, and 2.6.0 registered since; the feature
    // pipeline feat:3 fitted on v5, which some of 2.4.1's decisions ran through; other:1.0
    // registered with no parents, though one of its records names v5 among its ancestors.
    let offset = 0;
    const art = (kind: string, ref: string, parents: string[] = []) => ({
      event_id: `a-${ref}`, kind, ref, name: '', version: '', digest: `sha256:${ref}`, uri: '', metadata: {}, parents,
      registered_at: '2026-11-20 00:00:00.000', registered_by: 'test', source_known: true, source_partition: 0, source_offset: offset++,
    });
    await insert('artifacts', [
      art('dataset', 'registry://datasets/loan:v4'),
      art('dataset', 'registry://datasets/loan:v5'),
      art('dataset', 'registry://datasets/loan:v6', ['registry://datasets/loan:v5']),
      art('dataset', 'registry://datasets/unused:v1'),
      art('model', 'registry://models/loan-approver:2.4.1', ['registry://datasets/loan:v4']),
      art('model', 'registry://models/loan-approver:2.5.0', ['registry://datasets/loan:v6']),
      art('preprocessing', 'registry://preprocessing/feat:2', ['registry://datasets/loan:v4']),
      art('preprocessing', 'registry://preprocessing/feat:3', ['registry://datasets/loan:v5']),
      art('model', 'registry://models/loan-approver:2.6.0', ['registry://datasets/loan:v6']),
      art('image', 'registry://images/loan:2.6.0', ['registry://models/loan-approver:2.6.0']),
      art('model', 'registry://models/other:1.0'),
    ]);
    const rows: Record<string, unknown>[] = [];
    const d = (id: string, name: string, version: string, minute: number, o: Record<string, unknown> = {}) =>
      rows.push({
        event_id: id, request_id: id, ts: `2026-11-27 05:${String(minute).padStart(2, '0')}:00.000`, endpoint: 'loan-api', decision_type: 'loan', model_name: name, model_version: version,
        input_hash: `sha256-${id}`, decision: 'approved', confidence: 0.9, tier: 'standard', sample_rate: 1, policy_version: 'p1', resolved: true, source_partition: 0, source_offset: rows.length,
        gate_ts: '2026-11-27 05:00:00.000', enriched_at: '2026-11-27 05:00:00.000', ...o,
      });
    const via = (ref: string, kind: string, from: string, depth: number) => ({ ref, kind, via: from, depth });
    const m250 = 'registry://models/loan-approver:2.5.0';
    for (let i = 0; i < 4; i++) d(`c${i}`, 'loan-approver', '2.5.0', 1, { sample_rate: 0.5, decision: i === 0 ? 'declined' : 'approved', lineage: [via('registry://datasets/loan:v6', 'dataset', m250, 1), via('registry://datasets/loan:v5', 'dataset', m250, 2)] });
    for (let i = 0; i < 5; i++) {
      const pre = i < 3 ? 'registry://preprocessing/feat:3' : 'registry://preprocessing/feat:2';
      d(`s${i}`, 'loan-approver', '2.4.1', 10 + i, {
        preprocessing_ref: pre,
        decision: i === 1 ? 'declined' : 'approved',
        artifacts: [{ role: 'preprocessing', ref: pre, kind: 'preprocessing', version: '', digest: '', registered_at: '2026-11-20 00:00:00.000' }],
        lineage: [via('registry://datasets/loan:v4', 'dataset', 'registry://models/loan-approver:2.4.1', 1), via(i < 3 ? 'registry://datasets/loan:v5' : 'registry://datasets/loan:v4', 'dataset', pre, 1)],
      });
    }
    // Enriched before 2.6.0's parents were registered: its records name no ancestor.
    for (let i = 0; i < 2; i++) d(`n${i}`, 'loan-approver', '2.6.0', 20, { image_ref: 'registry://images/loan:2.6.0' });
    d('o0', 'other', '1.0', 30, { lineage: [via('registry://datasets/loan:v5', 'dataset', 'registry://models/other:1.0', 1)] });
    d('o1', 'other', '1.0', 30);
    d('u0', 'unrelated', '1', 40, { preprocessing_ref: 'registry://preprocessing/feat:9' });
    await insert('decisions', rows);
    const count = (minute: number, version: string, decision: string, kept: number, dropped: number) => ({
      minute: `2026-11-27 05:${String(minute).padStart(2, '0')}:00.000`, model_name: 'loan-approver', model_version: version, endpoint: 'loan-api', decision_type: 'loan', tier: 'standard', decision, policy_version: 'p1', kept, dropped, batch_id: 'b', row_key: `${version}-${decision}-${minute}`,
    });
    // 2.5.0 kept half of its decisions: 8 made, 4 stored.
    await insert('decision_counts', [count(1, '2.5.0', 'approved', 3, 3), count(1, '2.5.0', 'declined', 1, 1), count(20, '2.6.0', 'approved', 2, 0)]);
    await insert('deployments', [
      { event_id: 'dep1', action: 'deploy', endpoint: 'loan-api', environment: 'prod', model_ref: m250, model_digest: '', previous_model_ref: '', image_ref: '', config_ref: '', traffic_share: 1, ts: '2026-11-27 04:00:00.000', actor: 't', reason: '' },
    ]);
  });
  after(async () => {
    await store?.close();
  });

  it('scope of a version that decided 100,010 different things: exact totals, the largest lines and one for the rest', async () => {
    const s = await computeScope(q, { model: { name: 'many', version: '1' } });
    // Summed from a list cut at 100,000 lines, these were 100,000.
    assert.equal(s.exact, items);
    assert.equal(s.sampled, items);
    assert.equal(s.weighted, items);
    assert.equal(s.byDecision.length, 25);
    assert.deepEqual(s.byDecisionRest, { lines: items - 25, exact: items - 25, sampled: items - 25, weighted: items - 25 });
    assert.deepEqual(s.endpoints, [{ endpoint: 'rec-api', exact: items, sampled: items, weighted: items }]);
    assert.match(formatScope(s), /\(99985 more decisions\)\s+99985\s+99985\s+99985/);
  });

  it('diff of two versions over 100,010 inputs and decisions: agreement and PSI over all of them', async () => {
    const d = await computeDiff(q, { a: { name: 'many', version: '1' }, b: { name: 'many', version: '2' } });
    assert.equal(d.paired.inputs, items);
    assert.equal(d.paired.agreement, 0.5);
    assert.equal(d.confusion.length, 50);
    assert.deepEqual(d.confusionRest, { cells: items - 50, inputs: items - 50 });
    // Every decision of either version is a bin: many:1 decided item-0 … item-100009 once each,
    // many:2 the even items once each and `other` 50,005 times.
    const bins = [...[...Array(items).keys()].map((i) => [1, i % 2 === 0 ? 1 : 0]), [0, items / 2]];
    const expected = psi(bins.map((b) => b[0]!), bins.map((b) => b[1]!));
    assert.ok(expected > 4 && Math.abs(d.mixPsi - expected) < 1e-9 * expected, `PSI ${d.mixPsi}, over every decision ${expected}`);
    assert.equal(d.mix.length + d.mixRest!.decisions, items + 1);
    assert.deepEqual(d.mix.map((m) => m.decision), d.mix.map((m) => m.decision).sort(), 'the lines shown are in the order of their decisions');
    assert.ok(d.mix.some((m) => m.decision === 'other' && m.b === items / 2), 'the decision that moved most is shown');
    assert.equal(d.mixRest!.a + d.mix.reduce((n, m) => n + m.a, 0), items);
    assert.match(formatDiff(d), /paired inputs\s+100010[\s\S]*agreement\s+50\.0%[\s\S]*… and 99960 less common pairs/);
  });

  it('exports every decision of a scope whose pages pass 64 MiB, each once', async () => {
    // Counts the answers the query path cut: the export must have met one and gone on.
    let cut = 0;
    const counting: AuditQuery = (sql, params) =>
      q(sql, params).catch((err: unknown) => {
        if (err instanceof TruncatedAnswerError) cut++;
        throw err;
      });
    const ids: string[] = [];
    for await (const page of scopeDecisions(counting, { model: { name: 'long', version: '1' } })) ids.push(...page.map((r) => String(r.event_id)));
    assert.ok(cut > 0, 'the test needs a page the query path cuts');
    // A page cut at 64 MiB once ended the export (and a remediation) there, the rest reported as sampled out.
    assert.equal(ids.length, long);
    assert.equal(new Set(ids).size, long);
  });

  it("scope of a dataset: every decision whose record names it, and those of what was registered downstream since", async () => {
    const s = await computeScope(q, { artifact: 'registry://datasets/loan:v5' });
    assert.deepEqual(new Set(s.downstream), new Set(['registry://datasets/loan:v6', 'registry://preprocessing/feat:3', 'registry://models/loan-approver:2.5.0', 'registry://models/loan-approver:2.6.0', 'registry://images/loan:2.6.0']));
    const byModel = Object.fromEntries(s.versions.map((v) => [v.model, [v.whole, v.exact, v.sampled]]));
    assert.deepEqual(byModel, {
      'loan-approver:2.5.0': [true, 8, 4], // its model was trained on v6, derived from v5
      'loan-approver:2.6.0': [true, 2, 2], // registered downstream of v6 after its decisions were enriched
      'loan-approver:2.4.1': [false, null, 3], // through preprocessing feat:3 only
      'other:1.0': [false, null, 1], // its record names v5 as an ancestor; the registry does not
    });
    assert.equal(s.exact, null, 'counts know no preprocessing: not exact where versions are in scope in part');
    assert.match(s.exactNote ?? '', /per model version, and 2 versions are in scope for some of their decisions only/);
    assert.equal(s.sampled, 10);
    assert.equal(s.weighted, 14);
    assert.deepEqual(s.windows.map((w) => [w.model, w.endpoint, w.to]), [['loan-approver:2.5.0', 'loan-api', null]]);
    const ids: string[] = [];
    for await (const page of scopeDecisions(q, { artifact: 'registry://datasets/loan:v5' })) ids.push(...page.map((r) => `${String(r.model)} ${String(r.event_id)}`));
    assert.deepEqual(ids.sort(), ['loan-approver:2.4.1 s0', 'loan-approver:2.4.1 s1', 'loan-approver:2.4.1 s2', 'loan-approver:2.5.0 c0', 'loan-approver:2.5.0 c1', 'loan-approver:2.5.0 c2', 'loan-approver:2.5.0 c3', 'loan-approver:2.6.0 n0', 'loan-approver:2.6.0 n1', 'other:1.0 o0']);
    // The remediation references exactly those, and records the artifact as what it is the scope of.
    const plan = await planScopeRemediation(q, { artifact: 'registry://datasets/loan:v5', reason: 'INC-9 bad dataset', action: 'review', actor: 'test' });
    assert.deepEqual(plan.events.flatMap((e) => e.event_ids).sort(), ids.map((x) => x.split(' ')[1]!).sort());
    assert.equal(plan.events[0]!.scope.model_ref, 'registry://datasets/loan:v5');
    assert.equal(plan.events[0]!.scope.exact_total, null);
  });

  it('scope of an artifact: exact when whole versions, filters and windows as for a model, unknown refs named', async () => {
    const v6 = await computeScope(q, { artifact: 'registry://datasets/loan:v6' });
    assert.deepEqual(v6.versions.map((v) => [v.model, v.whole]).sort(), [['loan-approver:2.5.0', true], ['loan-approver:2.6.0', true]]);
    assert.equal(v6.exact, 10, 'whole versions: exact from the counts, sampled-out decisions included');
    assert.equal(v6.exactNote, null);
    assert.deepEqual(v6.byDecision.map((b) => [b.decision, b.exact]), [['approved', 8], ['declined', 2]]);
    const declined = await computeScope(q, { artifact: 'registry://datasets/loan:v6', where: 'decision=declined' });
    assert.equal(declined.exact, 2);
    assert.equal(declined.sampled, 1);
    // An image is no model: its versions are in scope for the decisions naming it.
    const image = await computeScope(q, { artifact: 'registry://images/loan:2.6.0' });
    assert.deepEqual(image.versions.map((v) => [v.model, v.whole, v.sampled]), [['loan-approver:2.6.0', false, 2]]);
    // 2.4.1's decisions through feat:3 were made at 05:10, 05:11 and 05:12.
    const window = await computeScope(q, { artifact: 'registry://preprocessing/feat:3', since: Date.UTC(2026, 10, 27, 5, 11), until: Date.UTC(2026, 10, 27, 5, 12) });
    assert.equal(window.sampled, 1);
    const unused = await computeScope(q, { artifact: 'registry://datasets/unused:v1' });
    assert.ok(isEmptyScope(unused));
    assert.match(emptyScopeMessage(unused, undefined), /No decision names registry:\/\/datasets\/unused:v1 in this scope\.\nSee what is registered around it: dlog lineage/);
    await assert.rejects(computeScope(q, { artifact: 'registry://datasets/loan:v55' }), (err: unknown) => {
      assert.ok(err instanceof AuditInputError);
      assert.match(err.message, /^No artifact "registry:\/\/datasets\/loan:v55" is registered, and no decision names it\.\nArtifacts with a similar name:[\s\S]*loan:v5\n[\s\S]*Type e\.g\. dlog scope --artifact registry:\/\/datasets\/loan:v4$/);
      return true;
    });
  });

  it('lineage counts the decisions naming each image and preprocessing, not only each model', async () => {
    const g = await lineageGraph(q, 'registry://datasets/loan:v5');
    assert.deepEqual(g.nodes.get('registry://preprocessing/feat:3')?.named, { stored: 3, weighted: 3 });
    assert.deepEqual(g.nodes.get('registry://images/loan:2.6.0')?.named, { stored: 2, weighted: 2 });
    assert.equal(g.nodes.get('registry://models/loan-approver:2.5.0')?.decisions, 8);
    assert.match(formatLineageTree(g), /registry:\/\/preprocessing\/feat:3 {2}\(preprocessing, 3 decisions stored\)/);
  });

  it('the CLI: scope --artifact exports with the model version of each decision, remediate --artifact selects the same', async () => {
    // As with a pipeline running: the CLI asks this process's store through the query endpoint.
    const port = await freePort();
    const server = await startQueryServer({ store: store!, port, dataDir, log });
    const env = { CLICKHOUSE_DATA_DIR: dataDir, DLOG_QUERY_PORT: String(port), LOG_LEVEL: 'warn' };
    const out = `${tempDir('audit-made-out')}/v5.csv`;
    const [scope, remediate, both] = await Promise.all([
      dlog(['scope', '--artifact', 'registry://datasets/loan:v5', '--export', 'csv', '--out', out], env),
      dlog(['remediate', '--artifact', 'registry://datasets/loan:v5', '--reason', 'INC-9', '--dry-run'], env),
      dlog(['scope', '--model', 'loan-approver:2.5.0', '--artifact', 'registry://datasets/loan:v5'], env),
    ]).finally(() => server.close());
    assert.equal(scope.code, 0, scope.stderr);
    assert.match(scope.stdout, /Scope of registry:\/\/datasets\/loan:v5\n[\s\S]*loan-approver:2\.4\.1\s+n\/a\s+3\s+3\s+decisions naming it\n/);
    assert.match(scope.stderr, /exported 10 stored decisions to /);
    const csv = readFileSync(out, 'utf8').trim().split('\n');
    assert.equal(csv[0], 'model,event_id,request_id,ts,endpoint,decision,confidence,weight,input_hash,trace_id');
    assert.equal(csv.length, 11);
    assert.equal(remediate.code, 0, remediate.stderr);
    assert.match(remediate.stdout, /\(dry run\) would record remediation "review" referencing 10 stored decisions in 1 part\(s\)/);
    assert.equal(both.code, 1);
    assert.match(both.stderr, /--model and --artifact are two kinds of scope: give one/);
  });
});
