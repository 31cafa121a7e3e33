import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createStore, migrate, type Store } from '@dlog/store';
import { AuditInputError, chTime, storeQuery, TruncatedAnswerError, wholeAnswers, type AuditQuery, type Row } from './audit-query.js';
import { decisionsText, formatLineageTree, type LineageGraph } from './lineage.js';
import { computeScope, deploymentWindowsOf, emptyScopeMessage, formatScope, isEmptyScope, scopeDecisions, scopeHints, scopePredicate, shortfallNote, type ResolvedScope, type ScopeResult } from './scope.js';
import { scopeOptionsFrom } from './scope-command.js';

/** Stored decisions e0 … e{n-1}, one a second, as the export's page query answers them. */
function decisions(n: number, size = 10): Row[] {
  return Array.from({ length: n }, (_, i) => ({
    event_id: `e${String(i).padStart(5, '0')}`,
    request_id: `r${i}`,
    ts: new Date(Date.UTC(2026, 10, 27, 6, 0, i)).toISOString().replace('T', ' ').replace('Z', ''),
    endpoint: 'loan-api',
    decision: 'x'.repeat(size),
    confidence: 0.5,
    weight: 1,
    input_hash: 'h',
    trace_id: '',
  }));
}

/**
 * The page query over `rows`: those after the cursor, up to the limit, through `answer` (which may
 * cut or refuse a page as the query path would). Records each page's limit.
 */
function pager(rows: Row[], answer: (page: Row[], limit: number) => Row[] = (page) => page): { q: AuditQuery; limits: number[]; sql: string[] } {
  const limits: number[] = [];
  const sql: string[] = [];
  const q: AuditQuery = async (text, params = {}) => {
    sql.push(text);
    const limit = Number(params.p_limit);
    limits.push(limit);
    const after = params.p_ts === undefined ? -1 : rows.findIndex((r) => r.ts === params.p_ts && r.event_id === params.p_id);
    return answer(rows.slice(after + 1, after + 1 + limit), limit);
  };
  return { q, limits, sql };
}

const collect = async (pages: AsyncGenerator<Row[]>) => {
  const ids: string[] = [];
  for await (const page of pages) ids.push(...page.map((r) => String(r.event_id)));
  return ids;
};

const model = { model: { name: 'loan-approver', version: '2.5.0' } };

