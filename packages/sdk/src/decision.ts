import { CanonicalJsonError, canonicalJson, isWellFormed, sha256Tagged } from '@dlog/contracts';
import { errorName, messageOf } from './safe-error.js';

/** What the host passes to record(): one decision, in the host's terms. */
export interface Decision {
  /** Id of the inference call as the serving system knows it; defaults to the event id. */
  requestId?: string;
  /**
   * The raw input. Serialised and hashed in the background, after record() has returned: the
   * logger takes ownership, so do not mutate it afterwards (pass a copy if you must).
   */
  input: unknown;
  output: DecisionOutput;
  /** Overrides the logger's default model. `registry://models/<name>:<version>` or an object. */
  model?: ModelRef | string;
  image?: ImageRef | null;
  config?: ConfigRef | null;
  preprocessing?: PreprocessingRef | null;
  endpoint?: string;
  decisionType?: string;
  tenant?: string | null;
  attributes?: Record<string, string>;
  /** Agent step context; trace() fills it for you. */
  trajectory?: TrajectoryContext;
  /** When the decision was made, in milliseconds since the epoch (not seconds); defaults to now. */
  ts?: number;
}

export interface DecisionOutput {
  decision: string;
  confidence?: number | null;
  scores?: Record<string, number>;
  /** Finite numbers, or -Infinity for a token of probability 0. */
  tokenLogprobs?: number[] | null;
  /** Free-form output (generated text, structured result), stored as JSON text. */
  detail?: unknown;
}

export interface ModelRef {
  name: string;
  version: string;
  digest?: string | null;
}

export interface ImageRef {
  ref: string;
  digest?: string | null;
}

export interface ConfigRef {
  /** configs/<env>/<name>:v<N> */
  ref: string;
  params?: InferenceParams;
}

export interface InferenceParams {
  temperature?: number | null;
  topP?: number | null;
  maxTokens?: number | null;
  thresholds?: Record<string, number>;
  extra?: Record<string, string>;
}

export interface PreprocessingRef {
  ref: string;
  digest?: string | null;
}

export interface TrajectoryContext {
  traceId: string;
  step: number;
  parentEventId?: string | null;
  toolName?: string | null;
  /** Hashed (input_hash rules) in the background; the arguments themselves are not sent. */
  toolArgs?: unknown;
}

/** Logger-wide values every event carries unless the decision overrides them. */
export interface EventDefaults {
  service: string;
  sdk: string;
  host: string | null;
  endpoint: string;
  decisionType: string;
  tenant: string | null;
  model: ModelRef | string | undefined;
  image: ImageRef | null;
  config: ConfigRef | null;
  preprocessing: PreprocessingRef | null;
  attributes: Record<string, string>;
  environmentDigest: string;
  /** The logger's maxEventBytes: an input whose JSON alone is longer is refused before it is all built. */
  maxEventBytes: number;
}

/**
 * Keys the gate dead-letters as `forbidden_key` (prototype keys: a consumer that assigns them
 * pollutes or replaces an object's prototype), in the input at any depth and in attributes and
 * output.scores. The same set as `forbidden` in services/gate/src/decode.ts and `forbiddenKeys`
 * in services/gate/src/protect.ts: refused here, at record() time, rather than sent, counted as
 * sent and dead-lettered. decision.test.ts asserts the three agree.
 */
export const gateForbiddenKeys: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Throws unless `s` is well-formed UTF-16. A lone surrogate (half of an emoji, from text cut with
 * slice()) has no UTF-8 encoding: the gate dead-letters the event as invalid_utf8.
 */
function wellFormed(s: string, field: string): void {
  if (!isWellFormed(s)) {
    throw new Error(`${field} holds a lone surrogate (half of a character, as slice() leaves when it cuts an emoji): it has no UTF-8 form and the gate refuses it; cut text with Array.from(text) or fix it with text.toWellFormed()`);
  }
}

function optWellFormed(s: string | null | undefined, field: string): void {
  if (typeof s === 'string') wellFormed(s, field);
}

