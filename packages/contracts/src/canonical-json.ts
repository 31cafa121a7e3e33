import { hash } from 'node:crypto';

/**
 * RFC 8785 (JSON Canonicalization Scheme) for JavaScript values, and the `input_hash` built on it.
 *
 * The value is read the way JSON.stringify reads it (toJSON is called, `undefined`, functions and
 * symbols are left out of objects and become null in arrays), so hashing an object gives the same
 * result as hashing its JSON text after a round trip. What JSON cannot carry losslessly is refused
 * rather than guessed: BigInt, NaN and ±Infinity, cycles, strings with lone surrogates (I-JSON,
 * which RFC 8785 requires, forbids them, and other languages could not encode them to UTF-8), and
 * Map, Set, WeakMap and WeakSet (JSON.stringify writes each as `{}`: the record and its hash would
 * silently say nothing of the content).
 *
 * Numbers use ECMAScript's Number-to-String, which is what RFC 8785 specifies, so JSON.stringify
 * already prints them canonically (-0 as 0, 1e21 as 1e+21, 1e-7 as 1e-7). Keys sort by UTF-16 code
 * units, which is what JavaScript's default string comparison does.
 */

export class CanonicalJsonError extends Error {
  /** Where in the value the problem is, as a JSON pointer ('' is the root). */
  path = '';
  /** The key, one of the caller's `refuseKeys`, that was found. */
  refusedKey: string | undefined;
  constructor(
    readonly reason: string,
    /** The text would exceed the caller's `maxLength`: the value may well be representable. */
    readonly tooLong = false,
  ) {
    super(reason);
    this.name = 'CanonicalJsonError';
  }

  /** Paths are built on the way out of the recursion, so the happy path builds none. */
  prefix(segment: string): this {
    this.path = `/${segment.replace(/~/g, '~0').replace(/\//g, '~1')}${this.path}`;
    this.message = `${this.reason} at ${this.path}`;
    return this;
  }
}

function inside(err: unknown, segment: string): unknown {
  return err instanceof CanonicalJsonError ? err.prefix(segment) : err;
}

interface WellFormed {
  isWellFormed(): boolean;
}

/** Whether a string has no lone surrogate, i.e. a UTF-8 form. Node 20 has String.prototype.isWellFormed (ES2024); the project's lib setting is ES2023. */
export function isWellFormed(s: string): boolean {
  return (s as unknown as WellFormed).isWellFormed();
}

