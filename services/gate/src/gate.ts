import type { KafkaMessage, Message } from 'kafkajs';
import type { Type } from 'avsc';
import {
  encodeFramed,
  inputHashOfText,
  joinKey,
  type DecisionCountsRecord,
  type DecisionRecordRecord,
  type InferenceEventRecord,
  type SchemaResolvers,
} from '@dlog/contracts';
import { deadLetterMessage, MAX_RECORD_BYTES, recordBytes, type BatchContext, type OutputRecord } from '@dlog/kafka';
import { decodeEvent } from './decode.js';
import { looksLikeCardNumber } from './detectors.js';
import type { Classification, Policy } from './policy.js';
import { ForbiddenKeyError, type Protector } from './protect.js';
import { deadLetter, ok, type Result } from './results.js';
import { keep, sampleKey } from './sample.js';

export interface GateTopics {
  decisions: string;
  counts: string;
  deadLetters: string;
}

export interface EncodedType {
  type: Type;
  /** Registry id written in the Confluent header. */
  id: number;
}

export interface GateDeps {
  policy: Policy;
  protector: Protector;
  /** Reader type of schemas/inference-event.avsc. */
  inputType: Type;
  schemas: SchemaResolvers;
  decisionType: EncodedType;
  countsType: EncodedType;
  topics: GateTopics;
  now?: () => number;
}

export interface GateStats {
  kept: number;
  dropped: number;
  deadLettered: number;
  byReason: Record<string, number>;
}

function frame(t: EncodedType, value: unknown): Buffer {
  return encodeFramed(t.type, t.id, value);
}

/** A map of labels: its keys scrubbed, its values through the input's field rules and detectors. */
function protectLabels(map: Record<string, string>, protector: Protector): Record<string, string> {
  for (const _ in map) return protector.protectInput(map).value as Record<string, string>;
  return map;
}

/** A map of numbers keyed by labels (scores, thresholds): the keys scrubbed. */
function scrubKeys(map: Record<string, number>, protector: Protector): Record<string, number> {
  let out: Record<string, number> | undefined;
  for (const k in map) {
    const s = protector.scrub(k);
    if (s === k && out === undefined) continue;
    if (out === undefined) {
      out = {};
      for (const j in map) {
        if (j === k) break;
        out[j] = map[j]!;
      }
    }
    out[s] = map[k]!;
  }
  return out ?? map;
}

const scrubIdOrNull = (id: string | null, protector: Protector) => (id === null ? null : protector.scrubId(id));

/** The event's output decision, endpoint and decision type as the protector wrote them out. */
export interface ScrubbedNames {
  decision: string;
  endpoint: string;
  decisionType: string;
}

