import type { DetectorName, FieldRule, PolicyDocument } from './policy.js';
import { looksLikeCardNumber, scrubText, type Tokenize } from './detectors.js';
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
}

export interface Protector {
  protectInput(input: unknown): Protected;
  /** Free text outside the input (output text, labels, ids). */
  scrub(text: string): string;
  readonly keyId: string;
}

type Segment = string; // a key, '*' or '**'

function matches(pattern: readonly Segment[], pi: number, path: readonly string[], ki: number): boolean {
  if (pi === pattern.length) return ki === path.length;
  const seg = pattern[pi]!;
  if (seg === '**') {
    for (let k = ki; k <= path.length; k++) if (matches(pattern, pi + 1, path, k)) return true;
    return false;
  }
  if (ki === path.length) return false;
  return (seg === '*' || seg === path[ki]) && matches(pattern, pi + 1, path, ki + 1);
}

/**
 * Rules looked up along the path, one node per key: a node holds the rule for the path that leads
 * to it and its children by key. Keys may contain dots or any other character, so paths are never
 * joined into strings to look rules up (`{"a.name": 1}` and `{"a": {"name": 1}}` once shared a
 * cache entry, and whichever came first decided for both).
 */
interface RuleNode {
  rule: FieldRule | null;
  children: Map<string, RuleNode> | undefined;
}

/** Most nodes kept per protector: beyond it, rules are matched without caching. */
const maxRuleNodes = 50_000;

export function createProtector(pii: PolicyDocument['pii'], keys: KeyRing): Protector {
  // Keys match case-insensitively: `Name` and `EMAIL` are the same field to a person reading it.
  const rules = pii.fields.map((f) => ({ pattern: f.path.toLowerCase().split('.'), rule: f.rule as FieldRule }));
  const enabled = new Set<DetectorName>(pii.detectors);
  const kid = keys.active.id;
  const root: RuleNode = { rule: null, children: undefined };
  let nodes = 0;

  const tokenize: Tokenize = (type, value) => `[${type}:${keys.hmac(type, value).slice(0, 16)}]`;
  const scrub = (text: string) => scrubText(text, enabled, tokenize);

  /** The node of `key` under `parent`, whose path (lower-cased) is `path`. */
  function child(parent: RuleNode, path: string[], key: string): RuleNode {
    let node = parent.children?.get(key);
    if (node === undefined) {
      node = { rule: rules.find((r) => matches(r.pattern, 0, path, 0))?.rule ?? null, children: undefined };
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
   * `path` holds the lower-cased keys leading here, for matching; `outPath` the keys as they are
   * written out (scrubbed), naming hashed fields.
   */
  function walk(value: unknown, node: RuleNode, path: string[], outPath: string, fields: Record<string, string>): unknown {
    if (typeof value === 'string') return scrub(value);
    if (typeof value === 'number') return looksLikeCardNumber(value) && enabled.has('card') ? tokenize('card', String(value)) : value;
    if (value === null || typeof value !== 'object') return value;
    // An element's hashed fields are named with its index (applicants[1].email): under one name
    // for all, each element's token overwrote the one before, and only the last was a join key.
    if (Array.isArray(value)) return value.map((v, i) => walk(v, node, path, `${outPath}[${i}]`, fields));
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      if (forbiddenKeys.has(key)) throw new ForbiddenKeyError(outPath ? `${outPath}.${scrub(key)}` : scrub(key));
      path.push(key.toLowerCase());
      const v = (value as Record<string, unknown>)[key];
      const next = child(node, path, key);
      // Keys are labels, but an email or a phone number used as a key is still personal data.
      const outKey = scrub(key);
      const childPath = outPath ? `${outPath}.${outKey}` : outKey;
      switch (next.rule) {
        case 'drop':
          break;
        case 'keep':
          out[outKey] = v;
          break;
        case 'redact':
          out[outKey] = '[redacted]';
          break;
        case 'hash': {
          // The key as written, not lower-cased: tokens already stored were made that way.
          const token = hashToken(key, v);
          fields[childPath] = token;
          out[outKey] = token;
          break;
        }
        default:
          out[outKey] = walk(v, next, path, childPath, fields);
      }
      path.pop();
    }
    return out;
  }

  return {
    keyId: kid,
    scrub,
    protectInput(input) {
      const fields: Record<string, string> = {};
      return { value: walk(input, root, [], '', fields), fields };
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
