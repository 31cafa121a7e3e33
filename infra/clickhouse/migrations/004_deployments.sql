-- What served each endpoint when (deployments.v1): deploy, canary, rollback. Events are facts;
-- a replay is identical to its original, so ReplacingMergeTree on the event's identity collapses
-- it and the view reads with FINAL.
CREATE TABLE IF NOT EXISTS deployments
(
    event_id            String CODEC(ZSTD(1)),
    action              Enum8('deploy' = 1, 'canary' = 2, 'rollback' = 3),
    endpoint            LowCardinality(String),
    environment         LowCardinality(String),
    model_ref           LowCardinality(String),
    model_digest        LowCardinality(String),
    previous_model_ref  LowCardinality(String),
    image_ref           LowCardinality(String),
    config_ref          LowCardinality(String),
    traffic_share       Float64,
    ts                  DateTime64(3, 'UTC'),
    actor               LowCardinality(String),
    reason              String CODEC(ZSTD(1)),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),

    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (endpoint, ts, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
