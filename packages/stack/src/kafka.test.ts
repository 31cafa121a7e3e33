import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { kafkaComponent } from './kafka.js';

describe('local Kafka', () => {
  it('keeps its data directory (inference.raw, dead letters: raw personal data) to this user alone', async () => {
    const runDir = mkdtempSync(path.join(tmpdir(), 'dlog-kafka-'));
    const dataDir = path.join(runDir, 'kafka');
    // Formatted before (so prepare writes its properties and stops), and left readable by all.
    mkdirSync(path.join(dataDir, 'data'), { recursive: true, mode: 0o755 });
    writeFileSync(path.join(dataDir, 'data', 'meta.properties'), 'cluster.id=x\n');
    await kafkaComponent({ stackDir: runDir, runDir, port: 19092, controllerPort: 19093 }).prepare();
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
  });
});
