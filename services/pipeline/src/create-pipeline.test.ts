import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pipelineGateThreads, shutdownBudget } from './create-pipeline.js';
import { describeExit } from './worker-process.js';

describe('pipelineGateThreads', () => {
  it('runs the gate in its own event loop on a 2-core machine running the whole pipeline', () => {
    assert.deepEqual(pipelineGateThreads({}, 2), { DLOG_GATE_THREADS: '0' });
    assert.deepEqual(pipelineGateThreads({ DLOG_GATE_THREADS: '' }, 1), { DLOG_GATE_THREADS: '0' });
  });
  it("leaves the gate's own default on larger machines, and never overrides what the user set", () => {
    assert.deepEqual(pipelineGateThreads({}, 8), {});
    assert.deepEqual(pipelineGateThreads({ DLOG_GATE_THREADS: '2' }, 2), {});
    assert.deepEqual(pipelineGateThreads({ DLOG_GATE_THREADS: '1' }, 2), {});
  });
});

describe('shutdownBudget', () => {
  it('fits three workers in turn and the sink flush inside the limit, each worker ending itself before its SIGKILL', () => {
    for (const limit of [15_000, 2_000, 60_000, 7]) {
      const b = shutdownBudget(limit);
      assert.ok(3 * b.workerGraceMs + b.sinkDrainMs < limit || limit < 10, `limit ${limit}: ${JSON.stringify(b)}`);
      assert.ok(b.workerLimitMs < b.workerGraceMs || b.workerGraceMs === 1);
    }
    assert.deepEqual(shutdownBudget(15_000), { workerGraceMs: 3_300, workerLimitMs: 2_640, sinkDrainMs: 3_750 });
  });
});

describe('describeExit', () => {
  it('names the signal that killed a worker instead of "code null"', () => {
    assert.equal(describeExit(null, 'SIGKILL'), 'killed by SIGKILL');
    assert.equal(describeExit(1, null), 'code 1');
    assert.equal(describeExit(0, null), 'code 0');
  });
});
