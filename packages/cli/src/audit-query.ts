import type { Config } from '@dlog/config';
import { maxResultBytes, maxResultRows, type QueryResponse, type Store } from '@dlog/store';
import { readOnlyQuery } from './query-command.js';
import { compareVersions } from '@dlog/contracts';

/**
 * What the audit commands (trace, scope, diff, lineage, deploy, remediate) share: one way to run
 * a bound read query, model references, time options, and the error type for user mistakes.
 * The commands are query builders and formatters over `AuditQuery`, so tests run them on the
 * pipeline's own store and the CLI runs them through `readOnlyQuery`.
 */

export type Row = Record<string, unknown>;
export type AuditQuery = (sql: string, params?: Record<string, unknown>) => Promise<Row[]>;

/** A mistake of the person typing: printed as is, with what exists and what to type. */
export class AuditInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditInputError';
  }
}

/**
 * The query path cut an answer at its limit (`maxResultRows` rows or `maxResultBytes` of JSON).
 * An audit command never uses such an answer: a count summed from it, or an export or
 * remediation paged through it, would be short with nothing saying so.
 */
export class TruncatedAnswerError extends Error {
  constructor(readonly rowsReceived: number) {
    super(
      `An audit query's answer passed the query endpoint's limit (${maxResultRows.toLocaleString('en-US')} rows or ${maxResultBytes / 1024 / 1024} MiB) ` +
        `and was cut after ${rowsReceived} rows; dlog does not use a cut answer. Ask for less (a time window with --since/--until, an endpoint, a filter) and run it again.`,
    );
    this.name = 'TruncatedAnswerError';
  }
}

/** Audit queries over the store itself (tests, tools that own it): nothing is cut. */
export function storeQuery(store: Store): AuditQuery {
  return async (sql, params = {}) => {
    const rs = await store.client.query({ query: sql, query_params: params, format: 'JSONEachRow' });
    return (await rs.json()) as Row[];
  };
}

/** Audit queries over a query path that cuts long answers (`readOnlyQuery`, `runReadOnlyQuery`): a cut answer throws. */
export function wholeAnswers(run: (sql: string, params: Record<string, unknown>) => Promise<QueryResponse>): AuditQuery {
  return async (sql, params = {}) => {
    const answer = await run(sql, params);
    if (answer.truncated) throw new TruncatedAnswerError(answer.rows.length);
    return answer.rows;
  };
}

export function configQuery(config: Config): AuditQuery {
  return wholeAnswers((sql, params) => readOnlyQuery(config, sql, params));
}

export interface ModelId {
  name: string;
  version: string;
}

export const modelRef = (m: ModelId) => `registry://models/${m.name}:${m.version}`;
export const modelLabel = (m: ModelId) => `${m.name}:${m.version}`;

/** `name:version` or `registry://models/name:version`. */
export function parseModel(text: string, option = '--model'): ModelId {
  const s = text.trim().replace(/^registry:\/\/models\//, '');
  // At the first colon: a model's name cannot hold one (the registry, SDK and gate refuse it), a
  // version may (`fraud:eu:3` is model fraud, version eu:3).
  const i = s.indexOf(':');
  const name = s.slice(0, i);
  const version = s.slice(i + 1);
  if (i <= 0 || version === '' || /\s/.test(s)) {
    throw new AuditInputError(`${option} takes name:version (got ${JSON.stringify(text)}), e.g. ${option} loan-approver:2.5.0. \`dlog scope --model <name>:?\` lists the versions.`);
  }
  return { name, version };
}

const timeForms = 'ISO (2026-11-27T06:00:00Z), a date (2026-11-27), epoch ms (1795759200000), or an age (30m, 2h, 7d)';
/** What ClickHouse's DateTime64 holds and our times can be: 1970 up to the end of 2299. */
const earliest = 0;
const latest = Date.UTC(2300, 0, 1) - 1;
const isoTime = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * The documented forms only: ISO time (UTC when no offset is given, as every time dlog prints),
 * a date (its UTC midnight), epoch milliseconds (12 digits or more, so a number of seconds or a
 * stray `0` is not read as 1970), or an age (`2h`, `30m`, `7d` ago). The date must exist
 * (2026-02-30 is refused, not rolled to March) and lie between 1970 and 2299.
 */
export function parseTime(text: string, option: string, now = Date.now()): number {
  const s = text.trim();
  const wrong = (why: string) => new AuditInputError(`${option} ${why}; got ${JSON.stringify(text)}. It takes a time: ${timeForms}, e.g. ${option} 2h.`);
  let t: number;
  const rel = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(s);
  const iso = isoTime.exec(s);
  if (rel) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[rel[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    t = now - Number(rel[1]) * unit;
  } else if (/^\d{12,}$/.test(s)) {
    t = Number(s);
  } else if (iso) {
    const [, y, mo, d, h = '0', mi = '0', sec = '0', frac = '', zone = 'Z'] = iso;
    const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, sec].map(Number) as [number, number, number, number, number, number];
    const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
    if (month < 1 || month > 12) throw wrong(`has no month ${month}`);
    if (day < 1 || day > daysInMonth) throw wrong(`names a day that does not exist (${y}-${mo} has ${daysInMonth} days)`);
    if (hour > 23 || minute > 59 || second > 59) throw wrong('has a time of day that does not exist');
    let offsetMin = 0;
    if (zone.toUpperCase() !== 'Z') {
      const z = /^([+-])(\d{2}):?(\d{2})$/.exec(zone)!;
      if (Number(z[2]) > 14 || Number(z[3]) > 59) throw wrong('has an offset that does not exist');
      offsetMin = (z[1] === '-' ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3]));
    }
    const utc = new Date(0);
    utc.setUTCFullYear(year, month - 1, day);
    utc.setUTCHours(hour, minute, second, Math.floor(Number(`0${frac || '.0'}`) * 1000));
    t = utc.getTime() - offsetMin * 60_000;
  } else {
    throw wrong('is not a time');
  }
  if (!Number.isFinite(t) || t < earliest || t > latest) throw wrong('is outside the times dlog can query (1970-01-01 to 2299-12-31)');
  return t;
}

