import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createStore, migrate, type Store } from '@dlog/store';
import { AuditInputError, storeQuery, type AuditQuery } from './audit-query.js';
import { idBytesPerPart, idParts, idsPerPart, planDeploy, planRollback, servingNow } from './audit-events.js';

const M = (version: string) => `registry://models/loan-approver:${version}`;
const v = (version: string) => ({ name: 'loan-approver', version });
const chTs = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

interface Dep {
  action: 'deploy' | 'canary' | 'rollback';
  version: string;
  share: number;
  ts: number;
  environment?: string;
  digest?: string;
  image?: string;
  config?: string;
}

/** Each test has an endpoint of its own on one embedded store, as the sink writes the events (null as ''). */
describe('deploy and rollback events on an embedded store', () => {
  let store: Store;
  let q: AuditQuery;
  let n = 0;
  const record = async (endpoint: string, deps: Dep[]) => {
    await store.client.insert({
      table: 'deployments',
      format: 'JSONEachRow',
      values: deps.map((d) => ({
        event_id: `ev${String(n++).padStart(4, '0')}`, action: d.action, endpoint, environment: d.environment ?? '', model_ref: M(d.version), model_digest: d.digest ?? '',
        previous_model_ref: '', image_ref: d.image ?? '', config_ref: d.config ?? '', traffic_share: d.share, ts: chTs(d.ts), actor: 't', reason: '',
      })),
    });
  };
  const rejects = async (p: Promise<unknown>, ...patterns: RegExp[]) => {
    const e = await p.then(() => assert.fail('expected a refusal'), (x: unknown) => x);
    assert.ok(e instanceof AuditInputError, String(e));
    for (const re of patterns) assert.match(e.message, re);
    return e.message;
  };
  const t0 = Date.UTC(2026, 10, 27, 4);

  before(async () => {
    store = await createStore({ database: 'dlog', dataDir: path.join(mkdtempSync(path.join(tmpdir(), 'dlog-deploy-')), 'clickhouse') });
    await migrate(store);
    q = storeQuery(store);
    // planDeploy deploys only versions that made decisions or are registered.
    const counted = (version: string) => ({ minute: '2026-11-27 04:00:00.000', model_name: 'loan-approver', model_version: version, endpoint: 'loan-api', decision_type: 'loan', tier: 'standard', decision: 'approved', policy_version: 'p1', kept: 1, dropped: 0, batch_id: `b${version}`, row_key: `k${version}` });
    await store.client.insert({ table: 'decision_counts', format: 'JSONEachRow', values: ['2.4.1', '2.4.2', '2.5.0'].map(counted) });
  });
  after(() => store?.close());

  describe('without --environment', () => {
    it('refuses when deployments without an environment sit next to a named one, naming both and the commands', async () => {
      // Prod's history recorded before environments were given, then one staging deploy: the next
      // prod rollback was filed under staging, "from" staging's 2.6.0.
      await record('mixed-api', [
        { action: 'deploy', version: '2.4.1', share: 1, ts: t0 },
        { action: 'canary', version: '2.5.0', share: 0.2, ts: t0 + 1000 },
        { action: 'deploy', version: '2.4.2', share: 1, ts: t0 + 2000, environment: 'staging' },
      ]);
      const rollback = planRollback(q, { endpoint: 'mixed-api', to: v('2.4.1'), reason: 'prod canary bad', actor: 't' });
      const text = await rejects(rollback, /several environments \(staging, and some recorded without --environment\)/);
      assert.ok(text.includes("\n  dlog rollback --endpoint mixed-api --environment staging --to loan-approver:2.4.1 --reason 'prod canary bad'"), text);
      assert.ok(text.includes("\n  dlog rollback --endpoint mixed-api --environment prod --to loan-approver:2.4.1 --reason 'prod canary bad'"), text);
      const deploy = planDeploy(q, { endpoint: 'mixed-api', model: v('2.5.0'), canary: true, share: 0.3, actor: 't' });
      const deployText = await rejects(deploy, /several environments \(staging, and some recorded without --environment\)/);
      assert.ok(deployText.includes('\n  dlog deploy --endpoint mixed-api --environment prod --model loan-approver:2.5.0 --canary --share 0.3'), deployText);

      // As suggested, the environment they were in goes on with their history.
      const e = await planRollback(q, { endpoint: 'mixed-api', environment: 'prod', to: v('2.4.1'), reason: 'x', actor: 't' });
      assert.equal(e.environment, 'prod');
      assert.equal(e.previous_model_ref, M('2.5.0'));
    });

    it('still takes the only environment, or none, when every deployment agrees', async () => {
      await record('prod-api', [{ action: 'deploy', version: '2.4.1', share: 1, ts: t0, environment: 'prod' }, { action: 'canary', version: '2.5.0', share: 0.2, ts: t0 + 1000, environment: 'prod' }]);
      assert.equal((await planRollback(q, { endpoint: 'prod-api', to: v('2.4.1'), reason: 'x', actor: 't' })).environment, 'prod');
      await record('bare-api', [{ action: 'deploy', version: '2.4.1', share: 1, ts: t0 }]);
      assert.equal((await planDeploy(q, { endpoint: 'bare-api', model: v('2.5.0'), actor: 't' })).environment, null);
    });
  });

  describe('rollback --to the canary', () => {
    it('is refused, with the command that promotes it and the one that rolls it back', async () => {
      await record('canary-api', [{ action: 'deploy', version: '2.4.1', share: 1, ts: t0, environment: 'prod' }, { action: 'canary', version: '2.5.0', share: 0.2, ts: t0 + 1000, environment: 'prod' }]);
      const text = await rejects(planRollback(q, { endpoint: 'canary-api', to: v('2.5.0'), reason: 'INC-42', actor: 't' }), /loan-approver:2\.5\.0 is the canary on canary-api in prod \(20\.0% of its traffic\)/);
      assert.ok(text.includes('\n  dlog deploy --endpoint canary-api --environment prod --model loan-approver:2.5.0\n'), text);
      assert.ok(text.endsWith('\n  dlog rollback --endpoint canary-api --environment prod --to loan-approver:2.4.1 --reason INC-42'), text);
    });

    it('is taken for a version that served all of the traffic before, now back at a partial share', async () => {
      await record('back-api', [
        { action: 'deploy', version: '2.4.1', share: 1, ts: t0 },
        { action: 'deploy', version: '2.5.0', share: 1, ts: t0 + 1000 },
        { action: 'canary', version: '2.4.1', share: 0.1, ts: t0 + 2000 },
      ]);
      const e = await planRollback(q, { endpoint: 'back-api', to: v('2.4.1'), reason: 'x', actor: 't' });
      assert.equal(e.previous_model_ref, M('2.5.0'));
    });
  });

  it('stamps a new event after the last one of its history, whatever the clock running dlog says', async () => {
    // An operator whose clock ran 2 minutes fast recorded the canary.
    const ahead = Date.now() + 120_000;
    await record('skew-api', [{ action: 'deploy', version: '2.4.1', share: 1, ts: t0, environment: 'prod' }, { action: 'canary', version: '2.5.0', share: 0.2, ts: ahead, environment: 'prod' }]);
    const rollback = await planRollback(q, { endpoint: 'skew-api', to: v('2.4.1'), reason: 'x', actor: 't' });
    assert.equal(rollback.ts, ahead + 1);
    const deploy = await planDeploy(q, { endpoint: 'skew-api', model: v('2.4.2'), actor: 't' });
    assert.equal(deploy.ts, ahead + 1);
    // Another environment's clock does not move this one's.
    const before = Date.now();
    const staging = await planDeploy(q, { endpoint: 'skew-api', environment: 'staging', model: v('2.4.2'), actor: 't' });
    assert.ok(staging.ts >= before && staging.ts < ahead, String(staging.ts));
  });

  it('names the endpoint\'s environments when --environment names none of them', async () => {
    await record('typo-api', [{ action: 'deploy', version: '2.4.1', share: 1, ts: t0, environment: 'prod' }, { action: 'canary', version: '2.5.0', share: 0.2, ts: t0 + 1000, environment: 'prod' }]);
    const text = await rejects(
      planRollback(q, { endpoint: 'typo-api', environment: 'prd', to: v('2.4.1'), reason: 'x', actor: 't' }),
      /No deployment was recorded for endpoint "typo-api" in environment "prd"; its deployments are in prod\./,
    );
    assert.ok(text.endsWith('\n  dlog rollback --endpoint typo-api --environment prod --to loan-approver:2.4.1 --reason x'), text);
    assert.doesNotMatch(text, /Endpoints with deployments/);
  });

  it('copies the digest, image and config of the version rolled back to from its last deploy there', async () => {
    await record('digest-api', [
      { action: 'deploy', version: '2.4.1', share: 1, ts: t0, environment: 'prod', digest: 'sha256:old', image: 'inference-loan:1.0', config: 'configs/prod/loan:v1' },
      { action: 'deploy', version: '2.4.1', share: 1, ts: t0 + 1000, environment: 'prod', digest: 'sha256:241', image: 'inference-loan:1.1', config: 'configs/prod/loan:v2' },
      // Staging's deploy of the same version is another history.
      { action: 'deploy', version: '2.4.1', share: 1, ts: t0 + 1500, environment: 'staging', digest: 'sha256:241', image: 'inference-loan:staging', config: 'configs/staging/loan:v9' },
      { action: 'canary', version: '2.5.0', share: 0.2, ts: t0 + 2000, environment: 'prod', digest: 'sha256:250', image: 'inference-loan:1.2', config: 'configs/prod/loan:v3' },
    ]);
    const e = await planRollback(q, { endpoint: 'digest-api', environment: 'prod', to: v('2.4.1'), reason: 'x', actor: 't' });
    assert.deepEqual([e.model_digest, e.image_ref, e.config_ref], ['sha256:241', 'inference-loan:1.1', 'configs/prod/loan:v2']);
  });

  it('leaves out of "serving" a version a canary at share 1 took all of the traffic from', async () => {
    await record('full-canary-api', [{ action: 'deploy', version: '2.4.1', share: 1, ts: t0 }, { action: 'canary', version: '2.5.0', share: 1, ts: t0 + 1000 }]);
    assert.deepEqual([...(await servingNow(q, 'full-canary-api')).serving], [[M('2.5.0'), 1]]);
  });
});

