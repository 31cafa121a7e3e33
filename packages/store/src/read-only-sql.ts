/**
 * Decides whether analyst SQL is a single read-only statement, and prepares it to run with the
 * engine's own read-only setting and a row limit. The check reads the query with the same token
 * rules as ClickHouse's lexer (src/Parsers/Lexer.cpp): a tokenizer that disagrees with the engine
 * about where a string ends lets the engine run text the check never saw.
 */
export class ReadOnlySqlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReadOnlySqlError';
  }
}

type TokenKind = 'space' | 'comment' | 'string' | 'quoted' | 'word' | 'number' | 'punct';

interface Token {
  kind: TokenKind;
  /** Source text of the token. */
  text: string;
  /** `quoted`: the identifier with its quotes and escapes removed. */
  name?: string;
}

const allowedFirst = new Set(['SELECT', 'WITH', 'SHOW', 'DESCRIBE', 'DESC', 'EXPLAIN', 'EXISTS']);

/**
 * Functions that reach outside the database (files, network, other servers, processes, external
 * dictionaries), compared case-insensitively. The test checks every table function the embedded
 * engine knows is either here or in its short list of local ones, so an engine upgrade that adds
 * one is noticed.
 */
export const deniedFunctions: ReadonlySet<string> = new Set(
  [
    'file', 'fileCluster', 'filesystem', 'url', 'urlCluster', 'input',
    's3', 's3Cluster', 'gcs', 'oss', 'cosn', 'hdfs', 'hdfsCluster', 'azureBlobStorage', 'azureBlobStorageCluster',
    'remote', 'remoteSecure', 'cluster', 'clusterAllReplicas', 'eval',
    'mysql', 'postgresql', 'mongodb', 'redis', 'sqlite', 'jdbc', 'odbc', 'ytsaurus', 'arrowFlight', 'arrowstream',
    'executable', 'executablePool', 'dictionary', 'dictGet', 'dictGetOrDefault', 'dictGetOrNull', 'dictHas',
    'deltaLake', 'deltaLakeS3', 'deltaLakeAzure', 'deltaLakeLocal', 'deltaLakeCluster', 'deltaLakeS3Cluster', 'deltaLakeAzureCluster',
    'hudi', 'hudiCluster', 'iceberg', 'icebergS3', 'icebergAzure', 'icebergHDFS', 'icebergLocal', 'icebergCluster',
    'icebergS3Cluster', 'icebergAzureCluster', 'icebergHDFSCluster', 'icebergLocalCluster',
    'paimon', 'paimonS3', 'paimonAzure', 'paimonHDFS', 'paimonLocal', 'paimonCluster', 'paimonS3Cluster', 'paimonAzureCluster', 'paimonHDFSCluster',
    'prometheusQuery', 'prometheusQueryRange', 'timeSeriesData', 'timeSeriesMetrics', 'timeSeriesSamples', 'timeSeriesSelector', 'timeSeriesTags',
    'viewExplain',
  ].map((f) => f.toLowerCase()),
);

const isWordChar = (c: string | undefined) => c !== undefined && /[A-Za-z0-9_]/.test(c);
/**
 * ClickHouse skips some Unicode spaces between tokens; any other non-ASCII character outside quotes
 * is not valid SQL there. Counting them all as space errs on the side of seeing `file (` as a call.
 */
const isSpace = (c: string | undefined) => c !== undefined && (/\s/.test(c) || c > '\x7f');

