-- Alerts raised by services/alerter (alerts.v1). alert_id is stable for the same rule, model
-- version and window, so it is the replay identity: ReplacingMergeTree on it, views with FINAL.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id        String CODEC(ZSTD(1)),
    rule            LowCardinality(String),
    severity        Enum8('info' = 1, 'warning' = 2, 'critical' = 3),
    endpoint        LowCardinality(String),
    model_name      LowCardinality(String),
    model_version   LowCardinality(String),
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    summary         String CODEC(ZSTD(1)),
    evidence        Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    evidence_json   Nullable(String) CODEC(ZSTD(3)),
    scope_command   String CODEC(ZSTD(1)),
    ts              DateTime64(3, 'UTC'),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),

    INDEX idx_alert_id alert_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (rule, alert_id)
SETTINGS non_replicated_deduplication_window = 1000;
