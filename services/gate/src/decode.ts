import { isUtf8 } from 'node:buffer';
import type { Type } from 'avsc';
import type { InferenceEventRecord, SchemaResolvers } from '@dlog/contracts';
import { InvalidUtf8Error } from '@dlog/contracts';
import { deadLetter, ok, type Result } from './results.js';

export interface DecodedEvent {
  event: InferenceEventRecord;
  /** The raw input, parsed once. */
  input: unknown;
  format: 'avro' | 'json';
  /** Whether the producer sent input_hash (JSON producers may leave it to the gate). */
  producerHash: string | null;
}

const forbidden = new Set(['__proto__', 'constructor', 'prototype']);

/** The path of the first prototype key in a parsed value; no path strings on the happy path. */
function findForbiddenKey(value: unknown, path: string): string | undefined {
  const hit = forbiddenSegments(value, 0);
  if (!hit) return undefined;
  return [path, ...hit].filter(Boolean).join('.');
}

function forbiddenSegments(value: unknown, depth: number): string[] | undefined {
  if (value === null || typeof value !== 'object' || depth > 64) return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (v !== null && typeof v === 'object') {
        const hit = forbiddenSegments(v, depth + 1);
        if (hit) return hit;
      }
    }
    return undefined;
  }
  for (const key in value) {
    if (forbidden.has(key)) return [key];
    const v = (value as Record<string, unknown>)[key];
    if (v !== null && typeof v === 'object') {
      const hit = forbiddenSegments(v, depth + 1);
      if (hit) {
        hit.unshift(key);
        return hit;
      }
    }
  }
  return undefined;
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether any string or key in a parsed JSON value holds an unpaired surrogate (walked without recursion: nesting may be deep). */
function holdsLoneSurrogate(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (loneSurrogate.test(v)) return true;
    } else if (Array.isArray(v)) {
      for (const x of v) stack.push(x);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (loneSurrogate.test(k)) return true;
        stack.push(x);
      }
    }
  }
  return false;
}

function schemaViolation(type: Type, value: unknown): Result<never> {
  let first: { path: string; missing: boolean; expected: string } | undefined;
  type.isValid(value, {
    errorHook: (path, v, t) => {
      // Omitted fields that have defaults (nullable unions, maps, arrays) are fine in JSON.
      if (v === undefined && ['union:unwrapped', 'union:wrapped', 'map', 'array'].includes(t.typeName ?? '')) return;
      first ??= { path: path.join('.'), missing: v === undefined, expected: t.typeName ?? 'value' };
    },
  });
  if (!first) return deadLetter('validate', 'wrong_type', 'event does not match the inference-event contract');
  return first.missing
    ? deadLetter('validate', 'missing_field', `required field ${first.path} is missing`)
    : deadLetter('validate', 'wrong_type', `field ${first.path} is not a valid ${first.expected}`);
}

/**
 * The first integer literal in a JSON text that a double cannot hold exactly, if any (outside
 * strings). JSON.parse rounds `12345678901234567890` to `12345678901234567000` without a word: the
 * stored input and its hash would then name another account than the one the model saw, and a
 * producer's exact hash would not match. A literal a double holds exactly passes (2^60 spelled
 * out), and so does one that is a double's own shortest form:
 * `1764330123456789000` (a nanosecond clock read into a double, as JavaScript and every RFC 8785
 * writer print it) reads back as the same text, so the stored input and its hash are the
 * producer's. Only texts with a run of 16 digits are tokenised, so the common case costs one
 * native regex test.
 */
export function lossyInteger(text: string): string | undefined {
  if (!/\d{16}/.test(text)) return undefined;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) {
      inString = true;
      continue;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < text.length && /[0-9.eE+-]/.test(text[j]!)) j++;
      const token = text.slice(i, j);
      i = j - 1;
      if (/^-?\d{16,}$/.test(token) && String(Number(token)) !== token && BigInt(token) !== BigInt(Number(token))) return token;
    }
  }
  return undefined;
}

function lossyNumber(token: string, where: string): Result<never> {
  const shown = token.length > 40 ? `${token.slice(0, 40)}...` : token;
  return deadLetter('validate', 'invalid_input', `${where} holds the number ${shown}, which JSON numbers cannot carry exactly (beyond 2^53); send it as a string`);
}

function parseInput(inputJson: string): Result<unknown> {
  let value: unknown;
  try {
    value = JSON.parse(inputJson);
  } catch (err) {
    return deadLetter('validate', 'invalid_input', `input_json is not JSON: ${(err as Error).message}`);
  }
  const lossy = lossyInteger(inputJson);
  if (lossy) return lossyNumber(lossy, 'input_json');
  return ok(value);
}

/**
 * Bytes → event. Never throws: every way the bytes can be wrong is a dead-letter result.
 * Avro with Confluent framing (magic byte 0, schema id) and plain JSON objects are accepted; the
 * JSON form follows the same contract (nullable fields may be omitted, and `input` may be given
 * as an object instead of `input_json`).
 */