/** The record an analyst may see: what each tier keeps, after every personal-data rule. */
export function toDecisionRecord(
  event: InferenceEventRecord,
  input: unknown,
  hash: string,
  cls: Classification,
  policyId: string,
  protector: Protector,
  names: ScrubbedNames,
  source: DecisionRecordRecord['source'],
): DecisionRecordRecord {
  const full = cls.tier === 'full';
  const minimal = cls.tier === 'minimal';
  const prot = minimal ? undefined : protector.protectInput(input);
  const config = event.config;
  const trajectory = event.trajectory;
  // Every field spelled out (no object spread): one stable shape for the Avro writer, and the raw
  // input can never ride along by accident. Whatever a producer chose as an id or a label passes
  // the detectors too: an email as request id or in an endpoint's path is still an email. Event
  // ids with personal data never get here (validate). Artifact references (model, image, config, preprocessing, environment)
  // are left as they are: they must resolve in the registry, and `2026.11.28.1234` as a version
  // would read as a phone number.
  return {
    event_id: event.event_id,
    request_id: protector.scrubId(event.request_id),
    ts: event.ts,
    endpoint: names.endpoint,
    decision_type: names.decisionType,
    tenant: scrubIdOrNull(event.tenant, protector),
    model: event.model,
    image: event.image,
    config:
      config === null
        ? null
        : {
            ref: config.ref,
            params: {
              temperature: config.params.temperature,
              top_p: config.params.top_p,
              max_tokens: config.params.max_tokens,
              thresholds: scrubKeys(config.params.thresholds, protector),
              extra: protectLabels(config.params.extra, protector),
            },
          },
    preprocessing: event.preprocessing,
    environment_digest: event.environment_digest,
    trajectory:
      trajectory === null
        ? null
        : {
            trace_id: protector.scrubId(trajectory.trace_id),
            step: trajectory.step,
            parent_event_id: trajectory.parent_event_id,
            tool_name: scrubIdOrNull(trajectory.tool_name, protector),
            // Always a keyed token, in every tier: the SDK sends an unkeyed SHA-256 of the canonical
            // arguments, which anyone can recompute for a list of likely arguments (customer
            // emails, account numbers) and so read back. Equal arguments still give equal tokens.
            tool_args_hash: trajectory.tool_args_hash === null ? null : protector.pseudonym('tool_args_hash', trajectory.tool_args_hash),
          },
    producer: { service: protector.scrubId(event.producer.service), sdk: protector.scrubId(event.producer.sdk), host: scrubIdOrNull(event.producer.host, protector) },
    input_hash: hash,
    input_json: full && prot ? JSON.stringify(prot.value) : null,
    input_fields: prot?.fields ?? {},
    output: {
      decision: names.decision,
      confidence: event.output.confidence,
      scores: minimal ? {} : scrubKeys(event.output.scores, protector),
      token_logprobs: full ? event.output.token_logprobs : null,
      // JSON through the field rules; JSON the rules cannot walk (cut off, a `constructor` key) is
      // withheld (null): scanned as text only, its named fields would pass as they are.
      output_json: full && event.output.output_json !== null ? protector.protectJsonText(event.output.output_json) : null,
    },
    attributes: minimal ? {} : protectLabels(event.attributes, protector),
    tier: cls.tier,
    sample_rate: cls.sampleRate,
    policy_version: policyId,
    policy_rule: cls.rule,
    pii_key_id: minimal ? null : protector.keyId,
    source,
  };
}

interface Accepted {
  event: InferenceEventRecord;
  input: unknown;
  hash: string;
}

/**
 * Avro doubles can carry NaN and infinities, which JSON producers cannot send and a ClickHouse
 * server's JSON rows turn into NULL or 0, so the same event would land differently per mode. A
 * log-probability may be -Infinity (probability 0); nothing else here (output or inference
 * parameters) may be other than finite. With the card detector on, none may be a valid card
 * number either (`personal_data_in_numbers`). One pass over each list for both checks.
 */
type NumberProblem = { reason: 'wrong_type' | 'personal_data_in_numbers'; message: string };

function wrong(message: string): NumberProblem {
  return { reason: 'wrong_type', message };
}

/**
 * These columns hold numbers, so a card number there (a producer's bug, a mislabelled field)
 * would be stored as it came, where the input's are tokenised. The number is not quoted.
 */
function card(cards: boolean, n: number | null, field: string): NumberProblem | undefined {
  return cards && n !== null && looksLikeCardNumber(n)
    ? { reason: 'personal_data_in_numbers', message: `${field} holds a valid payment card number; it is stored as a number, where no token can stand in for it (the value is not quoted)` }
    : undefined;
}

// `wrong` and `card` are module functions, not closures made per event: tsx wraps every named
// closure in a call that sets its name, which cost the gate 2% of its CPU here.
function numberProblem(event: InferenceEventRecord, cards: boolean): NumberProblem | undefined {
  const params = event.config?.params;
  if (params) {
    // Inference parameters are settings: a NaN temperature or an infinite threshold is a bug upstream.
    if (params.temperature !== null && !Number.isFinite(params.temperature)) return wrong(`config.params.temperature is ${params.temperature}, not a finite number`);
    if (params.top_p !== null && !Number.isFinite(params.top_p)) return wrong(`config.params.top_p is ${params.top_p}, not a finite number`);
    const inParams = card(cards, params.temperature, 'config.params.temperature') ?? card(cards, params.top_p, 'config.params.top_p') ?? card(cards, params.max_tokens, 'config.params.max_tokens');
    if (inParams) return inParams;
    for (const k in params.thresholds) {
      const v = params.thresholds[k]!;
      if (!Number.isFinite(v)) return wrong(`config.params.thresholds has a value that is not a finite number (${v})`);
      const c = card(cards, v, 'config.params.thresholds');
      if (c) return c;
    }
  }
  const output = event.output;
  if (output.confidence !== null && !Number.isFinite(output.confidence)) return wrong(`output.confidence is ${output.confidence}, not a finite number`);
  const inConfidence = card(cards, output.confidence, 'output.confidence');
  if (inConfidence) return inConfidence;
  for (const k in output.scores) {
    const v = output.scores[k]!;
    if (!Number.isFinite(v)) return wrong(`output.scores has a value that is not a finite number (${v})`);
    const c = card(cards, v, 'output.scores');
    if (c) return c;
  }
  const lp = output.token_logprobs;
  if (lp !== null) {
    for (const x of lp) {
      if (Number.isNaN(x) || x === Infinity) return wrong(`output.token_logprobs has ${x}`);
      const c = card(cards, x, 'output.token_logprobs');
      if (c) return c;
    }
  }
  return undefined;
}

