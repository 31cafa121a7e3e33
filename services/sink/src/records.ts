import type { DecisionRecordRecord } from '@dlog/contracts';

/** Wire shapes of the contracts the sink reads that @dlog/contracts does not type (yet). */

export interface ResolvedArtifactRecord {
  role: string;
  ref: string;
  kind: string;
  version: string;
  digest: string;
  registered_at: number;
}

export interface LineagePointerRecord {
  ref: string;
  kind: string;
  via: string;
  depth: number;
}

/** schemas/enriched-decision.avsc */
export interface EnrichedDecisionRecord extends DecisionRecordRecord {
  resolved: boolean;
  unresolved_refs: string[];
  digest_mismatches: string[];
  artifacts: ResolvedArtifactRecord[];
  lineage: LineagePointerRecord[];
  enriched_at: number;
}

/** schemas/artifact-event.avsc */
export interface ArtifactEventRecord {
  event_id: string;
  kind: string;
  ref: string;
  name: string;
  version: string;
  digest: string;
  uri: string | null;
  metadata: Record<string, string>;
  parents: string[];
  registered_at: number;
  registered_by: string;
}

/** schemas/deployment-event.avsc */
export interface DeploymentEventRecord {
  event_id: string;
  action: 'deploy' | 'canary' | 'rollback';
  endpoint: string;
  environment: string | null;
  model_ref: string;
  model_digest: string | null;
  previous_model_ref: string | null;
  image_ref: string | null;
  config_ref: string | null;
  traffic_share: number;
  ts: number;
  actor: string;
  reason: string | null;
}

/** schemas/alert.avsc */
export interface AlertRecord {
  alert_id: string;
  rule: string;
  severity: 'info' | 'warning' | 'critical';
  endpoint: string | null;
  model_name: string | null;
  model_version: string | null;
  window_start: number;
  window_end: number;
  summary: string;
  evidence: Record<string, string>;
  evidence_json: string | null;
  scope_command: string;
  ts: number;
}
