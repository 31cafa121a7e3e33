import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pipelineGateThreads } from './create-pipeline.js';

describe('pipelineGateThreads', () => {
  it('gives the gate one thread on a 2-core machine running the whole pipeline', () => {
    assert.deepEqual(pipelineGateThreads({}, 2), { DLOG_GATE_THREADS: '1' });
    assert.deepEqual(pipelineGateThreads({ DLOG_GATE_THREADS: '' }, 1), { DLOG_GATE_THREADS: '1' });
  });
  it("leaves the gate's own default on larger machines, and never overrides what the user set", () => {
    assert.deepEqual(pipelineGateThreads({}, 8), {});
    assert.deepEqual(pipelineGateThreads({ DLOG_GATE_THREADS: '2' }, 2), {});
    assert.deepEqual(pipelineGateThreads({ DLOG_GATE_THREADS: '0' }, 2), {});
  });
});
