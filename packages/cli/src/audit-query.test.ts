import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AuditInputError, assertKnownModel, knownVersions, parseModel, parseTime } from './audit-query.js';
import { shortfallNote } from './scope.js';

const now = Date.UTC(2026, 10, 27, 12, 0, 0);
const refused = (text: string, why: RegExp) =>
  assert.throws(
    () => parseTime(text, '--since', now),
    (err: unknown) => err instanceof AuditInputError && why.test(err.message) && /^--since /.test(err.message) && /e\.g\. --since 2h/.test(err.message),
    text,
  );

describe('parseModel', () => {
  it('splits at the first colon: names hold none, versions may', () => {
    assert.deepEqual(parseModel('loan-approver:2.5.0'), { name: 'loan-approver', version: '2.5.0' });
    assert.deepEqual(parseModel('registry://models/fraud:eu:3'), { name: 'fraud', version: 'eu:3' });
    assert.throws(() => parseModel('loan-approver'), AuditInputError);
  });
});

describe('parseTime', () => {
  it('reads the documented forms', () => {
    assert.equal(parseTime('2026-11-27T06:00:00Z', '--since', now), Date.UTC(2026, 10, 27, 6));
    assert.equal(parseTime('2026-11-27T06:00:00.250+02:00', '--since', now), Date.UTC(2026, 10, 27, 4, 0, 0, 250));
    assert.equal(parseTime('2026-11-27 06:30', '--since', now), Date.UTC(2026, 10, 27, 6, 30), 'no offset: UTC, as dlog prints times');
    assert.equal(parseTime('2026-11-27', '--since', now), Date.UTC(2026, 10, 27));
    assert.equal(parseTime('2024-02-29', '--since', now), Date.UTC(2024, 1, 29), 'a leap day exists');
    assert.equal(parseTime('1795759200000', '--since', now), 1_795_759_200_000);
    assert.equal(parseTime('2h', '--since', now), now - 7_200_000);
    assert.equal(parseTime(' 7d ', '--since', now), now - 7 * 86_400_000);
  });

  it('refuses numbers that are not epoch ms, dates that do not exist and times out of range, naming the option', () => {
    refused('0', /is not a time; got "0"/);
    refused('-5', /is not a time/);
    refused('1700000000', /is not a time/); // epoch seconds
    refused('2026-02-30', /day that does not exist \(2026-02 has 28 days\)/);
    refused('2025-02-29', /2025-02 has 28 days/);
    refused('2026-13-01', /no month 13/);
    refused('2026-11-27T24:00:00Z', /time of day that does not exist/);
    refused('99999999999999999', /outside the times dlog can query/);
    refused('99999999w', /outside the times dlog can query/);
    refused('yesterday', /is not a time/);
    refused('Nov 27 2026', /is not a time/);
  });
});

describe('unknown model versions', () => {
  // The engine orders versions as text, so 1.10.0 comes before 1.9.0.
  const q = async (sql: string) =>
    sql.includes('decision_counts')
      ? []
      : [
          { model: 'loan', version: '1.10.0', decisions: 5, first: 'a', last: 'b' },
          { model: 'loan', version: '1.9.0', decisions: 7, first: 'a', last: 'b' },
          { model: 'rec', version: '10', decisions: 1, first: 'a', last: 'b' },
          { model: 'rec', version: '9', decisions: 1, first: 'a', last: 'b' },
        ];

  it('lists versions as people read them and suggests the newest', async () => {
    assert.deepEqual((await knownVersions(q)).map((v) => `${v.model}:${v.version}`), ['loan:1.9.0', 'loan:1.10.0', 'rec:9', 'rec:10']);
    await assert.rejects(assertKnownModel(q, { name: 'loan', version: 'nope' }, 'scope'), (err: unknown) => err instanceof AuditInputError && /--model loan:1\.10\.0$/.test(err.message));
    await assert.rejects(assertKnownModel(q, { name: 'other', version: '1' }, 'scope'), (err: unknown) => err instanceof AuditInputError && /--model loan:1\.10\.0$/.test(err.message));
  });
});

describe('export and remediation shortfall', () => {
  it('blames sampling only when the counts cover the window itself', () => {
    assert.equal(shortfallNote({ exact: 10, exactNote: null }, 10), '');
    assert.equal(shortfallNote({ exact: null, exactNote: 'confidence is not counted' }, 3), '');
    assert.equal(shortfallNote({ exact: 10, exactNote: null }, 4), '6 more were sampled out: counted, not stored');
    assert.match(shortfallNote({ exact: 6, exactNote: 'exact counts are per minute: the window is widened to whole minutes' }, 4), /^2 more are counted for the whole minutes around the window: sampled out .*, or outside --since\/--until$/);
  });
});