/** The message for a window that ends before it starts. */
export function sinceAfterUntil(since: string, until: string): string {
  return `--since (${since}) must be before --until (${until}); swap them, e.g. --since ${until} --until ${since}, or leave out --until to mean now.`;
}

export interface KnownVersion {
  model: string;
  version: string;
  decisions: number;
  first: string;
  last: string;
}

/** Versions that made decisions (exact counts), for "unknown version" messages. */
export async function knownVersions(q: AuditQuery, name?: string): Promise<KnownVersion[]> {
  const rows = await q(
    `SELECT model_name AS model, model_version AS version, sum(total) AS decisions, toString(min(minute)) AS first, toString(max(minute)) AS last
     FROM v_decision_totals ${name ? 'WHERE model_name = {name:String}' : ''}
     GROUP BY model_name, model_version ORDER BY model_name, model_version`,
    name ? { name } : {},
  );
  return rows
    .map((r) => ({ model: String(r.model), version: String(r.version), decisions: Number(r.decisions), first: String(r.first), last: String(r.last) }))
    // As people read versions (2.10.0 after 2.9.1): the last listed is the newest, the one suggested.
    .sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : compareVersions(a.version, b.version)));
}

/** How an "unknown version" message names the mistake and what to type instead. */
export interface UnknownModelHint {
  /** The option that named the version (`--model` unless said). */
  option?: string;
  /**
   * The whole command to suggest for a version that exists. The default, `dlog <command> --model
   * <version>`, runs only where --model is all the command needs: `dlog diff` needs --vs too.
   */
  suggest?: (m: ModelId) => string;
  /** Versions never to suggest: diff refuses --vs naming --model's own version. */
  exclude?: ModelId[];
}

/** Throws the "unknown version" message unless the version made decisions (or, with `registered`, is in the registry). */
export async function assertKnownModel(q: AuditQuery, m: ModelId, command: string, opts: { registered?: boolean } & UnknownModelHint = {}): Promise<void> {
  // The happy path reads one granule of the counts (model and version lead their sorting key);
  // listing every version scans all the counts and is only worth it for the error message.
  const hit = await q('SELECT 1 AS ok FROM decision_counts WHERE model_name = {name:String} AND model_version = {version:String} LIMIT 1', { name: m.name, version: m.version });
  if (hit.length > 0) return;
  const all = await knownVersions(q);
  if (all.some((v) => v.model === m.name && v.version === m.version)) return;
  if (opts.registered) {
    const reg = await q(`SELECT count() AS n FROM v_artifacts WHERE kind = 'model' AND ref = {ref:String}`, { ref: modelRef(m) });
    if (Number(reg[0]?.n ?? 0) > 0) return;
  }
  const option = opts.option ?? '--model';
  // Which option is wrong, when a command takes more than one version.
  const said = opts.option ? `${opts.option}: ` : '';
  const suggest = opts.suggest ?? ((v: ModelId) => `dlog ${command} ${option} ${modelLabel(v)}`);
  const allowed = (v: KnownVersion) => !(opts.exclude ?? []).some((x) => x.name === v.model && x.version === v.version);
  const typeEg = (v: KnownVersion | undefined) => (v ? [`Type e.g. ${suggest({ name: v.model, version: v.version })}`] : []);
  const same = all.filter((v) => v.model === m.name);
  const lines: string[] = [];
  if (same.length > 0) {
    lines.push(`${said}${m.name} has no version ${JSON.stringify(m.version)} with decisions. Versions that exist:`);
    for (const v of same) lines.push(`  ${v.model}:${v.version}  ${v.decisions} decisions  ${v.first} .. ${v.last}`);
    lines.push(...typeEg(same.filter(allowed).at(-1)));
  } else if (all.length > 0) {
    lines.push(`${said}No model named ${JSON.stringify(m.name)} made decisions. Models and versions that exist:`);
    for (const v of all) lines.push(`  ${v.model}:${v.version}  ${v.decisions} decisions`);
    // The newest version of the first model listed that may be suggested.
    const candidates = all.filter(allowed);
    lines.push(...typeEg(candidates.filter((v) => v.model === candidates[0]?.model).at(-1)));
  } else {
    lines.push('The store holds no decisions yet: start the pipeline (dlog up) and send some (dlog simulate).');
  }
  throw new AuditInputError(lines.join('\n'));
}

/** Milliseconds → 'YYYY-MM-DD HH:MM:SS.mmm' UTC, how ClickHouse reads DateTime64(3) parameters. */
export function chTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

/** ClickHouse DateTime64 text (UTC) → ms. */
export function fromChTime(v: unknown): number {
  const s = String(v);
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s.replace(' ', 'T')}Z`);
}

export const num = (v: unknown): number => (v === null || v === undefined ? NaN : Number(v));
export const fmt = (v: number, digits = 3): string => (Number.isFinite(v) ? String(Number(v.toFixed(digits))) : '-');
