/**
 * Decides whether analyst SQL is a single read-only statement. Used where no read-only
 * ClickHouse user exists: the embedded engine, whose session settings are shared (a
 * `readonly` setting there would stick for every later write). A server deployment should rely
 * on its read-only analyst user as well.
 */
export class ReadOnlySqlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReadOnlySqlError';
  }
}

const allowedFirst = new Set(['SELECT', 'WITH', 'SHOW', 'DESCRIBE', 'DESC', 'EXPLAIN', 'EXISTS']);
/** Table functions that reach outside the database: files, network, other servers, processes. */
const deniedCall =
  /\b(file|url|s3|s3Cluster|hdfs|remote|remoteSecure|cluster|mysql|postgresql|mongodb|redis|jdbc|odbc|executable|azureBlobStorage|gcs|sqlite|urlCluster|fileCluster|input)\s*\(/i;

/**
 * The query with string literals, quoted identifiers and comments blanked out, so checks see
 * only SQL. Throws on a `;` followed by anything: one statement at a time.
 */
function sqlOnly(sql: string): string {
  let out = '';
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    if (c === "'" || c === '"' || c === '`') {
      i++;
      while (i < n && sql[i] !== c) i += sql[i] === '\\' ? 2 : 1;
      i++;
      out += ' _ ';
    } else if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
      out += ' ';
    } else if (c === ';') {
      if (sql.slice(i + 1).trim() !== '') throw new ReadOnlySqlError('Only one statement at a time: remove the `;` between statements.');
      i = n;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

export function assertReadOnlySql(sql: string): void {
  const clean = sqlOnly(sql);
  const first = /^\s*\(*\s*([A-Za-z]+)/.exec(clean)?.[1]?.toUpperCase();
  if (!first) throw new ReadOnlySqlError('Empty query: try `SELECT count() FROM v_decisions`.');
  if (!allowedFirst.has(first)) {
    throw new ReadOnlySqlError(
      `Only reads are allowed here (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN); this query starts with ${first}. Decisions are append-only: a remediation is a new event.`,
    );
  }
  const call = deniedCall.exec(clean);
  if (call) throw new ReadOnlySqlError(`${call[1]}() reaches outside the database and is not allowed in analyst queries.`);
  if (/\bINTO\s+OUTFILE\b/i.test(clean)) throw new ReadOnlySqlError('INTO OUTFILE writes files and is not allowed in analyst queries.');
  if (/\bSETTINGS\b/i.test(clean)) throw new ReadOnlySqlError('SETTINGS is not allowed in analyst queries: the embedded engine shares one session.');
}
