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

export function createProtector(pii: PolicyDocument['pii'], keys: KeyRing): Protector {
  const rules = pii.fields.map((f) => ({ pattern: f.path.split('.'), rule: f.rule as FieldRule }));
  const enabled = new Set<DetectorName>(pii.detectors);
  const kid = keys.active.id;
  const ruleCache = new Map<string, FieldRule | null>();

  const tokenize: Tokenize = (type, value) => `[${type}:${keys.hmac(type, value).slice(0, 16)}]`;
  const scrub = (text: string) => scrubText(text, enabled, tokenize);

  function ruleFor(path: string[], key: string): FieldRule | null {
    let hit = ruleCache.get(key);
    if (hit === undefined) {
      hit = rules.find((r) => matches(r.pattern, 0, path, 0))?.rule ?? null;
      if (ruleCache.size < 50_000) ruleCache.set(key, hit);
    }
    return hit;
  }

  function hashToken(path: string[], value: unknown): string {
    const text = typeof value === 'string' ? value.trim().toLowerCase() : JSON.stringify(value);
    return `hmac:${kid}:${keys.hmac(`field:${path[path.length - 1] ?? ''}`, text).slice(0, 32)}`;
  }

  function walk(value: unknown, path: string[], pathKey: string, fields: Record<string, string>): unknown {
    if (typeof value === 'string') return scrub(value);
    if (typeof value === 'number') return looksLikeCardNumber(value) && enabled.has('card') ? tokenize('card', String(value)) : value;
    if (value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return value.map((v) => walk(v, path, pathKey, fields));
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      if (forbiddenKeys.has(key)) throw new ForbiddenKeyError(pathKey ? `${pathKey}.${key}` : key);
      path.push(key);
      const childKey = pathKey ? `${pathKey}.${key}` : key;
      const v = (value as Record<string, unknown>)[key];
      const rule = ruleFor(path, childKey);
      // Keys are labels, but an email used as a key is still an email.
      const outKey = key.includes('@') ? scrub(key) : key;
      switch (rule) {
        case 'drop':
          break;
        case 'keep':
          out[outKey] = v;
          break;
        case 'redact':
          out[outKey] = '[redacted]';
          break;
        case 'hash': {
          const token = hashToken(path, v);
          fields[childKey] = token;
          out[outKey] = token;
          break;
        }
        default:
          out[outKey] = walk(v, path, childKey, fields);
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
      return { value: walk(input, [], '', fields), fields };
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
