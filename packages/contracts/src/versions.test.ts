import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareVersions } from './versions.js';

const sorted = (vs: string[]) => [...vs].sort(compareVersions);

describe('compareVersions', () => {
  it('reads numeric runs as numbers', () => {
    assert.deepEqual(sorted(['2.10.0', '2.9.1', '10', '2.4.1', '9']), ['2.4.1', '2.9.1', '2.10.0', '9', '10']);
  });

  it('puts a pre-release before its release, and pre-releases in their own order', () => {
    // The alerter takes the older version as the baseline: 2.5.0 was the baseline of 2.5.0-rc1.
    assert.ok(compareVersions('2.5.0-rc1', '2.5.0') < 0);
    assert.ok(compareVersions('2.5.0', '2.5.0-rc1') > 0);
    assert.ok(compareVersions('2.4.9', '2.5.0-rc1') < 0);
    assert.deepEqual(sorted(['2.5.0', '2.5.0-rc10', '2.5.0-beta', '2.5.0-rc2', '2.5.1-alpha.1']), ['2.5.0-beta', '2.5.0-rc2', '2.5.0-rc10', '2.5.0', '2.5.1-alpha.1']);
  });

  it('reads date-like versions as before: a dash before a digit is no pre-release', () => {
    assert.deepEqual(sorted(['2026-11-28', '2026-11-27', '2026-2-1']), ['2026-2-1', '2026-11-27', '2026-11-28']);
  });

  it('is a total order: versions equal by number but written differently are told apart by their text', () => {
    assert.equal(compareVersions('1.0', '1.0'), 0);
    assert.notEqual(compareVersions('1.01', '1.1'), 0);
    assert.equal(Math.sign(compareVersions('1.01', '1.1')), -Math.sign(compareVersions('1.1', '1.01')));
  });
});
