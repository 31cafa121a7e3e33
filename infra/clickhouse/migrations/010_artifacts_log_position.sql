-- The registry's rule is "the first registration of a ref in the log wins": the enricher and
-- `dlog register` read registry.artifacts in log order and keep the first digest of each ref
-- (packages/artifacts). Two registrations of one version written at the same moment both reach
-- the log; the second is refused by every reader. The table kept no log position, so readers of
-- ClickHouse guessed: the lowest digest (LIMIT 1 BY ref over the sorting key), or the earliest
-- registered_at (the registering client's clock), and lineage merged the parents of both digests.
-- From here the sink writes each registration's partition and offset, and the views below keep
-- the one every reader keeps.
--
-- The position joins the sorting key, so two registrations of the same (ref, digest) at two
-- offsets stay two rows and merges cannot keep the later one's offset only; a replay of the same
-- message (same offset) still collapses. ClickHouse lets a sorting key grow only by columns added
-- in the same statement and without a default: rows written before this migration read 0 for
-- both, and source_known (false for them, true from the sink from now on) tells them apart from
-- a real offset 0.
ALTER TABLE artifacts
    ADD COLUMN IF NOT EXISTS source_partition Int32,
    ADD COLUMN IF NOT EXISTS source_offset Int64,
    MODIFY ORDER BY (ref, digest, source_partition, source_offset);

ALTER TABLE artifacts ADD COLUMN IF NOT EXISTS source_known Bool DEFAULT false;

-- Every registration, with its place in the log and what readers made of it:
--   registered  the first of its ref in the log: what the enricher, `dlog register`, trace,
--               lineage and deploy use (v_artifacts holds these alone);
--   repeated    the same registration again (a retry, or a simultaneous identical one): the same
--               digest, kind, uri, name, version, parents and metadata (parents and metadata as
--               sets; an environment is its digest, so for it kind and uri alone): no effect;
--   refused     another digest for a version already registered, or the same digest saying
--               something else of it: ignored by every reader (packages/artifacts compares the
--               same way), kept here because it is an audit finding (who tried to change what a
--               version is).
--
-- Log order is (partition, offset); the topic has one partition, so that is its order. Rows
-- written before migration 010 have no position: they were read from the same log by a sink
-- before any row that has one, so they sort first; among themselves by when the sink wrote them
-- (ingested_at: a partition is written in log order), then by registered_at (the client's clock,
-- the only hint left when both came in one sink batch), then event_id so every reader agrees.
CREATE OR REPLACE VIEW v_artifact_registrations AS
SELECT
    event_id, kind, ref, name, version, digest, uri, metadata, parents, registered_at, registered_by,
    if(source_known, source_partition, NULL) AS source_partition,
    if(source_known, source_offset, NULL) AS source_offset,
    multiIf(nth = 1, 'registered', digest = kept_digest AND content = kept_content, 'repeated', 'refused') AS outcome
FROM
(
    SELECT
        event_id, kind, ref, name, version, digest, uri, metadata, parents, registered_at, registered_by,
        source_known, source_partition, source_offset, content,
        row_number() OVER w AS nth,
        first_value(digest) OVER w AS kept_digest,
        first_value(content) OVER w AS kept_content
    FROM
    (
        SELECT *,
            tuple(
                toString(kind),
                uri,
                if(kind = 'environment', '', toString(name)),
                if(kind = 'environment', '', version),
                if(kind = 'environment', [], arraySort(arrayDistinct(parents))),
                if(kind = 'environment', [], arraySort(arrayMap((k, v) -> (toString(k), v), mapKeys(metadata), mapValues(metadata))))
            ) AS content
        FROM artifacts FINAL
    )
    WINDOW w AS (PARTITION BY ref ORDER BY source_known, source_partition, source_offset, ingested_at, registered_at, event_id)
);

-- The registry as every reader keeps it: one row per artifact version, its first registration.
-- (Before migration 010 a second digest for a version showed here as a second row; it is in
-- v_artifact_registrations as `refused`.) Its own window, in the same log order as
-- v_artifact_registrations (change both together): the comparison of contents there costs a
-- sort of every row's parents and metadata, which the kept registration alone does not need, and
-- v_lineage runs this view over the whole table.
CREATE OR REPLACE VIEW v_artifacts AS
SELECT event_id, kind, ref, name, version, digest, uri, metadata, parents, registered_at, registered_by
FROM
(
    SELECT
        event_id, kind, ref, name, version, digest, uri, metadata, parents, registered_at, registered_by,
        row_number() OVER (PARTITION BY ref ORDER BY source_known, source_partition, source_offset, ingested_at, registered_at, event_id) AS nth
    FROM artifacts FINAL
)
WHERE nth = 1;

-- The lineage graph of the kept registrations, one edge per artifact and parent, with both ends
-- described; parent_kind is '' while the parent is not registered (yet). Read from the kept
-- registration's own parents: lineage_edges holds the edges of every registration, refused ones
-- included, and is the raw graph, not the registry's. Only a filter on child_ref reaches below
-- v_artifacts' window; the parent side reads the whole registry each time, so `dlog lineage` and
-- `dlog trace` walk v_artifacts by named refs instead (packages/cli lineage.ts).
CREATE OR REPLACE VIEW v_lineage AS
SELECT
    c.ref AS child_ref,
    c.kind AS child_kind,
    c.digest AS child_digest,
    c.parent_ref AS parent_ref,
    p.kind AS parent_kind,
    p.version AS parent_version,
    p.digest AS parent_digest,
    c.registered_at AS registered_at
FROM
(
    SELECT ref, kind, digest, arrayJoin(arrayDistinct(parents)) AS parent_ref, registered_at FROM v_artifacts
) AS c
LEFT JOIN
(
    SELECT ref, kind, version, digest FROM v_artifacts
) AS p ON p.ref = c.parent_ref;