function validate(
  bytes: Buffer | null,
  messageTs: number,
  deps: GateDeps,
): Result<Accepted> {
  const limits = deps.policy.doc.limits;
  const decoded = decodeEvent(bytes, deps.inputType, deps.schemas, limits.max_event_bytes);
  if (!decoded.ok) return decoded;
  const { event, input, producerHash } = decoded.value;
  // Checked against the Kafka record timestamp, so a replay next month decides the same way. A
  // record without one (-1, which librdkafka hands over as none) cannot be checked: refused on
  // either client alike, where the comparison with NaN let it through on one.
  if (!Number.isFinite(messageTs) || messageTs < 0) {
    return deadLetter('validate', 'timestamp_out_of_range', `the record has no timestamp (${String(messageTs)}) to check ts ${event.ts} against`);
  }
  if (event.ts < messageTs - limits.max_ts_skew_past_ms || event.ts > messageTs + limits.max_ts_skew_future_ms) {
    return deadLetter('validate', 'timestamp_out_of_range', `ts ${event.ts} is too far from the record's timestamp ${messageTs}`);
  }
  const badNumber = numberProblem(event, deps.policy.doc.pii.detectors.includes('card'));
  if (badNumber) return deadLetter('validate', badNumber.reason, badNumber.message);
  if (event.model.name.includes(':')) {
    // Its ref, registry://models/<name>:<version>, would be another model's: `fraud:eu` version 3
    // resolved to model `fraud` version `eu:3`. The registry refuses such names too.
    return deadLetter('validate', 'wrong_type', "model.name cannot contain ':' (it separates name and version in registry://models/<name>:<version>)");
  }
  // An event id is the sink's key for the decision and what parent ids name: rewritten to a
  // token, it would change with the key (a replay after a rotation written twice, old links
  // broken). Ids with personal data in them are refused instead; the value is not quoted.
  for (const [name, id] of [
    ['event_id', event.event_id],
    ['trajectory.parent_event_id', event.trajectory?.parent_event_id],
  ] as const) {
    if (id != null && deps.protector.scrubId(id) !== id) {
      return deadLetter('validate', 'personal_data_in_id', `${name} holds personal data (an address, a phone or card number ...); event ids must not: the SDK makes them UUIDs`);
    }
  }
  let hash: string;
  try {
    // input_json is the text `input` was parsed from; from the SDK it is already canonical.
    hash = inputHashOfText(event.input_json, input);
  } catch (err) {
    return deadLetter('validate', 'invalid_input', `input cannot be canonicalised: ${(err as Error).message}`);
  }
  if (producerHash && producerHash !== hash) {
    return deadLetter('validate', 'input_hash_mismatch', `input_hash ${producerHash} does not match the input (${hash})`);
  }
  return ok({ event, input, hash });
}

/** A kept event whose decision record is larger than a Kafka record may be. */
class RecordTooLargeError extends Error {
  constructor(bytes: number) {
    super(`the decision record would be ${bytes} bytes; a Kafka record holds at most ${MAX_RECORD_BYTES} (lower limits.max_event_bytes in the policy, or send less input)`);
  }
}

