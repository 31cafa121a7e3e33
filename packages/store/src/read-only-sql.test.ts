import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertReadOnlySql, checkReadOnlySql, deniedFunctions, readOnlyQueryText, ReadOnlySqlError } from './read-only-sql.js';

const refused = (q: string, why: RegExp) =>
  assert.throws(() => assertReadOnlySql(q), (err: unknown) => err instanceof ReadOnlySqlError && why.test(err.message), q);

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
      // Legitimate quoting: identifiers, heredoc strings, escapes, names that merely contain a denied one.
      'SELECT `model_name`, "model_version", count() AS `file` FROM v_decisions GROUP BY ALL',
      "SELECT $$it's; file('x')$$ AS s, $tag$INTO OUTFILE$tag$ AS t",
      "SELECT 'it''s \\' fine; url(x)' AS s, profile(1) AS p",
      'SELECT l.kind FROM v_decisions AS d ARRAY JOIN d.lineage AS l # comment with file(\n',
      'SELECT 1 /* nested /* file( */ still a comment; */',
      "SELECT model_name FROM v_decisions WHERE model_name = {model:String} ORDER BY 1 LIMIT 10 ; -- done",
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
      refused(q, why);
    }
  });

  it('sees quoted identifiers as names, so quoting a denied function does not hide it (reviewer repros)', () => {
    refused("SELECT * FROM `file`('/tmp/x.txt','LineAsString')", /file\(\) reaches outside/);
    refused("SELECT * FROM `url`('http://127.0.0.1:8081/apis','LineAsString')", /url\(\) reaches outside/);
    refused(`SELECT * FROM "FILE" ('/etc/passwd', 'LineAsString')`, /FILE\(\)/);
    refused("SELECT * FROM \u201Cs3\u201D('http://x/y', 'CSV')", /s3\(\)/);
    refused("SELECT * FROM `fil\\x65`('/etc/passwd', 'LineAsString')", /file\(\)/);
    refused("SELECT * FROM remote /* c */ ('127.0.0.1', system.one)", /remote\(\)/);
    refused("SELECT * FROM file\u00A0('/etc/passwd')", /file\(\)/);
  });

  it('ends numbers where the engine does, so a name after an exponent-like letter is seen (reviewer repro)', () => {
    // `0x1e+file(...)`: `e` is a hex digit, not an exponent, so the engine reads 0x1e + file(...).
    refused("SELECT 0x1e+file('/etc/hostname')::UInt64", /file\(\) reaches outside/);
    refused("SELECT 0x1E-url('http://127.0.0.1:8081/')", /url\(\)/);
    refused("SELECT 0b1e+file('/etc/passwd')", /file\(\)/);
    refused("SELECT 1_e+file('/etc/passwd')", /file\(\)/);
    refused("SELECT 1.5E-3+file('/etc/passwd')", /file\(\)/);
    for (const q of ['SELECT 1e+5, 1E-3, 0x1p-3, 0x1P+4, 1_000_000, 0x1e, 0b101, 1.5e-3, .5e+2 FROM numbers(2)', 'SELECT t.1.2 FROM (SELECT ((1, 2), 3) AS t)']) {
      assert.doesNotThrow(() => assertReadOnlySql(q), q);
    }
  });

  it('reads $$ heredocs and Unicode quotes as strings, so a quote inside one cannot hide SQL', () => {
    refused("SELECT $$'$$ AS x INTO OUTFILE '/tmp/out.txt' --'", /INTO OUTFILE/);
    refused("SELECT $a$'$a$ AS x, file('/etc/passwd') AS y --'", /file\(\)/);
    refused("SELECT \u2018'\u2019 AS x, file('/etc/passwd') AS y --'", /file\(\)/);
    refused("SELECT 1 INTO /* x */ OUTFILE '/tmp/out.txt'", /INTO OUTFILE/);
    // `//` and `# ` start comments in ClickHouse: a quote in one is not a string.
    refused("SELECT 1 // '\n, file('/etc/passwd') -- '", /file\(\)/);
    refused("SELECT 1 # '\n, file('/etc/passwd') -- '", /file\(\)/);
    // Nested comments end where ClickHouse ends them.
    refused("SELECT 1 /* /* */ ' */ , file('/etc/passwd') -- '", /file\(\)/);
  });

  it('refuses what it cannot read to the end: unclosed strings, identifiers and comments', () => {
    refused("SELECT 'abc", /unclosed string/);
    refused('SELECT `abc', /unclosed ` identifier/);
    refused('SELECT 1 /* never closed', /unclosed \/\* comment/);
  });

  it('denies every function that reaches outside, case-insensitively', () => {
    for (const f of ['s3Cluster', 'remoteSecure', 'clusterAllReplicas', 'postgresql', 'executable', 'icebergS3', 'deltaLake', 'filesystem', 'dictGet']) {
      assert.ok(deniedFunctions.has(f.toLowerCase()), f);
      refused(`SELECT * FROM ${f.toUpperCase()}('x')`, new RegExp(`${f.toUpperCase()}\\(\\)`));
    }
  });
});

describe('readOnlyQueryText', () => {
  it('runs the statement under readonly and a row limit, in its own SETTINGS clause', () => {
    assert.equal(readOnlyQueryText('SELECT 1 AS x -- note', { readonly: 1, limit: 101 }), 'SELECT 1 AS x -- note\nSETTINGS readonly = 1, limit = 101');
    assert.equal(readOnlyQueryText('WITH a AS (SELECT 1) SELECT * FROM a;  ', { readonly: 2, limit: 5 }), 'WITH a AS (SELECT 1) SELECT * FROM a\nSETTINGS readonly = 2, limit = 5');
    assert.equal(readOnlyQueryText('SELECT 1', { readonly: 1, limit: 5, maxSeconds: 1.5 }), 'SELECT 1\nSETTINGS readonly = 1, limit = 5, max_execution_time = 2');
  });

  it('wraps a top-level UNION, whose branches a setting would limit one by one', () => {
    assert.equal(checkReadOnlySql('SELECT a FROM t WHERE a IN (SELECT 1 UNION ALL SELECT 2)').setOperation, false);
    assert.equal(
      readOnlyQueryText('SELECT 1 UNION ALL SELECT 2', { readonly: 1, limit: 3 }),
      'SELECT * FROM (\nSELECT 1 UNION ALL SELECT 2\n)\nSETTINGS readonly = 1, limit = 3',
    );
  });

  it('checks before it builds', () => {
    assert.throws(() => readOnlyQueryText("SELECT * FROM `file`('/etc/passwd')", { readonly: 1, limit: 1 }), ReadOnlySqlError);
    assert.throws(() => readOnlyQueryText("SELECT * FROM `file`('/etc/passwd')", 'no settings'), ReadOnlySqlError);
  });

  it('without settings, for a server user who may change none: the checked statement alone', () => {
    assert.equal(readOnlyQueryText('SELECT 1 AS x UNION ALL SELECT 2;', 'no settings'), 'SELECT 1 AS x UNION ALL SELECT 2');
  });
});

describe('FORMAT in analyst SQL', () => {
  it('is refused with the option to use instead; a column or function named format is not', () => {
    assert.throws(() => assertReadOnlySql('SELECT 1 FORMAT CSV'), (err: unknown) => err instanceof ReadOnlySqlError && /-f csv/.test(err.message));
    assert.throws(() => assertReadOnlySql('SELECT 1 format JSONEachRow;'), ReadOnlySqlError);
    assertReadOnlySql('SELECT format FROM t');
    assertReadOnlySql("SELECT format('{} {}', 'a', 'b') AS s");
    assertReadOnlySql('SELECT a, format FROM t ORDER BY format');
    assertReadOnlySql('SELECT number AS format FROM numbers(3) ORDER BY format DESC');
    assertReadOnlySql('SELECT format, count() FROM t GROUP BY format ORDER BY format ASC');
    assertReadOnlySql('SELECT a FROM t ORDER BY a, format DESC');
    assert.throws(() => assertReadOnlySql('SELECT 1 FORMAT `CSV`'), ReadOnlySqlError);
  });
});
