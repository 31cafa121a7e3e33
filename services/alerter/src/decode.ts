import avro, { type Schema, type Type } from 'avsc';
import type { KafkaMessage } from 'kafkajs';
import { loadSchema, type EnrichedDecisionRecord } from '@dlog/contracts';
import type { DeadLetterObservation, DecisionObservation } from './aggregate.js';

/** The fields of an enriched decision the rules read. */
export const observedFields = ['ts', 'endpoint', 'model', 'output', 'sample_rate', 'resolved', 'unresolved_refs', 'digest_mismatches'] as const;
export type ObservedDecision = Pick<EnrichedDecisionRecord, (typeof observedFields)[number]>;

/**
 * The enriched-decision contract cut down to the observed fields, as a reader schema: Avro
 * resolution then skips the rest (input JSON, attributes, lineage ...) without building strings
 * or objects for them, while still walking every byte of the record.
 */
export function observationReaderType(): Type {
  const full = loadSchema('enriched-decision') as { fields: { name: string }[] };
  return avro.Type.forSchema({ ...full, fields: full.fields.filter((f) => (observedFields as readonly string[]).includes(f.name)) } as Schema);
}

/** The few fields the rules read from an enriched decision. */
export function toDecisionObservation(r: ObservedDecision): DecisionObservation {
  return {
    ts: r.ts,
    endpoint: r.endpoint,
    model: r.model.name,
    version: r.model.version,
    decision: r.output.decision,
    confidence: r.output.confidence,
    // The gate keeps a sampled record with probability sample_rate; it stands for 1/rate decisions.
    weight: r.sample_rate > 0 ? 1 / r.sample_rate : 1,
    resolved: r.resolved,
    unresolvedRefs: [...r.unresolved_refs, ...r.digest_mismatches],
  };
}

/**
 * A dead letter's bytes are whatever the producer sent (often unreadable), so its time is the
 * record's timestamp (when the gate refused it) and its reason the gate's `dlog.reason` header.
 */
export function toDeadLetterObservation(m: Pick<KafkaMessage, 'timestamp' | 'headers'>): DeadLetterObservation {
  const h = m.headers?.['dlog.reason'];
  const raw = Array.isArray(h) ? h[0] : h;
  const reason = raw === undefined ? 'unknown' : raw.toString();
  return { ts: Number(m.timestamp), reason: reason.length > 0 ? reason.slice(0, 100) : 'unknown' };
}
