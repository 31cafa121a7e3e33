-- The artifact registry as rows (registry.artifacts, compacted, event-sourced), and the lineage
-- graph derived from it.
--
-- A (ref, digest) pair never changes, so a replay of the compacted topic re-sends identical rows:
-- ReplacingMergeTree on (ref, digest) collapses them and the views read with FINAL. A second
-- digest for the same ref (refused by `dlog register`, but possible from a foreign producer)
-- stays visible as a second row: that is an audit finding, not something to hide.
CREATE TABLE IF NOT EXISTS artifacts
(
    event_id        String CODEC(ZSTD(1)),
    kind            LowCardinality(String),
    ref             String CODEC(ZSTD(1)),
    name            LowCardinality(String),
    version         String CODEC(ZSTD(1)),
    digest          String CODEC(ZSTD(1)),
    uri             String CODEC(ZSTD(1)),
    metadata        Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    parents         Array(String) CODEC(ZSTD(1)),
    registered_at   DateTime64(3, 'UTC'),
    registered_by   LowCardinality(String),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),

    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (ref, digest)
SETTINGS non_replicated_deduplication_window = 1000;

-- One edge per (artifact, parent): "this model was trained on that dataset / built from that
-- commit". Filled by the materialized view below from every artifact insert, so the sink writes
-- one table and the edges can never disagree with the registrations.
CREATE TABLE IF NOT EXISTS lineage_edges
(
    child_ref       String CODEC(ZSTD(1)),
    child_kind      LowCardinality(String),
    child_digest    String CODEC(ZSTD(1)),
    parent_ref      String CODEC(ZSTD(1)),
    registered_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (child_ref, parent_ref, child_digest);

CREATE MATERIALIZED VIEW IF NOT EXISTS lineage_edges_mv TO lineage_edges AS
SELECT
    ref AS child_ref,
    kind AS child_kind,
    digest AS child_digest,
    arrayJoin(parents) AS parent_ref,
    registered_at
FROM artifacts;
