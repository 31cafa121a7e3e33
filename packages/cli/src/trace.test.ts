import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { flattenTrajectory, formatTrace, traceJson, trajectoryTree, type TracePackage } from './trace.js';

describe('formatTrace', () => {
  it('tells a kind mismatch (an image ref registered as a dataset) from a digest mismatch', () => {
    const pkg: TracePackage = {
      decision: {
        event_id: 'e1', request_id: 'r1', ts: '2026-11-28 10:00:00.000', endpoint: 'loan-api', decision_type: 'loan_approval', decision: 'approved',
        confidence: 0.9, scores: {}, input_hash: 'sha256-x', input_fields: {}, model_name: 'loan-approver', model_version: '2.4.1', model_digest: 'sha256:m',
        image_ref: 'registry://datasets/loans:3', image_digest: '', config_ref: '', preprocessing_ref: 'registry://preprocessing/feat:v7', preprocessing_digest: 'sha256:other',
        environment_digest: '', policy_version: 'p@1', tier: 'full', policy_rule: 'r', sample_rate: 1, weight: 1, producer_service: 's', producer_sdk: 'ts', producer_host: null,
        resolved: false, unresolved_refs: [], digest_mismatches: ['registry://datasets/loans:3', 'registry://preprocessing/feat:v7'],
      },
      artifacts: [
        { role: 'image', ref: 'registry://datasets/loans:3', kind: 'dataset', version: '3', digest: 'sha256:d', metadata: {} },
        { role: 'preprocessing', ref: 'registry://preprocessing/feat:v7', kind: 'preprocessing', version: 'v7', digest: 'sha256:p', metadata: {} },
      ],
      lineage: [],
      remediations: [],
      registeredSince: [],
      lineageSince: [],
      trajectory: null,
      trajectoryTotal: null,
      focus: 'e1',
    };
    const text = formatTrace({ query: 'e1', matchedBy: 'event_id', packages: [pkg], total: 1 });
    const line = text.split('\n').find((l) => l.includes('⚠ unresolved')) ?? '';
    assert.match(line, /kind mismatch registry:\/\/datasets\/loans:3 \(registered as dataset, named as image\)/);
    assert.match(line, /digest mismatch registry:\/\/preprocessing\/feat:v7/);
    assert.doesNotMatch(line, /digest mismatch registry:\/\/datasets/);
  });

  const step = (i: number, parent: string) => ({ event_id: `s${i}`, step: i, parent_event_id: parent, ts: `2026-11-28 10:00:00.${String(i % 1000).padStart(3, '0')}`, tool_name: 'search', tool_args_hash: '', decision: 'call', confidence: 0.5, model_name: 'agent', model_version: '1' });
  const agentPackage = (rows: ReturnType<typeof step>[], focus: string, total: number | null = null): TracePackage => ({
    decision: { event_id: focus, request_id: 'r', ts: '2026-11-28 10:00:00.000', trace_id: 't1', resolved: true, unresolved_refs: [], digest_mismatches: [], scores: {}, input_fields: {} },
    artifacts: [],
    lineage: [],
    remediations: [],
    registeredSince: [],
    lineageSince: [],
    trajectory: trajectoryTree(rows),
    trajectoryTotal: total,
    focus,
  });

  it('draws a chain of 20,000 agent steps, and writes it as JSON, without running out of stack', () => {
    const rows = Array.from({ length: 20_000 }, (_, i) => step(i + 1, i === 0 ? '' : `s${i}`));
    const pkg = agentPackage(rows, 's15000');
    const text = formatTrace({ query: 's15000', matchedBy: 'event_id', packages: [pkg], total: 1 });
    assert.match(text, /Trajectory t1 \(20000 stored steps\):/);
    const focusLine = text.split('\n').find((l) => l.includes('◀ this decision')) ?? '';
    assert.match(focusLine, /\(depth 14999\) step 15000 /);
    // The indent stops growing: no line is longer than a shallow one by more than the cap.
    assert.ok(Math.max(...text.split('\n').map((l) => l.length)) < 300);
    const json = JSON.parse(JSON.stringify(traceJson({ query: 's15000', matchedBy: 'event_id', packages: [pkg], total: 1 }))) as { packages: { trajectory: { event_id: string; depth: number; children?: unknown }[] }[] };
    const steps = json.packages[0]!.trajectory;
    assert.equal(steps.length, 20_000);
    assert.equal(steps[19_999]!.event_id, 's20000');
    assert.equal(steps[19_999]!.depth, 19_999);
    assert.equal(steps[19_999]!.children, undefined);
  });

  it('shows steps whose parent ids form a ring, as a root, instead of losing them', () => {
    const rows = [step(1, ''), step(2, 's1'), step(3, 's4'), step(4, 's3')];
    const flat = flattenTrajectory(trajectoryTree(rows));
    assert.deepEqual(flat.map((f) => [f.step.event_id, f.depth]), [['s1', 0], ['s2', 1], ['s3', 0], ['s4', 1]]);
  });

  it('says when more decisions share the id than are shown, and how to list them all', () => {
    const pkg = agentPackage([step(1, '')], 's1');
    const text = formatTrace({ query: "req-o'1", matchedBy: 'request_id', packages: Array.from({ length: 20 }, () => pkg), total: 25 });
    assert.match(text, /^25 decisions have request_id req-o'1; the first 20 by time are shown/);
    assert.ok(text.includes(`WHERE request_id = {id:String} ORDER BY ts LIMIT 1 BY model_name, model_version, ts, event_id" -p id='req-o'\\''1'`), text.slice(0, 400));
  });

  it('says when a trajectory is longer than what is shown', () => {
    const text = formatTrace({ query: 's1', matchedBy: 'event_id', packages: [agentPackage([step(1, ''), step(2, 's1')], 's1', 12_000)], total: 1 });
    assert.match(text, /Trajectory t1 \(12000 stored steps; the 2 nearest this one are shown\):/);
  });
});