/**
 * One fetched batch in, everything to produce out: decision records, dead letters with the
 * original bytes, and exact count deltas. Pure apart from the clock: no Kafka, so tests call it
 * directly, and the transactional processor commits its output atomically with the offsets.
 */
export function processBatch(messages: KafkaMessage[], ctx: BatchContext, deps: GateDeps, stats?: GateStats): OutputRecord[] {
  const now = (deps.now ?? Date.now)();
  const decisions: Message[] = [];
  const dead: Message[] = [];
  const counts = new Map<string, DecisionCountsRecord>();
  const batchId = `${ctx.topic}/${ctx.partition}/${messages[0]?.offset ?? '0'}`;

  for (const m of messages) {
    let failure: { reason: string; message: string; step: string } | undefined;
    try {
      const result = validate(m.value, Number(m.timestamp), deps);
      if (!result.ok) {
        failure = result;
      } else {
        const { event, input, hash } = result.value;
        const cls = deps.policy.classify({
          model: event.model.name,
          endpoint: event.endpoint,
          decisionType: event.decision_type,
          tenant: event.tenant,
        });
        const kept = keep(sampleKey(event.trajectory?.trace_id, event.request_id, event.event_id), cls.sampleRate);
        // Everything that can throw runs before anything is added, so a failing event leaves
        // neither a decision nor a count behind, only its dead letter.
        // Scrubbed once for the record and the counts alike, so both group one endpoint together.
        const names: ScrubbedNames = {
          decision: deps.protector.scrub(event.output.decision),
          endpoint: deps.protector.scrubId(event.endpoint),
          decisionType: deps.protector.scrubId(event.decision_type),
        };
        const { decision, endpoint, decisionType } = names;
        let out: Message | undefined;
        if (kept) {
          const record = toDecisionRecord(event, input, hash, cls, deps.policy.id, deps.protector, names, {
            partition: ctx.partition,
            offset: Number(m.offset),
            gate_ts: now,
          });
          out = { key: record.trajectory?.trace_id ?? record.request_id, value: frame(deps.decisionType, record) };
          // A record Kafka would refuse fails the whole transaction, again at every retry.
          const bytes = recordBytes(out);
          if (bytes > MAX_RECORD_BYTES) throw new RecordTooLargeError(bytes);
        }
        const minute = Math.floor(event.ts / 60_000) * 60_000;
        const key = joinKey([minute, event.model.name, event.model.version, endpoint, decisionType, cls.tier, decision], '\u0000');
        if (out) decisions.push(out);
        let c = counts.get(key);
        if (!c) {
          c = {
            minute,
            model_name: event.model.name,
            model_version: event.model.version,
            endpoint,
            decision_type: decisionType,
            tier: cls.tier,
            decision,
            policy_version: deps.policy.id,
            kept: 0,
            dropped: 0,
            batch_id: batchId,
          };
          counts.set(key, c);
        }
        if (kept) c.kept++;
        else c.dropped++;
        if (stats) {
          if (kept) stats.kept++;
          else stats.dropped++;
        }
      }
    } catch (err) {
      // Input no step foresaw must not stop the gate: a batch that threw would be read again, and
      // fail again, for ever. The event goes to the dead-letter topic with its bytes instead.
      failure =
        err instanceof ForbiddenKeyError
          ? { reason: 'forbidden_key', message: err.message, step: 'protect' }
          : err instanceof RecordTooLargeError
            ? { reason: 'record_too_large', message: err.message, step: 'gate' }
            : { reason: 'unprocessable', message: `${(err as Error)?.name ?? 'Error'}: ${String((err as Error)?.message ?? err).slice(0, 300)}`, step: 'gate' };
    }
    if (failure) {
      dead.push(deadLetterMessage(m, ctx, failure, 'gate', now));
      if (stats) {
        stats.deadLettered++;
        stats.byReason[failure.reason] = (stats.byReason[failure.reason] ?? 0) + 1;
      }
    }
  }

  const countMessages: Message[] = [];
  for (const c of counts.values()) countMessages.push({ key: `${c.model_name}:${c.model_version}`, value: frame(deps.countsType, c) });
  return [
    { topic: deps.topics.decisions, messages: decisions },
    { topic: deps.topics.counts, messages: countMessages },
    { topic: deps.topics.deadLetters, messages: dead },
  ];
}
