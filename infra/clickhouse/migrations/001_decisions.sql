-- One row per kept decision, flattened from decisions.enriched.v1 (schemas/enriched-decision.avsc).
--
-- Append-only: no code path updates or deletes a row; a remediation is a new event that references
-- the original. The only removal is the retention TTL below, which is policy, written here.
--
-- Layout choices:
-- * ORDER BY (model_name, model_version, ts, event_id): the audit questions start from a model
--   version and a time window ("which decisions did 2.4.1 make yesterday"). event_id last makes a
--   duplicate sit next to its original, so the deduplicating view can cut it cheaply.
-- * PARTITION BY month: a few dozen partitions a year; TTL and backfills touch whole months.
-- * bloom_filter skip indexes on the point-lookup ids (event_id, request_id, input_hash, trace_id):
--   `dlog trace <event_id>` and the sink's replay check read a handful of granules, not the month.
-- * Absent optional strings are '' (not NULL) so filters stay simple; NULL is kept where absence
--   differs from a value (confidence, sampling parameters, full-tier payloads).
-- * non_replicated_deduplication_window: the sink sends insert_deduplication_token = its Kafka
--   offset range, so a retried identical insert is dropped by ClickHouse itself.
--
-- Retention (TTL), per tier, counted from the decision's ts:
--   minimal   90 days  (counts-grade records: decision and refs only, kept for drift and scope)
--   standard  730 days (2 years: the audit horizon for most regulated decisions)
--   full      no TTL   (kept until an explicit retention decision; full-tier is opt-in and rare)
CREATE TABLE IF NOT EXISTS decisions
(
    event_id              String CODEC(ZSTD(1)),
    request_id            String CODEC(ZSTD(1)),
    ts                    DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    endpoint              LowCardinality(String),
    decision_type         LowCardinality(String),
    tenant                LowCardinality(String),

    model_name            LowCardinality(String),
    model_version         LowCardinality(String),
    model_digest          LowCardinality(String),
    image_ref             LowCardinality(String),
    image_digest          LowCardinality(String),
    config_ref            LowCardinality(String),
    temperature           Nullable(Float64),
    top_p                 Nullable(Float64),
    max_tokens            Nullable(Int32),
    thresholds            Map(LowCardinality(String), Float64),
    params_extra          Map(LowCardinality(String), String),
    preprocessing_ref     LowCardinality(String),
    preprocessing_digest  LowCardinality(String),
    environment_digest    LowCardinality(String),

    input_hash            String CODEC(ZSTD(1)),
    input_json            Nullable(String) CODEC(ZSTD(3)),
    input_fields          Map(LowCardinality(String), String) CODEC(ZSTD(1)),

    decision              LowCardinality(String),
    confidence            Nullable(Float64),
    scores                Map(LowCardinality(String), Float64),
    token_logprobs        Array(Float64) CODEC(ZSTD(1)),
    output_json           Nullable(String) CODEC(ZSTD(3)),

    trace_id              String CODEC(ZSTD(1)),
    step                  Nullable(Int32),
    parent_event_id       String CODEC(ZSTD(1)),
    tool_name             LowCardinality(String),
    tool_args_hash        String CODEC(ZSTD(1)),

    producer_service      LowCardinality(String),
    producer_sdk          LowCardinality(String),
    producer_host         LowCardinality(String),
    attributes            Map(LowCardinality(String), String),

    tier                  Enum8('full' = 1, 'standard' = 2, 'minimal' = 3),
    sample_rate           Float64,
    policy_version        LowCardinality(String),
    policy_rule           LowCardinality(String),
    pii_key_id            LowCardinality(String),
    source_partition      Int32,
    source_offset         Int64 CODEC(Delta(8), ZSTD(1)),
    gate_ts               DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),

    resolved              Bool,
    unresolved_refs       Array(String),
    digest_mismatches     Array(String),
    artifacts             Array(Tuple(
                              role LowCardinality(String),
                              ref String,
                              kind LowCardinality(String),
                              version String,
                              digest String,
                              registered_at DateTime64(3, 'UTC'))) CODEC(ZSTD(1)),
    lineage               Array(Tuple(
                              ref String,
                              kind LowCardinality(String),
                              via String,
                              depth UInt8)) CODEC(ZSTD(1)),
    enriched_at           DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    -- When the sink wrote the row: produce-to-queryable latency, and audits of the sink itself.
    ingested_at           DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta(8), ZSTD(1)),

    model_ref             String ALIAS concat('registry://models/', model_name, ':', model_version),
    weight                Float64 ALIAS 1 / sample_rate,

    INDEX idx_event_id   event_id   TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_request_id request_id TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_input_hash input_hash TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_trace_id   trace_id   TYPE bloom_filter(0.01)  GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (model_name, model_version, ts, event_id)
TTL toDateTime(ts) + INTERVAL 90 DAY DELETE WHERE tier = 'minimal',
    toDateTime(ts) + INTERVAL 730 DAY DELETE WHERE tier = 'standard'
SETTINGS non_replicated_deduplication_window = 1000;
