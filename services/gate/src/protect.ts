import type { DetectorName, FieldRule, PolicyDocument } from './policy.js';
import { foldKey, looksLikeCardNumber, scrubText, type Tokenize } from './detectors.js';
import { compileFieldPath, fieldPathMatches } from './field-path.js';
import type { KeyRing } from './keys.js';

/** Keys that could reach an object's prototype if anything downstream merged the value. */
const forbiddenKeys = new Set(['__proto__', 'constructor', 'prototype']);

export class ForbiddenKeyError extends Error {
  constructor(readonly path: string) {
    super(`forbidden key at ${path}`);
    this.name = 'ForbiddenKeyError';
  }
}

export interface Protected {
  /** The input with every rule and detector applied. */
  value: unknown;
  /** Hashed fields by path: pseudonymous join keys. */
  fields: Record<string, string>;
  /** Whether a field rule (hash, redact, drop) changed anything. */
  ruled: boolean;
}

export interface Protector {
  protectInput(input: unknown): Protected;
  /**
   * Text that may be JSON (full-tier output_json), read as a string in the input is: JSON gets the
   * field rules, JSON lines line by line, anything else the detectors. Null when it looks like
   * JSON the rules cannot walk (cut off, or with a `constructor` key): it is withheld.
   */
  protectJsonText(text: string): string | null;
  /** Free text outside the input (output text, labels). */
  scrub(text: string): string;
  /**
   * An id or a name a producer chose (event, request and trace ids, tenant, endpoint, tool, host):
   * the detectors, except that a bare run of digits is not read as a phone number, and a UUID is
   * left as it is (its groups of hex digits are not personal data).
   */
  scrubId(text: string): string;
  /** A keyed token for a whole value, as the `hash` rule makes for a field named `field`. */
  pseudonym(field: string, value: string): string;
  readonly keyId: string;
}

/**
 * Rules looked up along the path, one node per key: a node holds the rule for the path that leads
 * to it and its children by key. Keys may contain dots or any other character, so paths are never
 * joined into strings to look rules up (`{"a.name": 1}` and `{"a": {"name": 1}}` once shared a
 * cache entry, and whichever came first decided for both). Children are found by the key as
 * written; the forms rules match are made once, when a node is made, and the path is read back
 * through `parent` only then, so a key costs its folding once per distinct path, not per event.
 */
interface RuleNode {
  rule: FieldRule | null;
  parent: RuleNode | undefined;
  /** The key as protective rules match it (foldKey), and as `keep` rules do: lower-cased only. */
  folded: string;
  written: string;
  children: Map<string, RuleNode> | undefined;
}

/** What one walk collects: hashed fields by path, and how many field rules fired. */
interface Context {
  fields: Record<string, string>;
  ruled: number;
}

/** Begins with `{` or `[` and ends with `}` or `]`, whitespace aside: worth a JSON.parse. */
function maybeJson(text: string): boolean {
  const first = text.charCodeAt(0);
  const last = text.charCodeAt(text.length - 1);
  if ((first === 123 && last === 125) || (first === 91 && last === 93)) return true;
  return (first <= 32 || last <= 32) && /^\s*(?:\{[^]*\}|\[[^]*\])\s*$/.test(text);
}

/**
 * Starts as a JSON object or an array of objects, strings or arrays would: such text that does not
 * parse is JSON cut off (tool-call arguments at max_tokens) or JSON lines, not free text. `[1]
 * approved` or `[INST] hello` is free text.
 */
const jsonStart = /^\s*(?:\{\s*"|\[\s*[{["])/;

const uuidShape = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Most nodes kept per protector: beyond it, rules are matched without caching. */
const maxRuleNodes = 50_000;

