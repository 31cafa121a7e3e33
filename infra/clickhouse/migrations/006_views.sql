-- Views for analysts and auditors: the questions, without our internals (sink bookkeeping,
-- replays not yet merged, Kafka positions). Query these; the tables behind them may change shape
-- in later migrations, the views keep their columns.

-- Every kept decision once, with its statistical weight (1 / sample_rate: a decision kept at rate
-- 0.1 stands for 10). The sink already keeps replays out; LIMIT 1 BY the full sorting key is the
-- last guard against an upstream duplicate (an enricher replay), and because it is the sorting key
-- ClickHouse still pushes filters on model, version, ts and event_id down into the table scan.
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
LIMIT 1 BY model_name, model_version, ts, event_id;

-- Exact totals per minute, model version, endpoint, decision type, tier and decision: what the
-- gate kept plus what sampling dropped, from the gate's counts (never estimated from weights).
CREATE OR REPLACE VIEW v_decision_totals AS
SELECT
    minute, model_name, model_version, endpoint, decision_type, tier, decision,
    sum(c.kept) AS kept,
    sum(c.dropped) AS dropped,
    sum(c.kept + c.dropped) AS total
FROM decision_counts AS c FINAL
GROUP BY minute, model_name, model_version, endpoint, decision_type, tier, decision;

-- The registry: one row per artifact version (a second digest for a version shows as two rows).
CREATE OR REPLACE VIEW v_artifacts AS
SELECT event_id, kind, ref, name, version, digest, uri, metadata, parents, registered_at, registered_by
FROM artifacts FINAL;

-- The lineage graph, one edge per artifact and parent, with both ends described. parent_kind is
-- '' while the parent is not registered (yet).
CREATE OR REPLACE VIEW v_lineage AS
SELECT
    e.child_ref AS child_ref,
    e.child_kind AS child_kind,
    e.child_digest AS child_digest,
    e.parent_ref AS parent_ref,
    p.kind AS parent_kind,
    p.version AS parent_version,
    p.digest AS parent_digest,
    e.registered_at AS registered_at
FROM lineage_edges AS e FINAL
LEFT JOIN
(
    SELECT ref, kind, version, digest FROM artifacts FINAL LIMIT 1 BY ref
) AS p ON p.ref = e.parent_ref;

-- From a decision back to everything behind it, in one query: one row per ancestor (training
-- dataset, code commit, base model ...), with the decision artifact it is reached through.
--   SELECT * FROM v_decision_lineage WHERE event_id = '...' ORDER BY depth
CREATE OR REPLACE VIEW v_decision_lineage AS
SELECT
    event_id, ts, model_name, model_version,
    l.via AS via, l.ref AS ancestor_ref, l.kind AS ancestor_kind, l.depth AS depth
FROM v_decisions
ARRAY JOIN lineage AS l;

-- What served each endpoint when.
CREATE OR REPLACE VIEW v_deployments AS
SELECT event_id, action, endpoint, environment, model_ref, model_digest, previous_model_ref,
       image_ref, config_ref, traffic_share, ts, actor, reason
FROM deployments FINAL;

CREATE OR REPLACE VIEW v_alerts AS
SELECT alert_id, rule, severity, endpoint, model_name, model_version, window_start, window_end,
       summary, evidence, evidence_json, scope_command, ts
FROM alerts FINAL;
