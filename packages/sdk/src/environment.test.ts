import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalJson } from '@dlog/contracts';
import { captureEnvironment, environmentMetadata } from './environment.js';

describe('environment snapshot', () => {
  it('captures hardware, OS, runtime and library versions, with a stable digest', () => {
    const a = captureEnvironment({ libraries: { torch: '2.5.1' }, hardware: { gpu: 'none' } });
    const b = captureEnvironment({ hardware: { gpu: 'none' }, libraries: { torch: '2.5.1' } });
    assert.equal(a.digest, b.digest);
    assert.match(a.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(a.ref, `registry://environments/${a.digest}`);
    assert.equal(a.snapshot.runtime.node, process.versions.node);
    assert.equal(a.snapshot.libraries.torch, '2.5.1');
    assert.ok(a.snapshot.libraries.kafkajs, 'kafkajs version detected');
    assert.ok(a.snapshot.hardware.cpu_count);
    assert.equal(a.canonical, canonicalJson(a.snapshot));
    assert.notEqual(captureEnvironment({ libraries: { torch: '2.5.2' } }).digest, a.digest);
  });

  it('flattens into artifact metadata that still holds the full snapshot', () => {
    const env = captureEnvironment();
    const meta = environmentMetadata(env);
    assert.equal(meta['runtime.node'], process.versions.node);
    assert.equal(meta.snapshot_json, env.canonical);
  });
});