describe('the stored decisions of a scope, page by page', () => {
  it('goes on after a page shorter than asked, until a page comes back empty', async () => {
    const rows = decisions(25);
    // A page cut short (as the query path once cut one at 64 MiB and nothing said so): the
    // export stopped there, and the rest of the scope was reported as sampled out.
    const { q, limits } = pager(rows, (page) => page.slice(0, 7));
    const ids = await collect(scopeDecisions(q, model, 10));
    assert.deepEqual(ids, rows.map((r) => r.event_id));
    assert.equal(limits.length, 5, 'four pages of 7, 7, 7 and 4, then the empty one');
  });

  it('asks again with fewer rows when a page is cut at the size limit, skipping and repeating nothing', async () => {
    const rows = decisions(30, 1_000);
    // The path cuts any page of more than 8 rows, as it does past 64 MiB of long answers.
    const { q, limits } = pager(rows, (page, limit) => {
      if (page.length > 8) throw new TruncatedAnswerError(8);
      return page;
    });
    const ids = await collect(scopeDecisions(q, model, 20));
    assert.deepEqual(ids, rows.map((r) => r.event_id));
    assert.deepEqual(limits.slice(0, 2), [20, 4], 'half of what came before the cut');
  });

  it('sizes the next pages from the bytes of the last, so long decisions do not hit the limit again', async () => {
    const rows = decisions(40, 4 * 1024 * 1024); // 4 MiB answers: 16 make 64 MiB, 4 the 16 MiB a page aims at
    let cuts = 0;
    const { q, limits } = pager(rows, (page) => {
      if (page.length > 16) throw new TruncatedAnswerError((cuts++, 16));
      return page;
    });
    assert.equal((await collect(scopeDecisions(q, model, 10_000))).length, 40);
    assert.equal(cuts, 1, 'cut once, then sized to fit');
    assert.deepEqual(limits.slice(0, 2), [10_000, 8]);
    // About 16 MiB each: 3 answers and what goes with them.
    assert.ok(limits.slice(2).every((l) => l === 3), `pages after the first: ${limits.slice(2).join(', ')}`);
  });

  it('gives up on one decision larger than the limit, saying the answer was cut', async () => {
    const { q, limits } = pager(decisions(3), () => {
      throw new TruncatedAnswerError(0);
    });
    await assert.rejects(collect(scopeDecisions(q, model, 4)), TruncatedAnswerError);
    assert.deepEqual(limits, [4, 1]);
  });

  it("pages an artifact's scope one model version after another, each on its sorting key", async () => {
    const r: ResolvedScope = {
      request: { artifact: 'registry://datasets/loan:v5' },
      label: 'registry://datasets/loan:v5',
      whole: [{ name: 'b', version: '1' }],
      partial: [{ name: 'a', version: '2' }],
      refs: ['registry://datasets/loan:v5', 'registry://models/b:1'],
    };
    const asked: Record<string, unknown>[] = [];
    const q: AuditQuery = async (_sql, params = {}) => {
      asked.push(params);
      return params.p_ts === undefined ? [{ ...decisions(1)[0]!, model: `${String(params.s_name)}:${String(params.s_version)}` }] : [];
    };
    const models: string[] = [];
    for await (const page of scopeDecisions(q, r)) models.push(...page.map((x) => String(x.model)));
    assert.deepEqual(models, ['a:2', 'b:1']);
    // The version partly in scope is tested for what its decisions name; the whole one is not.
    assert.deepEqual(asked.map((p) => [p.s_name, p.s_version, p.s_refs !== undefined]), [
      ['a', '2', true],
      ['a', '2', true],
      ['b', '1', false],
      ['b', '1', false],
    ]);
    assert.match(scopePredicate(r, { name: 'a', version: '2' }).sql, /^model_name = \{s_name:String\} AND model_version = \{s_version:String\} AND \(.*hasAny\(lineage\.ref/);
  });
});

describe('answers the query path cut', () => {
  it('are refused, not used', async () => {
    const q = wholeAnswers(async () => ({ rows: [{ n: 1 }], truncated: true, elapsedMs: 1 }));
    await assert.rejects(q('SELECT 1'), (err: unknown) => err instanceof TruncatedAnswerError && /cut after 1 rows; dlog does not use a cut answer/.test(err.message));
    assert.deepEqual(await wholeAnswers(async () => ({ rows: [{ n: 1 }], truncated: false, elapsedMs: 1 }))('SELECT 1'), [{ n: 1 }]);
  });
});

describe('scope options', () => {
  it('take --model or --artifact, one of them', () => {
    assert.deepEqual(scopeOptionsFrom({ artifact: ' registry://datasets/loan:v5 ' }), { artifact: 'registry://datasets/loan:v5', endpoint: undefined, since: undefined, until: undefined, where: undefined });
    assert.deepEqual(scopeOptionsFrom({ model: 'loan-approver:2.5.0' }).endpoint, undefined);
    assert.throws(() => scopeOptionsFrom({ model: 'a:1', artifact: 'registry://datasets/x:1' }), (err: unknown) => err instanceof AuditInputError && /--model and --artifact are two kinds of scope: give one/.test(err.message));
    assert.throws(() => scopeOptionsFrom({}), (err: unknown) => err instanceof AuditInputError && /--model <name:version> .* or --artifact <ref>/.test(err.message));
    assert.throws(() => scopeOptionsFrom({ artifact: 'two words' }), /--artifact takes an artifact's ref/);
  });
});

describe('deployment windows of several versions', () => {
  it('follows each version through the same endpoint history', async () => {
    const ev = (action: string, model: string, share: number, ts: string) => ({ action, endpoint: 'loan-api', environment: 'prod', model_ref: `registry://models/${model}`, previous_model_ref: null, traffic_share: share, ts });
    const q: AuditQuery = async () => [ev('deploy', 'loan:1', 1, 't1'), ev('canary', 'loan:2', 0.2, 't2'), ev('rollback', 'loan:1', 1, 't3'), ev('deploy', 'loan:3', 1, 't4')];
    const w = await deploymentWindowsOf(q, [
      { name: 'loan', version: '1' },
      { name: 'loan', version: '2' },
    ]);
    assert.deepEqual(
      w.map((x) => [x.model, x.from, x.to, Number(x.share.toFixed(2))]),
      [
        ['loan:1', 't1', 't2', 1],
        ['loan:1', 't2', 't3', 0.8],
        ['loan:2', 't2', 't3', 0.2],
        ['loan:1', 't3', 't4', 1],
      ],
    );
  });

  it('closes the window of a version a canary at share 1 left at 0%', async () => {
    const ev = (action: string, model: string, share: number, ts: string) => ({ action, endpoint: 'loan-api', environment: 'prod', model_ref: `registry://models/${model}`, previous_model_ref: null, traffic_share: share, ts });
    const q: AuditQuery = async () => [ev('deploy', 'loan:1', 1, 't1'), ev('canary', 'loan:2', 1, 't2')];
    const w = await deploymentWindowsOf(q, [{ name: 'loan', version: '1' }]);
    assert.deepEqual(w.map((x) => [x.model, x.from, x.to, x.share]), [['loan:1', 't1', 't2', 1]]);
  });
});

describe('formatting', () => {
  const base: ScopeResult = {
    label: 'registry://datasets/loan:v5',
    model: null,
    artifact: 'registry://datasets/loan:v5',
    downstream: ['registry://preprocessing/feat:3'],
    filters: { endpoint: null, since: null, until: null, where: null },
    exact: null,
    exactNote: 'exact counts are per model version',
    sampled: 40,
    weighted: 58,
    first: null,
    last: null,
    versions: [
      { model: 'loan:2', whole: true, exact: 30, sampled: 21, weighted: 30 },
      { model: 'loan:1', whole: false, exact: null, sampled: 19, weighted: 28 },
    ],
    versionsRest: null,
    endpoints: [{ endpoint: 'loan-api', exact: null, sampled: 40, weighted: 58 }],
    endpointsRest: null,
    windows: [{ model: 'loan:2', endpoint: 'loan-api', environment: 'prod', from: 't1', to: null, share: 1, action: 'deploy' }],
    byDecision: [{ decision: 'approved', exact: null, sampled: 30, weighted: 40 }],
    byDecisionRest: { lines: 99_985, exact: null, sampled: 10, weighted: 18 },
    pastRetention: [],
  };

  it("shows an artifact's scope by model version, whole or not, and the lines left out as one", () => {
    const text = formatScope(base);
    assert.match(text, /^Scope of registry:\/\/datasets\/loan:v5\n/);
    assert.match(text, /decisions \(exact\)\s+n\/a\s+\(exact counts are per model version\)/);
    assert.match(text, /downstream\s+1 artifacts: registry:\/\/preprocessing\/feat:3/);
    assert.match(text, /model\s+exact\s+sampled\s+weighted\s+in scope\n\s+loan:2\s+30\s+21\s+30\s+whole version\n\s+loan:1\s+n\/a\s+19\s+28\s+decisions naming it\n/);
    assert.match(text, /loan:2 on loan-api \(prod\)/);
    assert.match(text, /\(99985 more decisions\)\s+n\/a\s+10\s+18/);
    const multiLine = formatScope({ ...base, byDecision: [{ decision: 'approved\r\nlater', exact: null, sampled: 30, weighted: 40 }] });
    assert.match(multiLine, /\n\s+approved\\r\\nlater\s+n\/a\s+30\s+40\n/);
  });

  it("says how a lineage node's decisions were counted", () => {
    assert.equal(decisionsText({ ref: 'm', kind: 'model', digest: '', decisions: 12 }), '12 decisions');
    assert.equal(decisionsText({ ref: 'i', kind: 'image', digest: '', named: { stored: 40, weighted: 40 } }), '40 decisions stored');
    assert.equal(decisionsText({ ref: 'p', kind: 'preprocessing', digest: '', named: { stored: 40, weighted: 400 } }), '~400 decisions, 40 stored');
    const g: LineageGraph = {
      root: 'd',
      nodes: new Map([
        ['d', { ref: 'd', kind: 'dataset', digest: '' }],
        ['p', { ref: 'p', kind: 'preprocessing', digest: '', named: { stored: 40, weighted: 400 } }],
      ]),
      edges: [{ child: 'p', parent: 'd' }],
      cutAt: [],
      refused: [],
    };
    assert.match(formatLineageTree(g), /└─ p {2}\(preprocessing, ~400 decisions, 40 stored\)/);
  });
});

/** A store of model m's decisions, as the reviewer's: version 1 on endpoints ep and rec, version 3 minimal-tier, one of its decisions 100 days old. */
describe('scope on an embedded store', () => {
  let store: Store;
  let q: AuditQuery;
  const day = 86_400_000;
  const old = Date.now() - 100 * day;

  before(async () => {
    store = await createStore({ database: 'dlog', dataDir: path.join(mkdtempSync(path.join(tmpdir(), 'dlog-scope-')), 'clickhouse') });
    await migrate(store);
    q = storeQuery(store);
    let offset = 0;
    const decision = (version: string, ts: string, o: Record<string, unknown> = {}) => ({
      event_id: `e${offset}`, request_id: `r${offset}`, ts, endpoint: 'ep', decision_type: 'loan', model_name: 'm', model_version: version, input_hash: 'sha256-x',
      decision: 'approved', confidence: 0.6, tier: 'standard', sample_rate: 1, policy_version: 'p1', resolved: true, source_partition: 0, source_offset: offset++, gate_ts: ts, enriched_at: ts, ...o,
    });
    const counted = (version: string, minute: string, o: Record<string, unknown> = {}) => ({
      minute, model_name: 'm', model_version: version, endpoint: 'ep', decision_type: 'loan', tier: 'standard', decision: 'approved', policy_version: 'p1', kept: 1, dropped: 0, batch_id: `b${offset}`, row_key: `k${offset++}`, ...o,
    });
    const oldTs = chTime(old);
    const now = chTime(Date.now());
    await store.client.insert({
      table: 'decisions',
      format: 'JSONEachRow',
      values: [
        decision('1', '2026-11-27 06:00:59.999'),
        decision('1', '2026-11-27 06:01:00.000'),
        decision('1', '2026-11-27 06:02:00.000', { decision: 'declined' }),
        decision('1', '2026-11-27 06:01:30.000', { endpoint: 'rec', sample_rate: 0.1 }),
        decision('3', oldTs, { tier: 'minimal' }),
        decision('3', now, { tier: 'minimal' }),
      ],
    });
    await store.client.insert({
      table: 'decision_counts',
      format: 'JSONEachRow',
      values: [
        counted('1', '2026-11-27 06:00:00.000'),
        counted('1', '2026-11-27 06:01:00.000'),
        counted('1', '2026-11-27 06:02:00.000', { decision: 'declined' }),
        counted('1', '2026-11-27 06:01:00.000', { endpoint: 'rec', dropped: 9 }),
        // Five more of that minute were sampled out: never stored, so none of them can have expired.
        counted('3', `${oldTs.slice(0, 16)}:00.000`, { tier: 'minimal', dropped: 5 }),
        counted('3', `${now.slice(0, 16)}:00.000`, { tier: 'minimal' }),
      ],
    });
    // The merge runs the TTL: the 100-day-old minimal-tier decision goes; its count stays.
    await store.client.command({ query: 'OPTIMIZE TABLE decisions FINAL' });
  });
  after(() => store?.close());

  it('an empty scope lists what the version has, asked without the filter that matched nothing', async () => {
    const m1 = { name: 'm', version: '1' };
    const byEndpoint = await computeScope(q, { model: m1, endpoint: 'nope' });
    assert.ok(isEmptyScope(byEndpoint));
    assert.match(emptyScopeMessage(byEndpoint, undefined, await scopeHints(q, { model: m1, endpoint: 'nope' })), /\nDrop --endpoint nope to see every endpoint; m:1 decided on rec \(10\), ep \(3\) \(all time\)\.$/);
    const byWhere = await computeScope(q, { model: m1, where: 'decision=Approved' });
    assert.ok(isEmptyScope(byWhere));
    assert.match(emptyScopeMessage(byWhere, undefined, await scopeHints(q, { model: m1, where: 'decision=Approved' })), /\nLoosen --where "decision=Approved"; m:1's most common decisions are approved \(12\), declined \(1\) \(all time\)\.$/);
  });

  it('says decisions older than their tier\'s retention may have expired, not only that they were sampled out', async () => {
    const m3 = { name: 'm', version: '3' };
    const all = await computeScope(q, { model: m3 });
    assert.equal(all.exact, 7);
    assert.equal(all.sampled, 1, 'the TTL deleted the old one');
    assert.deepEqual(all.pastRetention, [{ tier: 'minimal', days: 90, decisions: 1 }]);
    assert.equal(shortfallNote(all, 1), '6 more are counted but not stored: up to 1 may have expired (minimal-tier decisions are kept 90 days, and 1 counted here is older); the others were sampled out');
    // A window inside the retention: sampling is all that explains a shortfall there.
    const recent = await computeScope(q, { model: m3, since: Date.now() - 30 * day });
    assert.deepEqual(recent.pastRetention, []);
    // Standard-tier decisions of 2026-11-27 are within their 730 days.
    assert.deepEqual((await computeScope(q, { model: { name: 'm', version: '1' } })).pastRetention, []);
  });

  it('says the window is widened to whole minutes only when an edge is between minutes', async () => {
    const m1 = { name: 'm', version: '1' };
    const whole = await computeScope(q, { model: m1, since: Date.UTC(2026, 10, 27, 6, 1), until: Date.UTC(2026, 10, 27, 6, 2) });
    assert.equal(whole.exactNote, null);
    assert.equal(whole.exact, 11, 'the minute 06:01, both endpoints');
    const between = await computeScope(q, { model: m1, since: Date.UTC(2026, 10, 27, 6, 1, 30), until: Date.UTC(2026, 10, 27, 6, 2) });
    assert.match(between.exactNote ?? '', /widened to whole minutes/);
  });
});
