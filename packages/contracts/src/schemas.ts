import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';
import './avro-limits.js';

export const schemasDir = fileURLToPath(new URL('../../../schemas/', import.meta.url));

/** The contracts, by file name in `schemas/` without `.avsc`. */
export type SchemaName =
  | 'inference-event'
  | 'decision-record'
  | 'decision-counts'
  | 'enriched-decision'
  | 'artifact-event'
  | 'deployment-event'
  | 'alert'
  | 'remediation-event';

const cache = new Map<string, avro.Schema>();

/** Reads an `.avsc` file and checks it parses as Avro, so a broken contract fails at start. */
export function loadSchema(name: SchemaName | string): avro.Schema {
  let schema = cache.get(name);
  if (!schema) {
    const file = `${schemasDir}${name}.avsc`;
    let parsed: avro.Schema;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8')) as avro.Schema;
      avro.Type.forSchema(parsed);
    } catch (err) {
      throw new Error(`Invalid Avro contract ${file}: ${(err as Error).message}`, { cause: err });
    }
    schema = parsed;
    cache.set(name, schema);
  }
  return schema;
}

export function avroType(name: SchemaName | string): avro.Type {
  return avro.Type.forSchema(loadSchema(name));
}
