import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { avroType, loadSchema, schemasDir } from './schemas.js';

describe('contracts in schemas/', () => {
  it('every .avsc parses as Avro', () => {
    const files = readdirSync(schemasDir).filter((f) => f.endsWith('.avsc'));
    assert.ok(files.length >= 7, `expected the contracts, found ${files.join(', ')}`);
    for (const f of files) assert.doesNotThrow(() => avroType(f.replace(/\.avsc$/, '')), f);
  });

  it('the enriched decision starts with exactly the decision record fields', () => {
    const record = loadSchema('decision-record') as unknown as { fields: unknown[] };
    const enriched = loadSchema('enriched-decision') as unknown as { fields: unknown[] };
    assert.deepEqual(enriched.fields.slice(0, record.fields.length), record.fields);
  });
});
