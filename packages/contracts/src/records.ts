/**
 * Wire shapes of the Avro contracts in schemas/, as avsc reads and writes them (unions of null
 * and one type are plain nullable values; timestamp-millis are numbers).
 */

export interface ModelRefRecord {
  name: string;
  version: string;
  digest: string | null;
}

export interface ImageRefRecord {
  ref: string;
  digest: string | null;
}

export interface InferenceParamsRecord {
  temperature: number | null;
  top_p: number | null;
  max_tokens: number | null;
  thresholds: Record<string, number>;
  extra: Record<string, string>;
}

export interface ConfigRefRecord {
  ref: string;
  params: InferenceParamsRecord;
}

export interface PreprocessingRefRecord {
  ref: string;
  digest: string | null;
}

export interface DecisionOutputRecord {
  decision: string;
  confidence: number | null;
  scores: Record<string, number>;
  token_logprobs: number[] | null;
  output_json: string | null;
}

export interface TrajectoryStepRecord {
  trace_id: string;
  step: number;
  parent_event_id: string | null;
  tool_name: string | null;
  tool_args_hash: string | null;
}

export interface ProducerInfoRecord {
  service: string;
  sdk: string;
  host: string | null;
}

/** schemas/inference-event.avsc */
export interface InferenceEventRecord {
  event_id: string;
  request_id: string;
  ts: number;
  endpoint: string;
  decision_type: string;
  tenant: string | null;
  model: ModelRefRecord;
  image: ImageRefRecord | null;
  config: ConfigRefRecord | null;
  preprocessing: PreprocessingRefRecord | null;
  environment_digest: string | null;
  input_json: string;
  input_hash: string;
  output: DecisionOutputRecord;
  trajectory: TrajectoryStepRecord | null;
  producer: ProducerInfoRecord;
  attributes: Record<string, string>;
}

export type TierName = 'full' | 'standard' | 'minimal';

/** schemas/decision-record.avsc */
export interface DecisionRecordRecord extends Omit<InferenceEventRecord, 'input_json'> {
  input_json: string | null;
  input_fields: Record<string, string>;
  tier: TierName;
  sample_rate: number;
  policy_version: string;
  policy_rule: string;
  pii_key_id: string | null;
  source: { partition: number; offset: number; gate_ts: number };
}

/** schemas/decision-counts.avsc */
export interface DecisionCountsRecord {
  minute: number;
  model_name: string;
  model_version: string;
  endpoint: string;
  decision_type: string;
  tier: TierName;
  decision: string;
  policy_version: string;
  kept: number;
  dropped: number;
  batch_id: string;
}

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
export type ArtifactKind = 'model' | 'dataset' | 'image' | 'config' | 'code' | 'environment' | 'policy' | 'preprocessing';

export interface ArtifactEventRecord {
  event_id: string;
  kind: ArtifactKind;
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

/** schemas/remediation-event.avsc */
export interface RemediationEventRecord {
  event_id: string;
  remediation_id: string;
  part: number;
  parts: number;
  action: string;
  reason: string;
  actor: string;
  ts: number;
  scope: {
    model_ref: string;
    endpoint: string | null;
    since: number | null;
    until: number | null;
    filter: string | null;
    exact_total: number | null;
    stored_total: number;
  };
  event_ids: string[];
}

