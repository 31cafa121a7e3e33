import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { avroFileCount, avroInsertSql, type AvroMapping } from './avro-rows.js';

const mapping: AvroMapping = { schemaJson: '{}', columns: [['event_id', 'event_id'], ['tenant', "ifNull(tenant, '')"]] };

describe('avroFileCount', () => {
  it('gives each reader a file when there are rows enough, and never more files than readers', () => {
    assert.equal(avroFileCount(50_000, 2), 2);
    assert.equal(avroFileCount(50_000, 4), 4);
    assert.equal(avroFileCount(50_000, 1), 1);
  });
  it('keeps small batches in one file, and at least the minimum rows in each', () => {
    assert.equal(avroFileCount(0, 2), 1);
    assert.equal(avroFileCount(19_999, 2), 1);
    assert.equal(avroFileCount(20_000, 2), 2);
    assert.equal(avroFileCount(900, 8, 300), 3);
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
