import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
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

describe('engines', () => {
  it('admits no Node release without crypto.hash, which environment.ts and canonical-json.ts import (added in 20.12)', () => {
    const root = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { engines?: { node?: string } };
    const min = /^>=\s*(\d+)\.(\d+)/.exec(root.engines?.node ?? '');
    assert.ok(min, `engines.node is ${root.engines?.node}`);
    const [major, minor] = [Number(min[1]), Number(min[2])];
    assert.ok(major > 20 || (major === 20 && minor >= 12), `engines.node ${root.engines?.node} admits a Node without crypto.hash`);
  });
});