export function createProtector(pii: PolicyDocument['pii'], keys: KeyRing): Protector {
  // Keys match case-insensitively: `Name` and `EMAIL` are the same field to a person reading it.
  const rules = pii.fields.map((f) => ({ pattern: compileFieldPath(f.path), rule: f.rule as FieldRule }));
  const enabled = new Set<DetectorName>(pii.detectors);
  const kid = keys.active.id;
  const root: RuleNode = { rule: null, parent: undefined, folded: '', written: '', children: undefined };
  let nodes = 0;

  const tokenize: Tokenize = (type, value) => `[${type}:${keys.hmac(type, value).slice(0, 16)}]`;
  const scrub = (text: string) => scrubText(text, enabled, tokenize);
  const scrubId = (text: string) => {
    // Most ids hold nothing any detector could match: no @ (or a non-ASCII lookalike), no
    // escape or percent-encoding, fewer than six digits, nothing shaped like an IP address
    // (`10.0.0.1` has five digits and three dots; an IPv6 two colons). They are answered
    // without the detectors' passes.
    let digits = 0;
    let dots = 0;
    let colons = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c >= 48 && c <= 57) digits++;
      else if (c === 46) dots++;
      else if (c === 58) colons++;
      else if (c === 64 || c === 92 || c >= 0x80 || c === 37 || c === 38) {
        digits = 6;
        break;
      }
    }
    if ((digits < 6 && !(digits >= 4 && dots >= 3) && colons < 2) || uuidShape.test(text)) return text;
    return scrubText(text, enabled, tokenize, true);
  };

  /**
   * The first rule for `node`'s path. Hash, redact and drop match the folded keys, so a key spelled
   * in full-width letters, with a zero-width space or a trailing space, is still `name`. `keep`
   * matches the keys as written: folding is there so that no spelling escapes a rule, and it must
   * not let one (`model_features\u200b`) gain a subtree that is stored unscanned.
   */
  function ruleFor(node: RuleNode): FieldRule | null {
    const folded: string[] = [];
    const written: string[] = [];
    for (let n = node; n.parent !== undefined; n = n.parent) {
      folded.push(n.folded);
      written.push(n.written);
    }
    folded.reverse();
    written.reverse();
    return rules.find((r) => fieldPathMatches(r.pattern, r.rule === 'keep' ? written : folded))?.rule ?? null;
  }

  /** The node of `key` under `parent`. */
  function child(parent: RuleNode, key: string): RuleNode {
    let node = parent.children?.get(key);
    if (node === undefined) {
      node = { rule: null, parent, folded: foldKey(key), written: key.toLowerCase(), children: undefined };
      node.rule = ruleFor(node);
      if (nodes < maxRuleNodes) {
        nodes++;
        (parent.children ??= new Map()).set(key, node);
      }
    }
    return node;
  }

  function hashToken(key: string, value: unknown): string {
    const text = typeof value === 'string' ? value.trim().toLowerCase() : JSON.stringify(value);
    return `hmac:${kid}:${keys.hmac(`field:${key}`, text).slice(0, 32)}`;
  }

  /**
   * A string that holds JSON (a tool call's arguments, a serialised form, full-tier output_json):
   * its fields get the rules too, under the string's own path, where as text only the detectors
   * read it and `{"name": "Jane Doe"}` passed. JSON lines (a tool's results, one per line) are read
   * line by line. Undefined for text that is not JSON, which the caller scrubs as text; null for
   * text that starts as JSON but is none the rules can walk: cut off (at max_tokens, say: its
   * `"name": …` is as plain as in whole JSON, and the detectors do not know names), a line that is
   * not JSON among JSON lines, a `constructor` key, nesting too deep to write out. The caller
   * withholds that whole.
   */
  function jsonText(text: string, node: RuleNode, outPath: string, ctx: Context): string | null | undefined {
    // Most strings start with neither a bracket nor a space: one character decides for them.
    const first = text.charCodeAt(0);
    if (first === 34) return quotedJsonText(text, node, outPath, ctx);
    if (first !== 123 && first !== 91 && !(first <= 32)) return undefined;
    const started = jsonStart.test(text);
    if (!started && !maybeJson(text)) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return started ? jsonLines(text, node, outPath, ctx) : undefined;
    }
    return parsedJsonText(text, parsed, node, outPath, ctx);
  }

  /**
   * A JSON string literal whose content is JSON: tool-call arguments stringified twice
   * (`"{\"name\":\"Jane Doe\"}"`), which as text got no field rules. Its content is read as any
   * string is, so a third layer gets one more read: each layer's content is shorter than it, and
   * a layer's quotes need twice the backslashes of the one inside, so layers are few.
   * Written out again, as a string literal, only when the content changed.
   */
  function quotedJsonText(text: string, node: RuleNode, outPath: string, ctx: Context): string | null | undefined {
    if (text.length < 4 || text.charCodeAt(text.length - 1) !== 34) return undefined;
    let inner: unknown;
    try {
      inner = JSON.parse(text);
    } catch {
      return undefined;
    }
    if (typeof inner !== 'string') return undefined;
    const out = jsonText(inner, node, outPath, ctx);
    if (out === undefined || out === null) return out;
    return out === inner ? scrub(text) : JSON.stringify(out);
  }

  function jsonLines(text: string, node: RuleNode, outPath: string, ctx: Context): string | null {
    const lines = text.split('\n');
    if (lines.length < 2) return null;
    const out: string[] = [];
    for (const line of lines) {
      if (line.trim() === '') {
        out.push(line);
        continue;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return null;
      }
      const p = parsedJsonText(line, parsed, node, outPath, ctx);
      if (p === null) return null;
      out.push(p);
    }
    return out.join('\n');
  }

  /**
   * Written out again only when something in it changed, or it has escapes (which the detectors
   * do not read as written; a duplicate key could keep one in the text that the parsed value no
   * longer holds), or a rule fired (with a duplicate key, `{"name": "Jane Doe", "name":
   * "[redacted]"}`, the parsed value can look untouched while the text keeps the name). Otherwise
   * the producer's own text stays, scrubbed as text: re-serialising would turn
   * 12345678901234567890 into …7000 and 1.0 into 1.
   */
  function parsedJsonText(text: string, parsed: unknown, node: RuleNode, outPath: string, ctx: Context): string | null {
    const ruledBefore = ctx.ruled;
    let out: string;
    try {
      out = JSON.stringify(walk(parsed, node, outPath, ctx));
    } catch {
      return null;
    }
    return ctx.ruled === ruledBefore && !text.includes('\\') && out === JSON.stringify(parsed) ? scrub(text) : out;
  }

  /**
   * `node` holds the rule for the path that leads here; `outPath` the keys as they are written out
   * (scrubbed), naming hashed fields.
   */
  function walk(value: unknown, node: RuleNode, outPath: string, ctx: Context): unknown {
    if (typeof value === 'string') {
      const json = jsonText(value, node, outPath, ctx);
      if (json === undefined) return scrub(value);
      if (json !== null) return json;
      // Withheld as output_json is; counted as a rule that fired, so JSON around it is written out again.
      ctx.ruled++;
      return '[redacted]';
    }
    if (typeof value === 'number') return looksLikeCardNumber(value) && enabled.has('card') ? tokenize('card', String(Math.abs(value))) : value;
    if (value === null || typeof value !== 'object') return value;
    // An element's hashed fields are named with its index (applicants[1].email): under one name
    // for all, each element's token overwrote the one before, and only the last was a join key.
    if (Array.isArray(value)) return value.map((v, i) => walk(v, node, `${outPath}[${i}]`, ctx));
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      if (forbiddenKeys.has(key)) throw new ForbiddenKeyError(outPath ? `${outPath}.${scrub(key)}` : scrub(key));
      const v = (value as Record<string, unknown>)[key];
      const next = child(node, key);
      // Keys are labels, but an email or a phone number used as a key is still personal data.
      const outKey = scrub(key);
      const childPath = outPath ? `${outPath}.${outKey}` : outKey;
      switch (next.rule) {
        case 'drop':
          ctx.ruled++;
          break;
        case 'keep':
          out[outKey] = v;
          break;
        case 'redact':
          ctx.ruled++;
          out[outKey] = '[redacted]';
          break;
        case 'hash': {
          // The key as written, not lower-cased: tokens already stored were made that way.
          const token = hashToken(key, v);
          ctx.ruled++;
          ctx.fields[childPath] = token;
          out[outKey] = token;
          break;
        }
        default:
          out[outKey] = walk(v, next, childPath, ctx);
      }
    }
    return out;
  }

  return {
    keyId: kid,
    scrub,
    scrubId,
    pseudonym: hashToken,
    protectInput(input) {
      const ctx: Context = { fields: {}, ruled: 0 };
      const value = walk(input, root, '', ctx);
      return { value, fields: ctx.fields, ruled: ctx.ruled > 0 };
    },
    protectJsonText(text) {
      const json = jsonText(text, root, '', { fields: {}, ruled: 0 });
      return json === undefined ? scrub(text) : json;
    },
  };
}

/** Throws ForbiddenKeyError when a map (attributes, scores ...) carries a prototype key. */
export function checkMapKeys(map: Record<string, unknown>, name: string): void {
  if (Object.getPrototypeOf(map) !== Object.prototype && Object.getPrototypeOf(map) !== null) {
    throw new ForbiddenKeyError(`${name}.__proto__`);
  }
  for (const key of Object.keys(map)) if (forbiddenKeys.has(key)) throw new ForbiddenKeyError(`${name}.${key}`);
}