/** Characters that need an escape, or a check for lone surrogates; most strings have none. */
const needsCare = /[\u0000-\u001f"\\\ud800-\udfff]/;

/** Options of one canonicalJson call, kept here for its walk (see canonicalJson). */
let maxLength = Infinity;
let refusedKeys: ReadonlySet<string> | undefined;

function tooLong(): CanonicalJsonError {
  return new CanonicalJsonError(`Canonical JSON longer than ${maxLength} characters`, true);
}

function str(s: string): string {
  // Before the escape check: that alone reads all of a 16 MB string (and its quotes count too).
  if (s.length + 2 > maxLength) throw tooLong();
  if (!needsCare.test(s)) return `"${s}"`;
  if (!isWellFormed(s)) throw new CanonicalJsonError('String with a lone surrogate');
  // JSON.stringify escapes exactly what RFC 8785 asks for: " \ and control characters, with the
  // short forms \b \f \n \r \t and lowercase \u00xx for the rest; everything else is literal.
  return JSON.stringify(s);
}

/**
 * Keys repeat from one input to the next: their quoted form is kept, which saves the escape check
 * and a concatenation per key. Only short keys, and the map starts over when full, so inputs with
 * ever new or huge keys cannot make it grow (at most ~10,000 keys of 64 characters). Keys that
 * cannot be written are never kept.
 */
const quotedKeys = new Map<string, string>();
const maxQuotedKeys = 10_000;
const maxQuotedKeyLength = 64;

function quotedKey(key: string): string {
  if (key.length > maxQuotedKeyLength) return str(key);
  let q = quotedKeys.get(key);
  if (q === undefined) {
    q = str(key);
    if (quotedKeys.size >= maxQuotedKeys) quotedKeys.clear();
    quotedKeys.set(key, q);
  }
  return q;
}

function walk(value: unknown, depth: number): string | undefined {
  switch (typeof value) {
    case 'string':
      return str(value);
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalJsonError(`${value} is not representable in JSON`);
      // ECMAScript Number-to-String is exactly RFC 8785's number format (and prints -0 as 0).
      return String(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new CanonicalJsonError('BigInt is not representable in JSON (send it as a string)');
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  const obj = value as Record<string, unknown> & { toJSON?: unknown };
  if (typeof obj.toJSON === 'function') return walk((obj.toJSON as (key: string) => unknown)(''), depth + 1);
  // Plain objects and arrays (all of JSON.parse's) skip the checks for other kinds.
  const proto: unknown = Object.getPrototypeOf(obj);
  if (proto !== Object.prototype && proto !== Array.prototype) {
    if (value instanceof Number || value instanceof String || value instanceof Boolean) return walk(value.valueOf(), depth);
    if (value instanceof Map || value instanceof Set || value instanceof WeakMap || value instanceof WeakSet) throw new CanonicalJsonError(collectionProblem(value));
  }
  // Tracking ancestors costs on every object; a depth limit costs nothing, and only a value that
  // hits it is walked again to tell a cycle (with its path) from a merely deep structure.
  if (depth > maxDepth) throw new CanonicalJsonError(tooDeep);
  let out: string;
  if (Array.isArray(obj)) {
    out = '[';
    for (let i = 0; i < obj.length; i++) {
      if (i > 0) out += ',';
      try {
        out += walk(obj[i], depth + 1) ?? 'null';
        // Checked as the text grows, so a huge value is refused after maxLength characters of
        // work, not after all of it (200k rows: ~0.5 s of the host's event loop).
        if (out.length > maxLength) throw tooLong();
      } catch (err) {
        throw inside(err, String(i));
      }
    }
    out += ']';
    if (out.length > maxLength) throw tooLong();
  } else {
    const keys = Object.keys(obj);
    // Often already in order (objects built from sorted or canonical data): sort only if not.
    for (let i = 1; i < keys.length; i++) {
      if (!(keys[i - 1]! < keys[i]!)) {
        keys.sort();
        break;
      }
    }
    out = '{';
    let first = true;
    for (const key of keys) {
      let child: string | undefined;
      try {
        child = walk(obj[key], depth + 1);
      } catch (err) {
        throw inside(err, key);
      }
      if (child === undefined) continue;
      if (!first) out += ',';
      first = false;
      let quoted: string;
      try {
        if (refusedKeys !== undefined && refusedKeys.has(key)) throw refusedKey(key);
        quoted = quotedKey(key);
      } catch (err) {
        throw inside(err, key);
      }
      out += quoted + ':' + child;
      if (out.length > maxLength) throw inside(tooLong(), key);
    }
    out += '}';
    if (out.length > maxLength) throw tooLong();
  }
  return out;
}

function refusedKey(key: string): CanonicalJsonError {
  const err = new CanonicalJsonError(`Key ${JSON.stringify(key)} is refused`);
  err.refusedKey = key;
  return err;
}

function collectionProblem(value: Map<unknown, unknown> | Set<unknown> | WeakMap<object, unknown> | WeakSet<object>): string {
  if (value instanceof Map) return 'Map is not representable in JSON (JSON.stringify writes {}): convert it, e.g. Object.fromEntries(map)';
  if (value instanceof Set) return 'Set is not representable in JSON (JSON.stringify writes {}): convert it, e.g. Array.from(set)';
  return `${value instanceof WeakMap ? 'WeakMap' : 'WeakSet'} is not representable in JSON (its entries cannot be listed): copy what it holds into an object or array`;
}

const maxDepth = 512;
const tooDeep = `Deeper than ${maxDepth} levels`;

/**
 * Finds a cycle, depth first; returns its path, or undefined. A walk that passed maxDepth along a
 * cycle met a repeated object within maxDepth + 1 levels, so the search stops there too.
 */
function findCycle(value: unknown, ancestors: object[]): string | undefined {
  if (typeof value !== 'object' || value === null || ancestors.length > maxDepth + 1) return undefined;
  if (ancestors.includes(value)) return '';
  ancestors.push(value);
  try {
    for (const [key, child] of Object.entries(value)) {
      const found = findCycle(child, ancestors);
      if (found !== undefined) return `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}${found}`;
    }
    return undefined;
  } finally {
    ancestors.pop();
  }
}

export interface CanonicalJsonOptions {
  /**
   * Refuse the value (CanonicalJsonError with `tooLong`) once its text would be longer than this
   * many characters, after about that much work rather than after building and hashing all of it.
   * A character is at least one UTF-8 byte, so text over N characters is over N bytes.
   */
  maxLength?: number;
  /** Object keys refused wherever they appear (keys a consumer of the text will not take). */
  refuseKeys?: ReadonlySet<string>;
}

/** The RFC 8785 canonical JSON text of a value. Throws CanonicalJsonError for what JSON cannot hold. */
export function canonicalJson(value: unknown, options?: CanonicalJsonOptions): string {
  // Module state rather than walk parameters, which cost the default path; saved and restored
  // because a toJSON may call canonicalJson itself.
  const outerMax = maxLength;
  const outerKeys = refusedKeys;
  maxLength = options?.maxLength ?? Infinity;
  refusedKeys = options?.refuseKeys;
  let out: string | undefined;
  try {
    out = walk(value, 0);
  } catch (err) {
    if (!(err instanceof CanonicalJsonError && err.reason === tooDeep)) throw err;
    const cycle = findCycle(value, []);
    const refused = new CanonicalJsonError(cycle === undefined ? tooDeep : 'Cyclic structure');
    refused.path = cycle ?? (err as CanonicalJsonError).path;
    refused.message = `${refused.reason} at ${refused.path}`;
    throw refused;
  } finally {
    maxLength = outerMax;
    refusedKeys = outerKeys;
  }
  if (out === undefined) throw new CanonicalJsonError(`${typeof value} is not representable in JSON`);
  return out;
}

/** `sha256-<hex>` of UTF-8 text: the format of every hash in a decision record. */
export function sha256Tagged(text: string): string {
  // One-shot crypto.hash (Node >= 20.12) is about twice as fast as createHash for ~1 KB inputs.
  return `sha256-${hash('sha256', text, 'hex')}`;
}

/** `input_hash`: `sha256-<hex>` over the UTF-8 bytes of the canonical JSON of the input. */
export function inputHash(value: unknown): string {
  return sha256Tagged(canonicalJson(value));
}

/** A `\udXXX` escape of a lone surrogate, as JSON.stringify writes one (or a literal `\\ud8..`: a false alarm, which only takes the long way). */
const escapedSurrogate = /\\ud[89a-f]/;

/**
 * Whether every object's keys, in the order JSON.stringify writes them, are sorted; false past
 * maxDepth, and for anything JSON.parse does not make (toJSON, other prototypes), which the walk
 * reads differently from JSON.stringify's plain view.
 */
function keysSorted(value: unknown, depth: number): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (depth > maxDepth) return false;
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return false;
    for (let i = 0; i < value.length; i++) if (!keysSorted(value[i], depth + 1)) return false;
    return true;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if ((proto !== Object.prototype && proto !== null) || typeof (value as { toJSON?: unknown }).toJSON === 'function') return false;
  const keys = Object.keys(value);
  for (let i = 0; i < keys.length; i++) {
    if (i > 0 && !(keys[i - 1]! < keys[i]!)) return false;
    if (!keysSorted((value as Record<string, unknown>)[keys[i]!], depth + 1)) return false;
  }
  return true;
}

/**
 * `input_hash` of an input that arrived as JSON `text` and was parsed into `parsed` (JSON.parse
 * output). The SDK sends the input already canonical; such a text is hashed as it is instead of
 * being built again (a 650-character input: ~5 µs instead of ~10). The text is canonical exactly
 * when JSON.stringify reproduces it from `parsed` (RFC 8785 strings and numbers are what it
 * writes), the keys it writes come in sorted order, and no lone surrogate appears (it escapes one,
 * RFC 8785 refuses it). Anything else takes {@link inputHash}, so the result, or the error, is
 * always inputHash(parsed).
 */
export function inputHashOfText(text: string, parsed: unknown): string {
  let same = false;
  try {
    same = !escapedSurrogate.test(text) && keysSorted(parsed, 0) && JSON.stringify(parsed) === text;
  } catch {
    // Too deep for JSON.stringify's stack: the long way says why.
  }
  return same ? sha256Tagged(text) : inputHash(parsed);
}