/** A map's keys (and string values) as the gate takes them: no prototype keys, no lone surrogates. */
function mapKeysAndText(m: Record<string, unknown> | undefined, field: string): void {
  if (m === undefined) return;
  for (const k in m) {
    if (gateForbiddenKeys.has(k)) throw new Error(`${field} has the key ${JSON.stringify(k)}, which the gate will not take (a prototype key); rename it`);
    wellFormed(k, `a key of ${field}`);
    const v = m[k];
    // Not named by its key: keys are the host's data, and may be personal (an address as a key).
    if (typeof v === 'string') wellFormed(v, `a value of ${field}`);
  }
}

/** Below this, a positive ts is seconds, not ms: 1e12 ms is 2001-09-09, 1e12 s is 33,658 AD. */
const minMillisTs = 1e12;

/** A refused decision: never thrown at the caller, counted as `invalid` and reported. */
export class InvalidDecisionError extends Error {
  constructor(
    readonly eventId: string,
    readonly reason: string,
  ) {
    super(`Decision ${eventId} refused: ${reason}`);
    this.name = 'InvalidDecisionError';
  }
}

const modelUri = /^registry:\/\/models\/([^:\s]+):(\S+)$/;

function modelRef(m: ModelRef | string | undefined): ModelRef | string {
  if (m === undefined || m === null) return 'missing model reference (set `model` on the logger or the decision)';
  if (typeof m === 'string') {
    const match = modelUri.exec(m);
    return match ? { name: match[1]!, version: match[2]! } : `model reference ${JSON.stringify(m)} is not registry://models/<name>:<version>`;
  }
  if (typeof m.name !== 'string' || m.name === '' || typeof m.version !== 'string' || m.version === '') {
    return 'model reference needs a non-empty name and version';
  }
  // The gate refuses it too: registry://models/<name>:<version> would name another model.
  if (m.name.includes(':')) return `model name ${JSON.stringify(m.name)} cannot contain ':' (it separates name and version in registry://models/<name>:<version>)`;
  return m;
}

/**
 * Why a value could not be serialised, without any of its content: the errors name the path
 * (the host's keys: e-mail addresses, names) or carry the host's own message (a toJSON that
 * throws), and these reasons go to onError, which hosts log.
 */
