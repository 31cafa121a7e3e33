import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertReadOnlySql, ReadOnlySqlError } from './read-only-sql.js';

describe('assertReadOnlySql', () => {
  it('allows single read statements, with strings and comments that merely look dangerous', () => {
    for (const q of [
      'SELECT count() FROM v_decisions',
      "select * from v_decisions where output_decision = 'x; DROP TABLE decisions' -- ; comment",
      'WITH a AS (SELECT 1) SELECT * FROM a;',
      'SHOW TABLES',
      'DESCRIBE TABLE decisions',
      "SELECT uri, 'file(/etc/passwd)' FROM artifacts",
      '(SELECT 1)',
    ]) {
      assert.doesNotThrow(() => assertReadOnlySql(q), q);
    }
  });

  it('refuses writes, multiple statements, and reaching outside the database', () => {
    for (const [q, why] of [
      ['INSERT INTO decisions SELECT * FROM decisions', /starts with INSERT/],
      ['ALTER TABLE decisions DELETE WHERE 1', /starts with ALTER/],
      ['SELECT 1; DROP TABLE decisions', /one statement/],
      ["SELECT * FROM file('/etc/passwd', 'LineAsString')", /file\(\)/],
      ["SELECT * FROM url('http://example.com', 'CSV')", /url\(\)/],
      ["SELECT 1 INTO OUTFILE '/tmp/x'", /INTO OUTFILE/],
      ['SELECT 1 SETTINGS readonly = 0', /SETTINGS/],
      ['', /Empty query/],
    ] as const) {
      assert.throws(() => assertReadOnlySql(q), (err: unknown) => err instanceof ReadOnlySqlError && why.test(err.message), q);
    }
  });
});
