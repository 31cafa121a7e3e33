-- Remediations (remediations.v1, written by `dlog remediate`): a decision is never changed; a
-- remediation is an event that references it. One row per message (a part of up to a few
-- thousand ids); a replay is identical to its original, so ReplacingMergeTree on the message's
-- identity collapses it and the views read with FINAL.
CREATE TABLE IF NOT EXISTS remediations
(
    event_id            String CODEC(ZSTD(1)),
    remediation_id      String CODEC(ZSTD(1)),
    part                UInt32,
    parts               UInt32,
    action              LowCardinality(String),
    reason              String CODEC(ZSTD(1)),
    actor               LowCardinality(String),
    ts                  DateTime64(3, 'UTC'),
    model_ref           LowCardinality(String),
    endpoint            LowCardinality(String),
    scope_since         Nullable(DateTime64(3, 'UTC')),
    scope_until         Nullable(DateTime64(3, 'UTC')),
    scope_filter        String CODEC(ZSTD(1)),
    exact_total         Nullable(UInt64),
    stored_total        UInt64,
    event_ids           Array(String) CODEC(ZSTD(1)),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),

    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (remediation_id, part)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per remediation: its scope and how many decisions its parts reference so far.
CREATE OR REPLACE VIEW v_remediations AS
SELECT
    remediation_id, any(action) AS action, any(reason) AS reason, any(actor) AS actor, min(ts) AS ts,
    any(model_ref) AS model_ref, any(endpoint) AS endpoint, any(scope_since) AS scope_since,
    any(scope_until) AS scope_until, any(scope_filter) AS scope_filter, any(exact_total) AS exact_total,
    any(stored_total) AS stored_total, any(parts) AS parts, count() AS parts_received,
    sum(length(event_ids)) AS decisions_referenced
FROM remediations FINAL
GROUP BY remediation_id;

-- One row per remediated decision and remediation:
--   SELECT * FROM v_remediated_decisions WHERE event_id = '...'
-- joins to v_decisions on event_id for the original, which stays as it was.
CREATE OR REPLACE VIEW v_remediated_decisions AS
SELECT r.remediation_id AS remediation_id, e AS event_id, r.action AS action, r.reason AS reason,
       r.actor AS actor, r.ts AS ts, r.model_ref AS model_ref
FROM remediations AS r FINAL
ARRAY JOIN r.event_ids AS e;
