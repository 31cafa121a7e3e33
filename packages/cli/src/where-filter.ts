/**
 * The `--where` filter of `dlog scope` / `dlog remediate`: a few comparisons joined by `and`,
 * over an allow-list of decision columns, compiled to SQL whose values are all bound parameters
 * ({w0:Float64} ...). Field names come from the allow-list, never from the user's text, so
 * nothing the user types reaches the SQL.
 */

export class FilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterError';
  }
}

type FieldType = 'String' | 'Float64' | 'Int64' | 'Bool';

/** Column → type and the SQL expression to compare (Enum and Nullable columns read as plain values). */
const fields: Record<string, { type: FieldType; sql: string }> = {
  decision: { type: 'String', sql: 'decision' },
  confidence: { type: 'Float64', sql: 'confidence' },
  endpoint: { type: 'String', sql: 'endpoint' },
  decision_type: { type: 'String', sql: 'decision_type' },
  tenant: { type: 'String', sql: 'tenant' },
  tier: { type: 'String', sql: 'toString(tier)' },
  event_id: { type: 'String', sql: 'event_id' },
  request_id: { type: 'String', sql: 'request_id' },
  trace_id: { type: 'String', sql: 'trace_id' },
  input_hash: { type: 'String', sql: 'input_hash' },
  tool_name: { type: 'String', sql: 'tool_name' },
  step: { type: 'Int64', sql: 'step' },
  model_digest: { type: 'String', sql: 'model_digest' },
  image_ref: { type: 'String', sql: 'image_ref' },
  image_digest: { type: 'String', sql: 'image_digest' },
  config_ref: { type: 'String', sql: 'config_ref' },
  preprocessing_ref: { type: 'String', sql: 'preprocessing_ref' },
  environment_digest: { type: 'String', sql: 'environment_digest' },
  policy_version: { type: 'String', sql: 'policy_version' },
  temperature: { type: 'Float64', sql: 'temperature' },
  top_p: { type: 'Float64', sql: 'top_p' },
  max_tokens: { type: 'Int64', sql: 'max_tokens' },
  sample_rate: { type: 'Float64', sql: 'sample_rate' },
  resolved: { type: 'Bool', sql: 'resolved' },
};

/** Map columns reachable as `map.key`: the key is bound as a parameter too. */
const maps: Record<string, FieldType> = { scores: 'Float64', thresholds: 'Float64', input_fields: 'String', attributes: 'String' };

/** Columns whose filters the exact counts (decision_counts) can also apply. */
export const countColumns = new Set(['decision', 'endpoint', 'decision_type', 'tier']);

const ops = ['<=', '>=', '!=', '=', '<', '>', '~'] as const;
type Op = (typeof ops)[number];

export const filterGrammar = [
  'filter     := condition ( "and" condition )*',
  'condition  := field op value',
  'op         := =  !=  <  <=  >  >=  ~ (contains, text fields)',
  "value      := number | word | 'quoted text' | \"quoted text\"",
  `field      := ${Object.keys(fields).join(' | ')}`,
  `              | ${Object.keys(maps).map((m) => `${m}.<key>`).join(' | ')}   (.* : any key; only decisions that have the key match)`,
  'examples   : decision=declined and confidence<0.7',
  "             endpoint=loan-api and scores.approved>=0.5 and tier!=minimal",
].join('\n');

export interface CompiledFilter {
  /** SQL boolean expression; '1' when there is no filter. */
  sql: string;
  params: Record<string, unknown>;
  /** Columns the filter reads (map columns as `map.key`). */
  columns: string[];
  /** The conditions, parsed (for messages and remediation records). */
  conditions: { field: string; op: Op; value: string }[];
}

function fail(what: string): never {
  throw new FilterError(`${what}\n\nThe filter grammar:\n${filterGrammar}`);
}

/** Splits on ` and ` outside quotes; returns the raw conditions. */
function splitConditions(text: string): string[] {
  const parts: string[] = [];
  let cur = '';
  let quote: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      cur += c;
      if (c === quote) quote = null;
      continue;
    }
    // A quote opens a quoted value only right after an operator: an apostrophe inside a word is text.
    if ((c === "'" || c === '"') && /[=<>~]\s*$/.test(cur)) {
      quote = c;
      cur += c;
      continue;
    }
    const rest = text.slice(i);
    const m = /^\s+and\s+/i.exec(rest);
    if (m && cur.trim() !== '') {
      parts.push(cur);
      cur = '';
      i += m[0].length - 1;
      continue;
    }
    cur += c;
  }
  if (quote) fail(`Unclosed quote ${quote} in ${JSON.stringify(text)}.`);
  parts.push(cur);
  return parts.map((p) => p.trim());
}

