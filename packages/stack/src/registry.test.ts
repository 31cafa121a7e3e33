import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { registryComponent, wholeJars } from './registry.js';

test('a whole install from before the marker is adopted, not deleted and fetched again', async () => {
  // A registry may be running from it: the first version of the marker removed such an install
  // under the running registry and fetched it again.
  const stackDir = mkdtempSync(path.join(tmpdir(), 'dlog-reg-adopt-'));
  const home = path.join(stackDir, 'apicurio-3.0.9');
  mkdirSync(path.join(home, 'lib'), { recursive: true });
  writeFileSync(path.join(home, 'apicurio-registry-app-3.0.9-runner.jar'), 'jar');
  // The smallest whole zip: its end-of-central-directory record alone.
  const emptyZip = Buffer.concat([Buffer.from([0x50, 0x4b, 0x05, 0x06]), Buffer.alloc(18)]);
  for (let i = 0; i < 359; i++) writeFileSync(path.join(home, 'lib', `l${i}.jar`), emptyZip);
  const said: string[] = [];
  await registryComponent({ stackDir, runDir: stackDir, port: 1 }).provision((m) => said.push(m));
  assert.ok(existsSync(path.join(home, '.complete')));
  assert.ok(existsSync(path.join(home, 'lib', 'l0.jar')), 'nothing was removed');
  assert.deepEqual(said, [], 'nothing was fetched');
});

test('a jar cut short does not count as whole, so such an install is not adopted (it failed every start)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'dlog-reg-cut-'));
  const emptyZip = Buffer.concat([Buffer.from([0x50, 0x4b, 0x05, 0x06]), Buffer.alloc(18)]);
  writeFileSync(path.join(dir, 'whole.jar'), Buffer.concat([Buffer.alloc(5000, 0x41), emptyZip]));
  writeFileSync(path.join(dir, 'cut.jar'), Buffer.alloc(1000, 0x50));
  writeFileSync(path.join(dir, 'empty.jar'), Buffer.alloc(0));
  assert.equal(wholeJars(dir), 1);
  assert.equal(wholeJars(path.join(dir, 'missing')), 0);
});