/** The escapes ClickHouse undoes inside quotes (ReadHelpers.h), enough to compare names. */
function unescape(body: string, quote: string): string {
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === quote && body[i + 1] === quote) {
      out += quote;
      i++;
    } else if (c === '\\' && i + 1 < body.length) {
      const e = body[++i]!;
      if ((e === 'x' || e === 'X') && /^[0-9A-Fa-f]{2}$/.test(body.slice(i + 1, i + 3))) {
        out += String.fromCharCode(parseInt(body.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        out += ({ b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', '0': '\0', a: '\x07', v: '\v' } as Record<string, string>)[e] ?? e;
      }
    } else out += c;
  }
  return out;
}

/** Splits SQL into tokens the way ClickHouse does; throws on what the engine would not close. */
function tokenize(sql: string): Token[] {
  const tokens: Token[] = [];
  const n = sql.length;
  let i = 0;
  const unclosed = (what: string) =>
    new ReadOnlySqlError(`The query has an unclosed ${what} starting at ${JSON.stringify(sql.slice(i, i + 20))}: close it, or remove it.`);
  while (i < n) {
    const start = i;
    const c = sql[i]!;
    const push = (kind: TokenKind, end: number, name?: string) => {
      tokens.push(name === undefined ? { kind, text: sql.slice(start, end) } : { kind, text: sql.slice(start, end), name });
      i = end;
    };
    if (c === '\u2018' || c === '\u201C') {
      // ‘string’ and “identifier”: no escapes, they end at the first closing quote.
      const close = sql.indexOf(c === '\u2018' ? '\u2019' : '\u201D', i + 1);
      if (close < 0) throw unclosed(c === '\u2018' ? 'string' : 'identifier');
      push(c === '\u2018' ? 'string' : 'quoted', close + 1, c === '\u2018' ? undefined : sql.slice(i + 1, close));
    } else if (isSpace(c)) {
      let j = i + 1;
      while (j < n && isSpace(sql[j]) && sql[j] !== '\u2018' && sql[j] !== '\u201C') j++;
      push('space', j);
    } else if (c === "'" || c === '"' || c === '`') {
      let j = i + 1;
      for (;;) {
        if (j >= n) throw unclosed(c === "'" ? 'string' : `${c} identifier`);
        if (sql[j] === '\\') {
          if (j + 1 >= n) throw unclosed(c === "'" ? 'string' : `${c} identifier`);
          j += 2;
        } else if (sql[j] === c) {
          if (sql[j + 1] === c) j += 2;
          else break;
        } else j++;
      }
      push(c === "'" ? 'string' : 'quoted', j + 1, c === "'" ? undefined : unescape(sql.slice(i + 1, j), c));
    } else if ((c === '-' && sql[i + 1] === '-') || (c === '/' && sql[i + 1] === '/') || (c === '#' && (sql[i + 1] === ' ' || sql[i + 1] === '!'))) {
      const nl = sql.indexOf('\n', i);
      push('comment', nl < 0 ? n : nl);
    } else if (c === '/' && sql[i + 1] === '*') {
      // Nested, as in the SQL standard and ClickHouse.
      let depth = 1;
      let j = i + 2;
      while (depth > 0) {
        if (j + 2 > n) throw unclosed('/* comment');
        if (sql[j] === '/' && sql[j + 1] === '*') {
          depth++;
          j += 2;
        } else if (sql[j] === '*' && sql[j + 1] === '/') {
          depth--;
          j += 2;
        } else j++;
      }
      push('comment', j);
    } else if (c === '$' && heredocEnd(sql, i) !== undefined) {
      push('string', heredocEnd(sql, i)!);
    } else if (/[0-9]/.test(c)) {
      const prev = tokens.findLast(significant);
      const numberEnds = numberEnd(sql, i, prev?.kind === 'punct' && prev.text === '.');
      // A word character right after the number makes the whole run one word (`1abc`), as in the
      // engine (which refuses one with a `.` or a sign inside).
      let j = numberEnds;
      while (j < n && isWordChar(sql[j])) j++;
      push(j > numberEnds ? 'word' : 'number', j);
    } else if (isWordChar(c) || c === '$') {
      let j = i + 1;
      while (j < n && (isWordChar(sql[j]) || sql[j] === '$')) j++;
      push('word', j);
    } else {
      push('punct', i + 1);
    }
  }
  return tokens;
}

const isDigitOf = (c: string | undefined, hex: boolean) => c !== undefined && (hex ? /[0-9A-Fa-f]/ : /[0-9]/).test(c);

/**
 * Where a number starting at `i` ends, as the engine's lexer has it: `0x`/`0b` prefixes, `_`
 * only between digits, a fraction, and an exponent whose sign follows `e` in a decimal number and
 * `p` in a hex one only (`0x1e+file` is the number `0x1e`, then `+`, then `file`). Right after a
 * `.` only digits (tuple access, `t.1.2`).
 */
function numberEnd(sql: string, i: number, afterDot: boolean): number {
  const n = sql.length;
  let j = i;
  const digits = (hex: boolean, startOfBlock: boolean) => {
    let start = startOfBlock;
    while (j < n && (isDigitOf(sql[j], hex) || (sql[j] === '_' && !start && isDigitOf(sql[j + 1], hex)))) {
      j++;
      start = false;
    }
  };
  if (afterDot) {
    j++;
    digits(false, false);
  } else {
    let hex = false;
    let startOfBlock = false;
    const p1 = sql[j + 1];
    if (j + 2 < n && sql[j] === '0' && (p1 === 'x' || p1 === 'X' || p1 === 'b' || p1 === 'B')) {
      const valid = p1 === 'x' || p1 === 'X' ? isDigitOf(sql[j + 2], true) : sql[j + 2] === '0' || sql[j + 2] === '1';
      if (valid) {
        hex = p1 === 'x' || p1 === 'X';
        j += 2;
        startOfBlock = true;
      } else j++;
    } else j++;
    digits(hex, startOfBlock);
    if (sql[j] === '.') {
      j++;
      digits(hex, true);
    }
    if (j + 1 < n && (hex ? sql[j] === 'p' || sql[j] === 'P' : sql[j] === 'e' || sql[j] === 'E')) {
      j++;
      if (j + 1 < n && (sql[j] === '-' || sql[j] === '+')) j++;
      digits(false, true);
    }
  }
  return j;
}

/**
 * The name a token would call if a `(` followed it: a word's or a quoted identifier's own, else
 * the last run of word characters in it. The second reading is a guard of its own: should the
 * tokenizer above ever end a token later than the engine does, the word the engine sees last is
 * still the one compared with the denied functions.
 */
function calledNames(t: Token): string[] {
  if (t.kind === 'quoted') return [t.name!];
  if (t.kind !== 'word' && t.kind !== 'number') return [];
  const last = /[A-Za-z_$][A-Za-z0-9_$]*$/.exec(t.text)?.[0];
  return last === undefined || last === t.text ? [t.text] : [t.text, last];
}

/**
 * ClickHouse heredocs: at a `$`, the text up to the next `$` is the delimiter (`$$`, `$tag$`, any
 * text at all), and the string runs to the next copy of it. No copy: not a heredoc.
 */
function heredocEnd(sql: string, i: number): number | undefined {
  const nameEnd = sql.indexOf('$', i + 1);
  if (nameEnd < 0) return undefined;
  const delimiter = sql.slice(i, nameEnd + 1);
  const close = sql.indexOf(delimiter, nameEnd + 1);
  return close < 0 ? undefined : close + delimiter.length;
}

const significant = (t: Token) => t.kind !== 'space' && t.kind !== 'comment';

export interface CheckedSql {
  /** The statement without a trailing `;` and what follows it (only whitespace and comments). */
  statement: string;
  /** The first word, upper case: SELECT, WITH, SHOW... */
  verb: string;
  /** A UNION, EXCEPT or INTERSECT outside parentheses: a setting-level limit would apply per branch. */
  setOperation: boolean;
}

/** Checks analyst SQL; returns the statement to run. Throws ReadOnlySqlError saying what to change. */
export function checkReadOnlySql(sql: string): CheckedSql {
  const tokens = tokenize(sql);
  const sig = tokens.map((t, index) => ({ t, index })).filter(({ t }) => significant(t));
  let end = tokens.length;
  const semi = sig.findIndex(({ t }) => t.kind === 'punct' && t.text === ';');
  if (semi >= 0) {
    if (semi < sig.length - 1) throw new ReadOnlySqlError('Only one statement at a time: remove the `;` between statements.');
    end = sig[semi]!.index;
  }
  const words = sig.slice(0, semi >= 0 ? semi : sig.length).map(({ t }) => t);
  const first = words.find((t) => !(t.kind === 'punct' && t.text === '('));
  if (!first) throw new ReadOnlySqlError('Empty query: try `SELECT count() FROM v_decisions`.');
  const verb = first.kind === 'word' ? first.text.toUpperCase() : first.text;
  if (!allowedFirst.has(verb)) {
    throw new ReadOnlySqlError(
      `Only reads are allowed here (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN); this query starts with ${verb}. Decisions are append-only: a remediation is a new event.`,
    );
  }
  let depth = 0;
  let setOperation = false;
  for (const [k, t] of words.entries()) {
    const next = words[k + 1];
    const upper = t.kind === 'word' ? t.text.toUpperCase() : '';
    if (t.kind === 'punct' && t.text === '(') depth++;
    if (t.kind === 'punct' && t.text === ')') depth--;
    if (depth === 0 && (upper === 'UNION' || upper === 'EXCEPT' || upper === 'INTERSECT')) setOperation = true;
    if (next?.kind === 'punct' && next.text === '(') {
      const denied = calledNames(t).find((name) => deniedFunctions.has(name.toLowerCase()));
      if (denied !== undefined) throw new ReadOnlySqlError(`${denied}() reaches outside the database and is not allowed in analyst queries.`);
    }
    if (upper === 'OUTFILE') throw new ReadOnlySqlError('INTO OUTFILE writes files and is not allowed in analyst queries: use --format csv and redirect the output.');
    if (upper === 'SETTINGS') throw new ReadOnlySqlError('SETTINGS is not allowed in analyst queries: dlog sets the read-only mode and the row limit itself.');
    // `... FORMAT CSV` at the end: the output format is dlog's to choose (a column or the format()
    // function named format is something else, and goes on).
    const prev = words[k - 1];
    const prevUpper = prev?.kind === 'word' ? prev.text.toUpperCase() : '';
    if (
      depth === 0 &&
      upper === 'FORMAT' &&
      (next?.kind === 'word' || next?.kind === 'quoted') &&
      words[k + 2] === undefined &&
      // `ORDER BY format DESC`, `GROUP BY x, format`: a column, not a clause.
      prevUpper !== 'BY' &&
      !(prev?.kind === 'punct' && prev.text === ',') &&
      !['ASC', 'DESC', 'NULLS', 'COLLATE', 'WITH'].includes(next.text.toUpperCase())
    ) {
      throw new ReadOnlySqlError(`Leave FORMAT ${next.text} out of the SQL: dlog query chooses the format, with -f table, -f json or -f csv.`);
    }
  }
  return { statement: tokens.slice(0, end).map((t) => t.text).join(''), verb, setOperation };
}

export function assertReadOnlySql(sql: string): void {
  checkReadOnlySql(sql);
}

/**
 * The query to send for analyst SQL: checked, then run under the engine's `readonly` setting and
 * with `limit` capping the rows it returns, so a huge SELECT is cut by the engine rather than
 * after the answering process has held every row. Both go in the query's own SETTINGS clause,
 * which lasts for that query only; a `SET` (or the client's settings, which the embedded
 * connection turns into `SET`) would stay on the embedded engine's one shared session and make the
 * sink's later writes fail. `readonly` is 1 on the embedded engine (1 also refuses table
 * functions that reach outside the database); a server's analyst profile has `readonly = 2`,
 * which refuses any other value, so a server query asks for 2.
 */
export function readOnlyQueryText(sql: string, opts: { readonly: 1 | 2; limit: number; maxSeconds?: number } | 'no settings'): string {
  const checked = checkReadOnlySql(sql);
  // A server user whose profile says readonly = 1 may change no setting at all: the statement goes
  // as it is, and the caller's streaming read enforces the row limit.
  if (opts === 'no settings') return checked.statement;
  if (!Number.isSafeInteger(opts.limit) || opts.limit <= 0) throw new Error(`limit must be a positive integer (got ${opts.limit})`);
  // `limit` caps each branch of a UNION separately; wrapping caps the whole result.
  const body = checked.setOperation ? `SELECT * FROM (\n${checked.statement}\n)` : checked.statement;
  // The newline ends a trailing `--` comment before the clause.
  const time = opts.maxSeconds === undefined ? '' : `, max_execution_time = ${Math.max(1, Math.ceil(opts.maxSeconds))}`;
  return `${body}\nSETTINGS readonly = ${opts.readonly}, limit = ${opts.limit}${time}`;
}
