import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { registryComponent } from './registry.js';

test('a whole install from before the marker is adopted, not deleted and fetched again', async () => {
  // A registry may be running from it: the first version of the marker removed such an install
  // under the running registry and fetched it again.
  const stackDir = mkdtempSync(path.join(tmpdir(), 'dlog-reg-adopt-'));
  const home = path.join(stackDir, 'apicurio-3.0.9');
  mkdirSync(path.join(home, 'lib'), { recursive: true });
  writeFileSync(path.join(home, 'apicurio-registry-app-3.0.9-runner.jar'), 'jar');
  for (let i = 0; i < 359; i++) writeFileSync(path.join(home, 'lib', `l${i}.jar`), '');
  const said: string[] = [];
  await registryComponent({ stackDir, runDir: stackDir, port: 1 }).provision((m) => said.push(m));
  assert.ok(existsSync(path.join(home, '.complete')));
  assert.ok(existsSync(path.join(home, 'lib', 'l0.jar')), 'nothing was removed');
  assert.deepEqual(said, [], 'nothing was fetched');
});