/** Prefix `p` keeps the parameter names apart from the caller's own. */
export function compileWhere(text: string | undefined, p = 'w'): CompiledFilter {
  if (text === undefined || text.trim() === '') return { sql: '1', params: {}, columns: [], conditions: [] };
  if (/^\s*and\b|\band\s*$/i.test(text)) fail(`Empty condition in ${JSON.stringify(text)}: \`and\` needs a condition on each side.`);
  const params: Record<string, unknown> = {};
  const sql: string[] = [];
  const columns: string[] = [];
  const conditions: CompiledFilter['conditions'] = [];
  let n = 0;
  for (const part of splitConditions(text)) {
    if (part === '') fail(`Empty condition in ${JSON.stringify(text)}: \`and\` needs a condition on each side.`);
    if (/\s+or\s+/i.test(part.replace(/'[^']*'|"[^"]*"/g, ''))) fail(`\`or\` is not supported (in ${JSON.stringify(part)}): run the scope once per alternative.`);
    // A map key may itself be a dotted path (the gate names nested input fields so, e.g.
    // input_fields.applicant.customer_id) or hold an array index: everything after the first dot.
    // `map.*` is any key of the map: input_fields.*=<token> finds a customer wherever the
    // input named them (applicant.email, applicants[3].email ...).
    const m = /^([A-Za-z_][A-Za-z0-9_]*(?:\.(?:\*|[A-Za-z0-9_:.\-[\]@]+))?)\s*(<=|>=|!=|=|<|>|~)\s*(.*)$/.exec(part);
    if (!m) {
      const opLike = /[<>=!~]+/.exec(part);
      if (opLike && !(ops as readonly string[]).includes(opLike[0])) fail(`Unknown operator ${JSON.stringify(opLike[0])} in ${JSON.stringify(part)}.`);
      fail(`Cannot read the condition ${JSON.stringify(part)}: write field, operator, value (e.g. confidence<0.7).`);
    }
    const [, name, op, rawValue] = m as unknown as [string, string, Op, string];
    let value = rawValue.trim();
    if (value === '') fail(`No value after ${JSON.stringify(`${name}${op}`)} in ${JSON.stringify(part)}.`);
    if (/^(<|>|=|!|~)/.test(value)) fail(`Unknown operator ${JSON.stringify(op + value.match(/^[<>=!~]+/)![0])} in ${JSON.stringify(part)}.`);
    const quoted = /^'(.*)'$|^"(.*)"$/s.exec(value);
    if (quoted) value = quoted[1] ?? quoted[2] ?? '';
    else if (/\s/.test(value)) fail(`The value ${JSON.stringify(value)} in ${JSON.stringify(part)} has spaces: quote it, e.g. ${name}${op}'${value}'.`);

    let type: FieldType;
    let expr: string;
    let anyKeyOf: string | undefined;
    /** `map` has the key: a missing key reads as 0 or '', so `scores.approved<0.5` took decisions with no such score. */
    let hasKey: string | undefined;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const map = name.slice(0, dot);
      const key = name.slice(dot + 1);
      // Own keys only: `constructor` or `valueOf` found the object's built-ins and went into the SQL.
      const mt = Object.hasOwn(maps, map) ? maps[map] : undefined;
      if (!mt) fail(`Unknown field ${JSON.stringify(name)}: only ${Object.keys(maps).join(', ')} take a .key.`);
      type = mt;
      if (key === '*') {
        anyKeyOf = map;
        expr = 'x';
      } else {
        const kp = `${p}${n++}`;
        params[kp] = key;
        expr = `${map}[{${kp}:String}]`;
        hasKey = `mapContains(${map}, {${kp}:String})`;
      }
    } else {
      const f = Object.hasOwn(fields, name) ? fields[name] : undefined;
      if (!f) {
        const near = Object.keys(fields).filter((k) => k.includes(name) || name.includes(k));
        fail(`Unknown field ${JSON.stringify(name)}${near.length ? ` (did you mean ${near.join(' or ')}?)` : ''}.`);
      }
      type = f.type;
      expr = f.sql;
    }
    if (['<', '<=', '>', '>='].includes(op) && type !== 'Float64' && type !== 'Int64') fail(`${op} compares numbers; ${name} is text (use = or != or ~).`);
    if (op === '~' && type !== 'String') fail(`~ (contains) is for text fields; ${name} is a number (use = < > ...).`);
    const vp = `${p}${n++}`;
    if (type === 'Float64' || type === 'Int64') {
      const num = Number(value);
      if (value === '' || !Number.isFinite(num)) fail(`${name} is a number, but ${JSON.stringify(value)} is not (in ${JSON.stringify(part)}).`);
      if (type === 'Int64' && !Number.isInteger(num)) fail(`${name} is a whole number, but ${JSON.stringify(value)} is not.`);
      params[vp] = num;
    } else if (type === 'Bool') {
      if (!['true', 'false', '1', '0'].includes(value.toLowerCase())) fail(`${name} is true or false (got ${JSON.stringify(value)}).`);
      params[vp] = ['true', '1'].includes(value.toLowerCase());
    } else {
      params[vp] = value;
    }
    const bound = `{${vp}:${type}}`;
    const test = op === '~' ? `position(${expr}, ${bound}) > 0` : `${expr} ${op === '!=' && anyKeyOf ? '=' : op} ${bound}`;
    // Any key: some value passes; for != no value is equal.
    if (anyKeyOf) sql.push(`${op === '!=' ? 'NOT ' : ''}arrayExists(x -> ${test}, mapValues(${anyKeyOf}))`);
    else sql.push(hasKey ? `${hasKey} AND ${test}` : test);
    columns.push(name);
    conditions.push({ field: name, op, value });
  }
  return { sql: sql.map((s) => `(${s})`).join(' AND '), params, columns, conditions };
}
