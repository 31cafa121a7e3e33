import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { checksumOf, loadMigrations, type Migration, MigrationError, pendingMigrations, splitStatements } from './migrate.js';

describe('splitStatements', () => {
  it('splits on semicolons outside quotes and comments, dropping empty statements', () => {
    const sql = `-- header; with a semicolon
CREATE TABLE a (s String DEFAULT 'x;y', t String DEFAULT 'it''s;') ENGINE = Memory;
/* block; comment */
CREATE VIEW b AS SELECT "we;ird", \`q;\` FROM a;
-- trailing comment only
`;
    const out = splitStatements(sql);
    assert.equal(out.length, 2);
    assert.match(out[0]!, /^-- header; with a semicolon\nCREATE TABLE a .*'it''s;'\) ENGINE = Memory$/s);
    assert.match(out[1]!, /CREATE VIEW b AS SELECT "we;ird", `q;` FROM a$/);
  });

  it('refuses an unterminated quote', () => {
    assert.throws(() => splitStatements("SELECT 'oops"), MigrationError);
  });
});

describe('loadMigrations / pendingMigrations', () => {
  it('loads the shipped migrations in order', () => {
    const all = loadMigrations();
    assert.ok(all.length >= 6);
    assert.deepEqual(all.map((m) => m.version), [...all.map((m) => m.version)].sort((a, b) => a - b));
    assert.equal(all[0]!.file, '001_decisions.sql');
  });

  it('refuses badly named and duplicate versions', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dlog-mig-'));
    writeFileSync(path.join(dir, 'one.sql'), 'SELECT 1');
    assert.throws(() => loadMigrations(dir), /one\.sql is not named/);
    const dir2 = mkdtempSync(path.join(tmpdir(), 'dlog-mig-'));
    writeFileSync(path.join(dir2, '001_a.sql'), 'SELECT 1');
    writeFileSync(path.join(dir2, '001_b.sql'), 'SELECT 2');
    assert.throws(() => loadMigrations(dir2), /share version 1/);
  });

  it('refuses an applied file that changed, naming it, and one that vanished', () => {
    const all = loadMigrations();
    const first = all[0]!;
    const applied = [{ version: first.version, file: first.file, checksum: checksumOf('something else'), appliedAt: '' }];
    assert.throws(
      () => pendingMigrations(all, applied),
      (err: unknown) => err instanceof MigrationError && err.file === '001_decisions.sql' && /changed after it was applied/.test(err.message),
    );
    const second = all[1]!;
    const withoutSecond = all.filter((m) => m !== second);
    assert.throws(() => pendingMigrations(withoutSecond, [{ version: second.version, file: second.file, checksum: second.checksum, appliedAt: '' }]), /002_\w+\.sql .* missing/);
    // Beyond every file here: a newer decision-log migrated it, nothing was removed.
    assert.throws(() => pendingMigrations(all, [{ version: 999, file: '999_next.sql', checksum: 'x', appliedAt: '' }]), /migrated by a newer decision-log \(up to 999_next\.sql/);
    const ok = [{ version: first.version, file: first.file, checksum: first.checksum, appliedAt: '' }];
    assert.deepEqual(pendingMigrations(all, ok).map((m) => m.version), all.slice(1).map((m) => m.version));
  });

  it('refuses a migration numbered below one already applied: run last, it would undo the later ones', () => {
    const all = loadMigrations();
    const [first, second, third] = all as [Migration, Migration, Migration];
    const applied = [first, third].map((m) => ({ version: m.version, file: m.file, checksum: m.checksum, appliedAt: '' }));
    assert.throws(
      () => pendingMigrations(all, applied),
      (err: unknown) => err instanceof MigrationError && err.file === second.file && /numbered below 003.*Renumber it 0\d\d_<what>\.sql/.test(err.message),
    );
  });

  it('treats CRLF checkouts as unchanged', () => {
    assert.equal(checksumOf('a\r\nb\r\n'), checksumOf('a\nb\n'));
  });
});