describe('remediation parts', () => {
  it('cuts ids by count, and by bytes when they are long, so every part fits in a Kafka record', () => {
    const uuids = Array.from({ length: 12_001 }, (_, i) => `0193a1b2-0000-7000-8000-${String(i).padStart(12, '0')}`);
    assert.deepEqual(idParts(uuids).map((p) => p.length), [idsPerPart, idsPerPart, 2_001]);
    // 5,000 ids of 300 characters were one 1.5 MB part, which the broker refused.
    const long = Array.from({ length: 12_000 }, (_, i) => `${'x'.repeat(290)}-${String(i).padStart(9, '0')}`);
    const parts = idParts(long);
    for (const p of parts) assert.ok(p.reduce((n, id) => n + Buffer.byteLength(id) + 5, 0) <= idBytesPerPart);
    assert.deepEqual(parts.flat(), long, 'every id once, in order');
    assert.equal(parts.length, Math.ceil(12_000 / Math.floor(idBytesPerPart / 305)));
  });

  it('gives one part for no ids, and an id larger than a part a part of its own', () => {
    assert.deepEqual(idParts([]), [[]]);
    const huge = 'h'.repeat(idBytesPerPart + 1);
    assert.deepEqual(idParts(['a', huge, 'b']), [['a'], [huge], ['b']]);
  });
});
