-- Exact counts from the gate (decision.counts.v1): rows are deltas, totals are sums, so what
-- sampling dropped is still counted exactly.
--
-- One gate transaction (batch_id) gives one row per minute x model version x endpoint x
-- decision type x tier x decision. A replayed delta is identical to its original, so
-- ReplacingMergeTree over that whole identity collapses replays on merge, and the views read with
-- FINAL so a replay not yet merged is never summed twice. The sink also drops replays before
-- inserting (row_key, checked through its bloom filter) and sends insert_deduplication_token.
CREATE TABLE IF NOT EXISTS decision_counts
(
    minute          DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    model_name      LowCardinality(String),
    model_version   LowCardinality(String),
    endpoint        LowCardinality(String),
    decision_type   LowCardinality(String),
    tier            Enum8('full' = 1, 'standard' = 2, 'minimal' = 3),
    decision        LowCardinality(String),
    policy_version  LowCardinality(String),
    kept            UInt64,
    dropped         UInt64,
    batch_id        String CODEC(ZSTD(1)),
    -- batch_id plus the grouping columns: the identity of one delta, for the sink's replay check.
    row_key         String CODEC(ZSTD(1)),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta(8), ZSTD(1)),

    INDEX idx_row_key row_key TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (model_name, model_version, minute, endpoint, decision_type, tier, decision, policy_version, batch_id)
SETTINGS non_replicated_deduplication_window = 1000;