function whyNotSerialisable(err: unknown): string {
  try {
    if (err instanceof CanonicalJsonError) {
      // The key is one of gateForbiddenKeys, none of the host's data.
      if (err.refusedKey !== undefined) {
        return `it has the key ${JSON.stringify(err.refusedKey)}, which the gate refuses (forbidden_key: a prototype key), at depth ${err.path.split('/').length - 1}; rename it`;
      }
      const depth = err.path === '' ? 0 : err.path.split('/').length - 1;
      return `${err.reason} (at depth ${depth})`;
    }
  } catch {
    // A value that only looks like one (a Proxy): below.
  }
  const message = messageOf(err);
  if (/circular/i.test(message)) return 'Cyclic structure';
  if (/BigInt/.test(message)) return 'BigInt is not representable in JSON (send it as a string)';
  return `${errorName(err)} thrown while converting it (a toJSON method or getter)`;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const optNum = (v: unknown): boolean => v === undefined || v === null || isNum(v);
const optStr = (v: unknown): boolean => v === undefined || v === null || typeof v === 'string';

function numMap(m: unknown): boolean {
  if (m === undefined) return true;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
  for (const k in m) if (!isNum((m as Record<string, unknown>)[k])) return false;
  return true;
}

function strMap(m: unknown): boolean {
  if (m === undefined) return true;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
  for (const k in m) if (typeof (m as Record<string, unknown>)[k] !== 'string') return false;
  return true;
}

function refOrNull(r: { ref: string; digest?: string | null } | null | undefined, what: string): { ref: string; digest: string | null } | null {
  if (r === undefined || r === null) return null;
  if (typeof r.ref !== 'string' || r.ref === '' || !optStr(r.digest)) throw new Error(`${what} needs a non-empty ref and an optional string digest`);
  return { ref: r.ref, digest: r.digest ?? null };
}

/** refOrNull for a reference the decision sets: its strings checked too. */
function checkedRef(r: { ref: string; digest?: string | null } | null, what: string): { ref: string; digest: string | null } | null {
  const ref = refOrNull(r, what);
  if (ref !== null) {
    wellFormed(ref.ref, `${what}.ref`);
    optWellFormed(ref.digest, `${what}.digest`);
  }
  return ref;
}

const isLogprob = (v: unknown): boolean => v === -Infinity || isNum(v);

/**
 * Builds the Avro record (schemas/inference-event.avsc) for a decision: validates what the host
 * gave, serialises and hashes the input. Runs in the background loop, never on the caller.
 * Throws InvalidDecisionError for a decision that cannot be recorded.
 */
export function toInferenceEvent(eventId: string, ts: number, d: Decision, defaults: EventDefaults): Record<string, unknown> {
  try {
    if (typeof d !== 'object' || d === null) throw new Error('decision must be an object');
    const model = modelRef(d.model ?? defaults.model);
    if (typeof model === 'string') throw new Error(model);
    if (!optStr(model.digest)) throw new Error('model.digest must be a string');
    // Strings are checked for lone surrogates where the decision sets them; the logger's defaults
    // were checked once, when it was created.
    if (d.model !== undefined) {
      wellFormed(model.name, 'model name');
      wellFormed(model.version, 'model version');
      optWellFormed(model.digest, 'model.digest');
    }
    const out = d.output;
    if (typeof out !== 'object' || out === null || typeof out.decision !== 'string') throw new Error('output.decision must be a string');
    wellFormed(out.decision, 'output.decision');
    if (!optNum(out.confidence)) throw new Error('output.confidence must be a finite number');
    if (!numMap(out.scores)) throw new Error('output.scores must map names to finite numbers');
    mapKeysAndText(out.scores, 'output.scores');
    // -Infinity is a real log-probability (a token of probability 0); the contract's doubles and
    // the gate (numberProblem) take it. NaN and +Infinity are no log-probability.
    if (out.tokenLogprobs != null && !(Array.isArray(out.tokenLogprobs) && out.tokenLogprobs.every(isLogprob))) {
      throw new Error('output.tokenLogprobs must be an array of finite numbers (or -Infinity)');
    }
    if (!strMap(d.attributes)) throw new Error('attributes must map names to strings');
    mapKeysAndText(d.attributes, 'attributes');
    if (!optStr(d.requestId) || !optStr(d.tenant) || !optStr(d.endpoint) || !optStr(d.decisionType)) {
      throw new Error('requestId, tenant, endpoint and decisionType must be strings');
    }
    optWellFormed(d.requestId, 'requestId');
    optWellFormed(d.tenant, 'tenant');
    optWellFormed(d.endpoint, 'endpoint');
    optWellFormed(d.decisionType, 'decisionType');
    if (d.ts !== undefined) {
      if (!Number.isSafeInteger(d.ts)) throw new Error('ts must be an integer, ms since the epoch');
      // Date.now() / 1000 is a common slip: stored as ms, the decision would date from January 1970.
      if (d.ts > 0 && d.ts < minMillisTs) throw new Error('ts is in milliseconds since the epoch; this looks like seconds (multiply by 1000)');
    }
    if (d.input === undefined) throw new Error('input is missing');

    let inputJson: string;
    try {
      // Bounded: an input whose text alone is over maxEventBytes characters (so over that many
      // bytes) is refused after that much work, not after all of it was built and hashed.
      inputJson = canonicalJson(d.input, { maxLength: defaults.maxEventBytes, refuseKeys: gateForbiddenKeys });
    } catch (err) {
      if (err instanceof CanonicalJsonError && err.tooLong) {
        throw new Error(`oversized: the input's JSON alone is over ${defaults.maxEventBytes} characters, more than maxEventBytes (${defaults.maxEventBytes} bytes)`);
      }
      throw new Error(`input is not serialisable: ${whyNotSerialisable(err)}`);
    }
    let outputJson: string | null = null;
    if (out.detail !== undefined) {
      try {
        outputJson = JSON.stringify(out.detail) ?? null;
      } catch (err) {
        throw new Error(`output.detail is not serialisable: ${whyNotSerialisable(err)}`);
      }
    }

    const cfg = d.config === undefined ? defaults.config : d.config;
    let config: Record<string, unknown> | null = null;
    if (cfg !== null) {
      if (typeof cfg.ref !== 'string' || cfg.ref === '') throw new Error('config needs a non-empty ref');
      const p = cfg.params ?? {};
      if (!optNum(p.temperature) || !optNum(p.topP) || !(p.maxTokens == null || Number.isInteger(p.maxTokens))) {
        throw new Error('config.params temperature / topP must be numbers, maxTokens an integer');
      }
      if (!numMap(p.thresholds) || !strMap(p.extra)) throw new Error('config.params thresholds map to numbers, extra to strings');
      if (d.config !== undefined) {
        wellFormed(cfg.ref, 'config.ref');
        mapKeysAndText(p.thresholds, 'config.params.thresholds');
        mapKeysAndText(p.extra, 'config.params.extra');
      }
      config = {
        ref: cfg.ref,
        params: {
          temperature: p.temperature ?? null,
          top_p: p.topP ?? null,
          max_tokens: p.maxTokens ?? null,
          thresholds: p.thresholds ?? {},
          extra: p.extra ?? {},
        },
      };
    }

    let trajectory: Record<string, unknown> | null = null;
    const t = d.trajectory;
    if (t !== undefined && t !== null) {
      if (typeof t.traceId !== 'string' || t.traceId === '' || !Number.isInteger(t.step) || !optStr(t.parentEventId) || !optStr(t.toolName)) {
        throw new Error('trajectory needs a traceId, an integer step, and string parentEventId / toolName');
      }
      wellFormed(t.traceId, 'trajectory.traceId');
      optWellFormed(t.parentEventId, 'trajectory.parentEventId');
      optWellFormed(t.toolName, 'trajectory.toolName');
      let toolArgsHash: string | null = null;
      if (t.toolArgs !== undefined) {
        try {
          toolArgsHash = sha256Tagged(canonicalJson(t.toolArgs));
        } catch (err) {
          throw new Error(`trajectory.toolArgs is not serialisable: ${whyNotSerialisable(err)}`);
        }
      }
      trajectory = {
        trace_id: t.traceId,
        step: t.step,
        parent_event_id: t.parentEventId ?? null,
        tool_name: t.toolName ?? null,
        tool_args_hash: toolArgsHash,
      };
    }

    return {
      event_id: eventId,
      request_id: d.requestId ?? eventId,
      ts: d.ts ?? ts,
      endpoint: d.endpoint ?? defaults.endpoint,
      decision_type: d.decisionType ?? defaults.decisionType,
      tenant: d.tenant === undefined ? defaults.tenant : d.tenant,
      model: { name: model.name, version: model.version, digest: model.digest ?? null },
      image: d.image === undefined ? refOrNull(defaults.image, 'image') : checkedRef(d.image, 'image'),
      config,
      preprocessing: d.preprocessing === undefined ? refOrNull(defaults.preprocessing, 'preprocessing') : checkedRef(d.preprocessing, 'preprocessing'),
      environment_digest: defaults.environmentDigest,
      input_json: inputJson,
      input_hash: sha256Tagged(inputJson),
      output: {
        decision: out.decision,
        confidence: out.confidence ?? null,
        scores: out.scores ?? {},
        token_logprobs: out.tokenLogprobs ?? null,
        output_json: outputJson,
      },
      trajectory,
      producer: { service: defaults.service, sdk: defaults.sdk, host: defaults.host },
      attributes: d.attributes ? { ...defaults.attributes, ...d.attributes } : defaults.attributes,
    };
  } catch (err) {
    throw new InvalidDecisionError(eventId, messageOf(err));
  }
}

/** Kafka key: a trajectory stays in one partition, else one request does. */
export function eventKey(eventId: string, d: Decision): string {
  return d.trajectory?.traceId ?? d.requestId ?? eventId;
}
