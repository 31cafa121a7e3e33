import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AuditInputError } from './audit-query.js';
import { parseVs } from './diff-command.js';

describe('parseVs', () => {
  const fraud = { name: 'fraud', version: 'eu:2' };

  it('reads a bare version, colons and all, as a version of --model\'s model', () => {
    assert.deepEqual(parseVs('3', fraud), { name: 'fraud', version: '3' });
    assert.deepEqual(parseVs(' eu:3 ', fraud), { name: 'fraud', version: 'eu:3' });
  });

  it('reads a name only where it cannot be a version: --model\'s own name, or a registry reference', () => {
    assert.deepEqual(parseVs('fraud:eu:3', fraud), { name: 'fraud', version: 'eu:3' });
    assert.deepEqual(parseVs('registry://models/eu:3', fraud), { name: 'eu', version: '3' });
  });

  it('refuses what is no version, saying what to type', () => {
    for (const text of ['', '  ', 'eu 3']) assert.throws(() => parseVs(text, fraud), (err: Error) => err instanceof AuditInputError && /--vs registry:\/\/models\/<name>:<version>/.test(err.message));
  });
});
