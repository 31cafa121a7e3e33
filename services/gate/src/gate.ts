import type { KafkaMessage, Message } from 'kafkajs';
import type { Type } from 'avsc';
import {
  encodeFramed,
  inputHashOfText,
  type DecisionCountsRecord,
  type DecisionRecordRecord,
  type InferenceEventRecord,
  type SchemaResolvers,
} from '@dlog/contracts';
import { deadLetterMessage, type BatchContext, type OutputRecord } from '@dlog/kafka';
import { decodeEvent } from './decode.js';
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

/** The record an analyst may see: what each tier keeps, after every personal-data rule. */
export function toDecisionRecord(
  event: InferenceEventRecord,
  input: unknown,
  hash: string,
  cls: Classification,
  policyId: string,
  protector: Protector,
  source: DecisionRecordRecord['source'],
): DecisionRecordRecord {
  const full = cls.tier === 'full';
  const minimal = cls.tier === 'minimal';
  const prot = minimal ? undefined : protector.protectInput(input);
  const attributes: Record<string, string> = {};
  if (!minimal) for (const k in event.attributes) attributes[protector.scrub(k)] = protector.scrub(event.attributes[k]!);
  // Every field spelled out (no object spread): one stable shape for the Avro writer, and the raw
  // input can never ride along by accident.
  return {
    event_id: event.event_id,
    request_id: event.request_id,
    ts: event.ts,
    endpoint: event.endpoint,
    decision_type: event.decision_type,
    tenant: event.tenant,
    model: event.model,
    image: event.image,
    config: event.config,
    preprocessing: event.preprocessing,
    environment_digest: event.environment_digest,
    trajectory: event.trajectory,
    producer: event.producer,
    input_hash: hash,
    input_json: full && prot ? JSON.stringify(prot.value) : null,
    input_fields: prot?.fields ?? {},
    output: {
      decision: protector.scrub(event.output.decision),
      confidence: event.output.confidence,
      scores: minimal ? {} : event.output.scores,
      token_logprobs: full ? event.output.token_logprobs : null,
      output_json: full && event.output.output_json !== null ? protector.scrub(event.output.output_json) : null,
    },
    attributes,
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

function validate(
  bytes: Buffer | null,
  messageTs: number,
  deps: GateDeps,
): Result<Accepted> {
  const limits = deps.policy.doc.limits;
  const decoded = decodeEvent(bytes, deps.inputType, deps.schemas, limits.max_event_bytes);
  if (!decoded.ok) return decoded;
  const { event, input, producerHash } = decoded.value;
  // Checked against the Kafka record timestamp, so a replay next month decides the same way.
  if (event.ts < messageTs - limits.max_ts_skew_past_ms || event.ts > messageTs + limits.max_ts_skew_future_ms) {
    return deadLetter('validate', 'timestamp_out_of_range', `ts ${event.ts} is too far from the record's timestamp ${messageTs}`);
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
    const result = validate(m.value, Number(m.timestamp), deps);
    let failure: { reason: string; message: string; step: string } | undefined;
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
      const kept = keep(sampleKey(event.trajectory?.trace_id, event.request_id), cls.sampleRate);
      try {
        if (kept) {
          const record = toDecisionRecord(event, input, hash, cls, deps.policy.id, deps.protector, {
            partition: ctx.partition,
            offset: Number(m.offset),
            gate_ts: now,
          });
          decisions.push({ key: record.trajectory?.trace_id ?? record.request_id, value: frame(deps.decisionType, record) });
        }
        const minute = Math.floor(event.ts / 60_000) * 60_000;
        const decision = deps.protector.scrub(event.output.decision);
        const key = `${minute}\u0000${event.model.name}\u0000${event.model.version}\u0000${event.endpoint}\u0000${event.decision_type}\u0000${cls.tier}\u0000${decision}`;
        let c = counts.get(key);
        if (!c) {
          c = {
            minute,
            model_name: event.model.name,
            model_version: event.model.version,
            endpoint: event.endpoint,
            decision_type: event.decision_type,
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
      } catch (err) {
        if (!(err instanceof ForbiddenKeyError)) throw err;
        failure = { reason: 'forbidden_key', message: err.message, step: 'protect' };
      }
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
