-- v_decisions without memory that grows with every row read. LIMIT 1 BY keeps the key of every
-- row it has passed; over the table as it came, a query reading 6M decisions needed more than
-- 800 MiB, and the analyst's 4 GB limit was reached after a few hours of traffic at 10k/s. Read in
-- the order of the sorting key (ClickHouse merges the parts in order instead of sorting), the
-- same query fits in 200 MiB and runs faster: a duplicate sits next to its original. Same
-- columns, same rows; filters on model, version, ts and event_id still reach the table scan.
CREATE OR REPLACE VIEW v_decisions AS
SELECT
    event_id, request_id, ts, endpoint, decision_type, tenant,
    model_name, model_version, model_digest,
    concat('registry://models/', model_name, ':', model_version) AS model_ref,
    image_ref, image_digest, config_ref, temperature, top_p, max_tokens, thresholds, params_extra,
    preprocessing_ref, preprocessing_digest, environment_digest,
    input_hash, input_json, input_fields,
    decision, confidence, scores, token_logprobs, output_json,
    trace_id, step, parent_event_id, tool_name, tool_args_hash,
    producer_service, producer_sdk, producer_host, attributes,
    tier, sample_rate, 1 / sample_rate AS weight, policy_version, policy_rule, pii_key_id,
    resolved, unresolved_refs, digest_mismatches, artifacts, lineage, enriched_at
FROM decisions
ORDER BY model_name, model_version, ts, event_id
LIMIT 1 BY model_name, model_version, ts, event_id;
