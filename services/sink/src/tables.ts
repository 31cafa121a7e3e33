import type { SchemaName } from '@dlog/contracts';
import type { DecisionCountsRecord } from '@dlog/contracts';
import type { AlertRecord, ArtifactEventRecord, DeploymentEventRecord, EnrichedDecisionRecord } from './records.js';
import { countsRowKey, toAlertRow, toArtifactRow, toCountsRow, toDecisionRow, toDeploymentRow, toRemediationRow, type MessagePosition, type Row } from './to-rows.js';
import type { RemediationEventRecord } from '@dlog/contracts';
import { loadSchema } from '@dlog/contracts';
import { decisionColumns, peekDecision, type AvroMapping } from './avro-rows.js';

/**
 * What the sink writes: one source topic per table, the contract it reads there, how a record
 * becomes a row, and the record's replay identity (key + time column) used to drop rows already
 * written when a batch's fate is unknown (after a restart, a rebalance or a failed insert).
 */
export interface TableSpec<T = any> {
  table: string;
  /** Source topic, without the configured prefix. */
  topic: string;
  schema: SchemaName;
  /** The message's place in its topic comes along for tables whose rows keep it (artifacts). */
  toRow(record: T, at: MessagePosition): Row;
  /** Replay identity of the record, as stored in `keyColumn`. */
  key(record: T): string;
  keyColumn: string;
  /** Event time in ms, stored in `timeColumn`: the replay check reads only that time range. */
  time(record: T): number;
  timeColumn: string;
  /**
   * Embedded only: records in the contract's own schema go to ClickHouse as Avro, undecoded;
   * `peek` reads the replay key and time from the body without decoding the rest.
   */
  avro?: { mapping: AvroMapping; peek(body: Buffer): { key: string; time: number } };
  /** Null values on this topic are compaction tombstones, not bad input. */
  tombstones?: boolean;
}

function spec<T>(s: TableSpec<T>): TableSpec<T> {
  return s;
}

export const sinkTables: readonly TableSpec[] = [
  spec<EnrichedDecisionRecord>({
    table: 'decisions',
    topic: 'decisions.enriched.v1',
    schema: 'enriched-decision',
    toRow: toDecisionRow,
    key: (r) => r.event_id,
    keyColumn: 'event_id',
    time: (r) => r.ts,
    timeColumn: 'ts',
    avro: { mapping: { schemaJson: JSON.stringify(loadSchema('enriched-decision')), columns: decisionColumns }, peek: peekDecision },
  }),
  spec<DecisionCountsRecord>({
    table: 'decision_counts',
    topic: 'decision.counts.v1',
    schema: 'decision-counts',
    toRow: toCountsRow,
    key: countsRowKey,
    keyColumn: 'row_key',
    time: (r) => r.minute,
    timeColumn: 'minute',
  }),
  spec<ArtifactEventRecord>({
    table: 'artifacts',
    topic: 'registry.artifacts',
    schema: 'artifact-event',
    toRow: toArtifactRow,
    key: (r) => r.event_id,
    keyColumn: 'event_id',
    time: (r) => r.registered_at,
    timeColumn: 'registered_at',
    tombstones: true,
  }),
  spec<DeploymentEventRecord>({
    table: 'deployments',
    topic: 'deployments.v1',
    schema: 'deployment-event',
    toRow: toDeploymentRow,
    key: (r) => r.event_id,
    keyColumn: 'event_id',
    time: (r) => r.ts,
    timeColumn: 'ts',
  }),
  spec<AlertRecord>({
    table: 'alerts',
    topic: 'alerts.v1',
    schema: 'alert',
    toRow: toAlertRow,
    key: (r) => r.alert_id,
    keyColumn: 'alert_id',
    time: (r) => r.ts,
    timeColumn: 'ts',
  }),
  spec<RemediationEventRecord>({
    table: 'remediations',
    topic: 'remediations.v1',
    schema: 'remediation-event',
    toRow: toRemediationRow,
    key: (r) => r.event_id,
    keyColumn: 'event_id',
    time: (r) => r.ts,
    timeColumn: 'ts',
  }),
];

/** The sink's dead-letter topic (without prefix): rows it could not decode or ClickHouse refused. */
export const deadLetterTopic = 'sink.dlq';
