-- Each sink batch lands as one part. Above 10 MiB (ClickHouse's default min_bytes_for_wide_part)
-- a part is written "wide": a file, a compression stream and marks for every column and
-- subcolumn (~150 here), which cost the insert a fixed ~250 ms on top of the rows (a 10k-row
-- batch: 340 ms wide, 120 ms compact; 50k rows: 480 ms against 320 ms; scratch, embedded). The
-- sink's batches (64 MiB at most by default) are written compact; parts that merges make past
-- 256 MiB are wide, as large parts should be for reading single columns. Only the on-disk layout
-- of small parts changes; rows and queries are the same.
ALTER TABLE decisions MODIFY SETTING min_bytes_for_wide_part = 268435456;