export function decodeEvent(bytes: Buffer | null, type: Type, schemas: SchemaResolvers, maxBytes: number): Result<DecodedEvent> {
  if (!bytes || bytes.length === 0) return deadLetter('decode', 'empty_message', 'message has no value');
  if (bytes.length > maxBytes) {
    return deadLetter('decode', 'payload_too_large', `event is ${bytes.length} bytes; the policy allows ${maxBytes}`);
  }
  const first = bytes[0]!;
  if (first === 0) {
    if (bytes.length < 5) return deadLetter('decode', 'truncated_avro', 'Avro framing needs 5 header bytes');
    const id = bytes.readInt32BE(1);
    const schema = schemas.get(id);
    if (!schema) return deadLetter('decode', 'unknown_schema_id', `schema id ${id} is not in the registry`);
    if ('error' in schema) return deadLetter('decode', schema.error, schema.message);
    let event: InferenceEventRecord;
    try {
      event = type.fromBuffer(bytes.subarray(5), schema.resolver as never) as InferenceEventRecord;
    } catch (err) {
      if (err instanceof InvalidUtf8Error) return deadLetter('decode', 'invalid_utf8', `Avro event: ${err.message}`);
      return deadLetter('decode', 'truncated_avro', `Avro body cannot be read: ${(err as Error).message}`);
    }
    for (const [name, map] of [
      ['attributes', event.attributes],
      ['output.scores', event.output.scores],
    ] as const) {
      if (Object.getPrototypeOf(map) !== Object.prototype) return deadLetter('validate', 'forbidden_key', `forbidden key at ${name}.__proto__`);
      const bad = findForbiddenKey(map, name);
      if (bad) return deadLetter('validate', 'forbidden_key', `forbidden key at ${bad}`);
    }
    const input = parseInput(event.input_json);
    if (!input.ok) return input;
    const badInput = findForbiddenKey(input.value, 'input');
    if (badInput) return deadLetter('validate', 'forbidden_key', `forbidden key at ${badInput}`);
    return ok({ event, input: input.value, format: 'avro', producerHash: event.input_hash });
  }

  // JSON: skip leading whitespace, then it must be an object.
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)) i++;
  if (bytes[i] !== 0x7b) {
    return deadLetter('decode', 'wrong_magic_byte', `first byte 0x${first.toString(16).padStart(2, '0')} is neither Avro framing (0x00) nor a JSON object`);
  }
  if (!isUtf8(bytes)) return deadLetter('decode', 'invalid_utf8', 'JSON event is not valid UTF-8');
  let raw: Record<string, unknown>;
  const text = bytes.toString('utf8');
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    return deadLetter('decode', 'invalid_json', `not valid JSON: ${(err as Error).message}`);
  }
  const bad = findForbiddenKey(raw, '');
  if (bad) return deadLetter('validate', 'forbidden_key', `forbidden key at ${bad}`);
  // Valid UTF-8 bytes carry no lone surrogate; a `\ud800` escape does, and parses. No Unicode
  // text: refused, where the Avro encoder turned it into U+FFFD in strings over 64 bytes.
  if (text.includes('\\u') && holdsLoneSurrogate(raw)) return deadLetter('decode', 'invalid_utf8', 'JSON event holds a lone surrogate (an unpaired \\uD800-\\uDFFF escape)');

  let input: unknown;
  if (raw.input !== undefined && raw.input_json !== undefined) {
    return deadLetter('validate', 'invalid_input', 'the event gives both input and input_json; send one of them');
  }
  if (raw.input !== undefined) {
    // The event's own text: a number in the input object was rounded by the parse above. (Other
    // fields holding such numbers are refused by their types, or rounded scores: refused too.)
    const lossy = lossyInteger(text);
    if (lossy) return lossyNumber(lossy, 'the event');
    input = raw.input;
    try {
      raw.input_json = JSON.stringify(raw.input);
    } catch (err) {
      // JSON.parse takes nesting that JSON.stringify's stack does not (100,000 levels of `[`).
      return deadLetter('validate', 'invalid_input', `input cannot be serialised: ${(err as Error).message}`);
    }
  } else if (typeof raw.input_json === 'string') {
    const parsed = parseInput(raw.input_json);
    if (!parsed.ok) return parsed;
    input = parsed.value;
  }
  delete raw.input;
  const producerHash = typeof raw.input_hash === 'string' ? raw.input_hash : null;
  if (raw.input_hash === undefined) raw.input_hash = '';
  let event: InferenceEventRecord;
  try {
    event = type.clone(raw) as InferenceEventRecord;
  } catch (err) {
    // A lone surrogate (`"\ud800"`) parses as JSON but is no Unicode: not a contract matter.
    if (err instanceof InvalidUtf8Error) return deadLetter('decode', 'invalid_utf8', `JSON event: ${err.message}`);
    return schemaViolation(type, raw);
  }
  return ok({ event, input, format: 'json', producerHash });
}
