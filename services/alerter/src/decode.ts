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

/** What the alerter reads of the gate's exact counts (decision.counts.v1). */
export interface GateCountsObservation {
  /** Start of the minute of the decisions' event time. */
  minute: number;
  kept: number;
  dropped: number;
}

/** The decision-counts contract cut down to minute, kept and dropped, as a reader schema. */
export function countsReaderType(): Type {
  const full = loadSchema('decision-counts') as { fields: { name: string }[] };
  return avro.Type.forSchema({ ...full, fields: full.fields.filter((f) => ['minute', 'kept', 'dropped'].includes(f.name)) } as Schema);
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

function headerText(m: Pick<KafkaMessage, 'headers'>, name: string): string | undefined {
  const h = m.headers?.[name];
  const raw = Array.isArray(h) ? h[0] : h;
  return raw === undefined ? undefined : raw.toString();
}

/**
 * A dead letter's bytes are whatever the producer sent (often unreadable), so its reason is the
 * gate's `dlog.reason` header and its time the original record's (`dlog.source.timestamp`, which
 * the gate copies): when the producer sent it, near the time its decision would have had (not
 * after a producer's own backlog, which the refused bytes may not tell). By the refusal time
 * instead, a gate working off a backlog put every refusal of the outage into the current window,
 * against minutes of decisions, and paged.
 * The refusal time stands in when the header is missing or names a time after the refusal.
 */
export function toDeadLetterObservation(m: Pick<KafkaMessage, 'timestamp' | 'headers'>): DeadLetterObservation {
  const refused = Number(m.timestamp);
  const sourceText = headerText(m, 'dlog.source.timestamp');
  const source = sourceText !== undefined && /^\d{1,15}$/.test(sourceText) ? Number(sourceText) : undefined;
  const reason = headerText(m, 'dlog.reason') ?? '';
  return { ts: source !== undefined && source <= refused ? source : refused, reason: reason.length > 0 ? reason.slice(0, 100) : 'unknown' };
}
