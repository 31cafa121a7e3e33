import { joinKey, type DecisionCountsRecord, type RemediationEventRecord } from '@dlog/contracts';
import type { AlertRecord, ArtifactEventRecord, DeploymentEventRecord, EnrichedDecisionRecord } from './records.js';

/**
 * Contract record → ClickHouse row, one pure function per table (infra/clickhouse/migrations).
 * Absent optional strings become '' (the tables' convention); NULL stays only where absence
 * means something (confidence, sampling parameters, full-tier payloads). Timestamps stay ms
 * numbers, which DateTime64(3) reads as such.
 */

export type Row = Record<string, unknown>;

/**
 * Floats for a JSON row. JSON.stringify writes -Infinity (a log-probability of a token with
 * probability 0, which the gate lets through) as null, and ClickHouse reads null in an
 * Array(Float64) as 0, probability 1: the server path stored the opposite of what the embedded Avro
 * path stores. ClickHouse reads the quoted words as the values they name.
 */
export function jsonFloats(xs: number[]): (number | string)[] {
  for (const x of xs) {
    if (!Number.isFinite(x)) return xs.map((v) => (Number.isFinite(v) ? v : Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf'));
  }
  return xs;
}

/** Where a record was read: its source topic's partition and offset (kafkajs gives offsets as strings). */
export interface MessagePosition {
  partition: number;
  offset: string;
}

export function toDecisionRow(r: EnrichedDecisionRecord): Row {
  const params = r.config?.params;
  const t = r.trajectory;
  return {
    event_id: r.event_id,
    request_id: r.request_id,
    ts: r.ts,
    endpoint: r.endpoint,
    decision_type: r.decision_type,
    tenant: r.tenant ?? '',
    model_name: r.model.name,
    model_version: r.model.version,
    model_digest: r.model.digest ?? '',
    image_ref: r.image?.ref ?? '',
    image_digest: r.image?.digest ?? '',
    config_ref: r.config?.ref ?? '',
    temperature: params?.temperature ?? null,
    top_p: params?.top_p ?? null,
    max_tokens: params?.max_tokens ?? null,
    thresholds: params?.thresholds ?? {},
    params_extra: params?.extra ?? {},
    preprocessing_ref: r.preprocessing?.ref ?? '',
    preprocessing_digest: r.preprocessing?.digest ?? '',
    environment_digest: r.environment_digest ?? '',
    input_hash: r.input_hash,
    input_json: r.input_json,
    input_fields: r.input_fields,
    decision: r.output.decision,
    confidence: r.output.confidence,
    scores: r.output.scores,
    token_logprobs: jsonFloats(r.output.token_logprobs ?? []),
    output_json: r.output.output_json,
    trace_id: t?.trace_id ?? '',
    step: t ? t.step : null,
    parent_event_id: t?.parent_event_id ?? '',
    tool_name: t?.tool_name ?? '',
    tool_args_hash: t?.tool_args_hash ?? '',
    producer_service: r.producer.service,
    producer_sdk: r.producer.sdk,
    producer_host: r.producer.host ?? '',
    attributes: r.attributes,
    tier: r.tier,
    sample_rate: r.sample_rate,
    policy_version: r.policy_version,
    policy_rule: r.policy_rule,
    pii_key_id: r.pii_key_id ?? '',
    source_partition: r.source.partition,
    source_offset: r.source.offset,
    gate_ts: r.source.gate_ts,
    resolved: r.resolved,
    unresolved_refs: r.unresolved_refs,
    digest_mismatches: r.digest_mismatches,
    // Same field names as the named tuples in the table: passed through without copying.
    artifacts: r.artifacts,
    lineage: r.lineage,
    enriched_at: r.enriched_at,
  };
}

/** The identity of one counts delta: its gate transaction plus the grouping it counts. */
export function countsRowKey(r: DecisionCountsRecord): string {
  // joinKey: the plain \u001f join for every ordinary value, so keys already stored still match.
  return joinKey([r.batch_id, r.minute, r.model_name, r.model_version, r.endpoint, r.decision_type, r.tier, r.decision, r.policy_version], '\u001f');
}

export function toCountsRow(r: DecisionCountsRecord): Row {
  return {
    minute: r.minute,
    model_name: r.model_name,
    model_version: r.model_version,
    endpoint: r.endpoint,
    decision_type: r.decision_type,
    tier: r.tier,
    decision: r.decision,
    policy_version: r.policy_version,
    kept: r.kept,
    dropped: r.dropped,
    batch_id: r.batch_id,
    row_key: countsRowKey(r),
  };
}

/**
 * A registration keeps its place in registry.artifacts: the first registration of a ref in the
 * log is the one every reader keeps, and only the position says which came first (the views of
 * migration 010 read it; registered_at is the registering client's clock).
 */
export function toArtifactRow(r: ArtifactEventRecord, at: MessagePosition): Row {
  return {
    event_id: r.event_id,
    kind: r.kind,
    ref: r.ref,
    name: r.name,
    version: r.version,
    digest: r.digest,
    uri: r.uri ?? '',
    metadata: r.metadata,
    parents: r.parents,
    registered_at: r.registered_at,
    registered_by: r.registered_by,
    source_partition: at.partition,
    // A string, as kafkajs gives it: ClickHouse reads Int64 from it with no precision lost.
    source_offset: at.offset,
    source_known: true,
  };
}

export function toDeploymentRow(r: DeploymentEventRecord): Row {
  return {
    event_id: r.event_id,
    action: r.action,
    endpoint: r.endpoint,
    environment: r.environment ?? '',
    model_ref: r.model_ref,
    model_digest: r.model_digest ?? '',
    previous_model_ref: r.previous_model_ref ?? '',
    image_ref: r.image_ref ?? '',
    config_ref: r.config_ref ?? '',
    traffic_share: r.traffic_share,
    ts: r.ts,
    actor: r.actor,
    reason: r.reason ?? '',
  };
}

export function toAlertRow(r: AlertRecord): Row {
  return {
    alert_id: r.alert_id,
    rule: r.rule,
    severity: r.severity,
    endpoint: r.endpoint ?? '',
    model_name: r.model_name ?? '',
    model_version: r.model_version ?? '',
    window_start: r.window_start,
    window_end: r.window_end,
    summary: r.summary,
    evidence: r.evidence,
    evidence_json: r.evidence_json,
    scope_command: r.scope_command,
    ts: r.ts,
  };
}

export function toRemediationRow(r: RemediationEventRecord): Row {
  return {
    event_id: r.event_id,
    remediation_id: r.remediation_id,
    part: r.part,
    parts: r.parts,
    action: r.action,
    reason: r.reason,
    actor: r.actor,
    ts: r.ts,
    model_ref: r.scope.model_ref,
    endpoint: r.scope.endpoint ?? '',
    scope_since: r.scope.since,
    scope_until: r.scope.until,
    scope_filter: r.scope.filter ?? '',
    exact_total: r.scope.exact_total,
    stored_total: r.scope.stored_total,
    event_ids: r.event_ids,
  };
}
