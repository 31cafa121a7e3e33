import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroInsertSql, splitForReaders, type AvroMapping } from './avro-rows.js';

const mapping: AvroMapping = { schemaJson: '{}', columns: [['event_id', 'event_id'], ['tenant', "ifNull(tenant, '')"]] };

describe('splitForReaders', () => {
  const rows = (n: number) => Array.from({ length: n }, (_, i) => i);
  const sizes = (parts: number[][]) => parts.map((p) => p.length);

  it('gives each reader a file when there are rows enough, never more files than readers, rows in order', () => {
    assert.deepEqual(sizes(splitForReaders(rows(50_000), 2)), [25_000, 25_000]);
    assert.deepEqual(sizes(splitForReaders(rows(50_000), 4)), [12_500, 12_500, 12_500, 12_500]);
    assert.deepEqual(sizes(splitForReaders(rows(50_000), 1)), [50_000]);
    assert.deepEqual(splitForReaders(rows(50_001), 2).flat(), rows(50_001));
  });
  it('keeps small batches in one file, and at least the minimum rows in each', () => {
    assert.deepEqual(sizes(splitForReaders(rows(0), 2)), [0]);
    assert.deepEqual(sizes(splitForReaders(rows(19_999), 2)), [19_999]);
    assert.deepEqual(sizes(splitForReaders(rows(20_000), 2)), [10_000, 10_000]);
    assert.deepEqual(sizes(splitForReaders(rows(900), 8, 300)), [300, 300, 300]);
    assert.deepEqual(sizes(splitForReaders(rows(401), 2, 200)), [201, 200]);
  });
});

describe('avroInsertSql', () => {
  it('reads one file by its path, and several through one brace pattern with a thread each', () => {
    const one = avroInsertSql('decisions', mapping, ['/spool/decisions-0.avro'], 'tok');
    assert.match(one, /FROM file\('\/spool\/decisions-0\.avro', 'Avro'\)/);
    assert.match(one, /max_threads = 1/);
    const two = avroInsertSql('decisions', mapping, ['/spool/decisions-0.avro', '/spool/decisions-1.avro'], "it's");
    assert.match(two, /FROM file\('\/spool\/\{decisions-0\.avro,decisions-1\.avro\}', 'Avro'\)/);
    assert.match(two, /max_threads = 2/);
    assert.match(two, /insert_deduplication_token = 'it\\'s'/);
    assert.match(two, /^INSERT INTO decisions \(event_id, tenant\) SELECT event_id, ifNull\(tenant, ''\) FROM/);
  });
  it('refuses files in different directories or with pattern characters in their names', () => {
    assert.throws(() => avroInsertSql('decisions', mapping, ['/a/x.avro', '/b/y.avro'], 't'), /share a directory/);
    assert.throws(() => avroInsertSql('decisions', mapping, ['/a/x,1.avro', '/a/y.avro'], 't'), /plain names/);
    assert.throws(() => avroInsertSql('decisions', mapping, [], 't'), /no file/);
  });
});
