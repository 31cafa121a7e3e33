/** Why an event went to the dead-letter topic. Stable codes: alerting and dashboards key on them. */
export type ReasonCode =
  | 'empty_message'
  | 'payload_too_large'
  | 'wrong_magic_byte'
  | 'unknown_schema_id'
  | 'incompatible_schema'
  | 'truncated_avro'
  | 'invalid_utf8'
  | 'invalid_json'
  | 'missing_field'
  | 'wrong_type'
  | 'forbidden_key'
  | 'invalid_input'
  | 'input_hash_mismatch'
  | 'timestamp_out_of_range'
  /** An event or parent id with personal data in it (ids are keys: they cannot be tokenised). */
  | 'personal_data_in_id'
  /** A card number among the numbers stored as numbers (scores, thresholds, log-probabilities): no token can stand in. */
  | 'personal_data_in_numbers'
  /** A message that stopped a gate thread on its own, twice (see GateThreads.process). */
  | 'gate_thread_failed'
  /** A kept event whose decision record would be larger than a Kafka record may be. */
  | 'record_too_large'
  /** Anything the steps did not foresee (a bug, an input no check anticipated): never fatal. */
  | 'unprocessable';

export type Step = 'decode' | 'validate' | 'protect' | 'gate';

export type Result<T> = { ok: true; value: T } | { ok: false; reason: ReasonCode; message: string; step: Step };

export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

export function deadLetter<T>(step: Step, reason: ReasonCode, message: string): Result<T> {
  return { ok: false, reason, message, step };
}
