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
