import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { readAvroLong, readAvroString, writeAvroLong } from '@dlog/contracts';
import { usableCores } from '@dlog/runtime';

/**
 * The embedded fast path for decisions: ClickHouse reads our Avro records itself.
 *
 * Decoding each record in JS (avsc) and serialising it again as JSONEachRow cost ~35 µs a row,
 * and ClickHouse then parsed 2.4 KB of JSON per row at ~30k rows/s. Instead the sink strips the
 * 5-byte registry frame, lays the datums into an Avro object container file, and has ClickHouse
 * `INSERT … SELECT` from it: ~1 µs a row in JS, and ClickHouse parses the 1.3 KB binary rows 3-4x
 * faster. The file carries one schema (the contract; the mapping below names its fields): a
 * record written with another schema is decoded in JS and written again in the contract's, so a
 * batch stays one statement (see create-sink).
 */

/** Table column ← expression over the contract's fields, as ClickHouse reads them from Avro. */
export interface AvroMapping {
  /** The writer schema (JSON) to declare in the container: the contract itself. */
  schemaJson: string;
  columns: readonly (readonly [column: string, expression: string])[];
}

/**
 * decisions ← schemas/enriched-decision.avsc; the same rows `toDecisionRow` makes (a test
 * inserts the same records both ways and compares every column). Nullable records read as
 * nullable tuples (`enable_nullable_tuple_type`), so a field of an absent record is NULL, and
 * optional strings become '' as in the JS path. The enum goes by name: ClickHouse numbers Avro
 * symbols from 0 and the table from 1.
 */
export const decisionColumns: AvroMapping['columns'] = [
  ['event_id', 'event_id'],
  ['request_id', 'request_id'],
  ['ts', 'ts'],
  ['endpoint', 'endpoint'],
  ['decision_type', 'decision_type'],
  ['tenant', "ifNull(tenant, '')"],
  ['model_name', 'model.name'],
  ['model_version', 'model.version'],
  ['model_digest', "ifNull(model.digest, '')"],
  ['image_ref', "ifNull(image.ref, '')"],
  ['image_digest', "ifNull(image.digest, '')"],
  ['config_ref', "ifNull(config.ref, '')"],
  ['temperature', 'config.params.temperature'],
  ['top_p', 'config.params.top_p'],
  ['max_tokens', 'config.params.max_tokens'],
  ['thresholds', 'config.params.thresholds'],
  ['params_extra', 'config.params.extra'],
  ['preprocessing_ref', "ifNull(preprocessing.ref, '')"],
  ['preprocessing_digest', "ifNull(preprocessing.digest, '')"],
  ['environment_digest', "ifNull(environment_digest, '')"],
  ['input_hash', 'input_hash'],
  ['input_json', 'input_json'],
  ['input_fields', 'input_fields'],
  ['decision', 'output.decision'],
  ['confidence', 'output.confidence'],
  ['scores', 'output.scores'],
  ['token_logprobs', 'output.token_logprobs'],
  ['output_json', 'output.output_json'],
  ['trace_id', "ifNull(trajectory.trace_id, '')"],
  ['step', 'trajectory.step'],
  ['parent_event_id', "ifNull(trajectory.parent_event_id, '')"],
  ['tool_name', "ifNull(trajectory.tool_name, '')"],
  ['tool_args_hash', "ifNull(trajectory.tool_args_hash, '')"],
  ['producer_service', 'producer.service'],
  ['producer_sdk', 'producer.sdk'],
  ['producer_host', "ifNull(producer.host, '')"],
  ['attributes', 'attributes'],
  ['tier', 'toString(tier)'],
  ['sample_rate', 'sample_rate'],
  ['policy_version', 'policy_version'],
  ['policy_rule', 'policy_rule'],
  ['pii_key_id', "ifNull(pii_key_id, '')"],
  ['source_partition', 'source.partition'],
  ['source_offset', 'source.offset'],
  ['gate_ts', 'source.gate_ts'],
  ['resolved', 'resolved'],
  ['unresolved_refs', 'unresolved_refs'],
  ['digest_mismatches', 'digest_mismatches'],
  ['artifacts', 'artifacts'],
  ['lineage', 'lineage'],
  ['enriched_at', 'enriched_at'],
];

/** A single-quoted ClickHouse string literal. */
export function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * `INSERT … SELECT` of container files into `table`, in one statement. Several files sharing a
 * directory are read in parallel, one reader each: ClickHouse parses one Avro file on one thread,
 * and parsing is over half of the insert's cost (2 files of 25k rows: ~1.4x the rows/s of one of
 * 50k on 2 cores). The rows still land as one part: a batch is written whole or not at all.
 * The paths are ours (no user input, no glob characters, no commas).
 */
export function avroInsertSql(table: string, mapping: AvroMapping, files: readonly string[], token: string): string {
  if (files.length === 0) throw new Error('internal: an Avro insert with no file');
  const dir = path.dirname(files[0]!);
  if (files.some((f) => path.dirname(f) !== dir || /[,{}*?[\]]/.test(path.basename(f)))) {
    throw new Error(`internal: Avro batch files must share a directory and have plain names: ${files.join(' ')}`);
  }
  const source = files.length === 1 ? files[0]! : path.join(dir, `{${files.map((f) => path.basename(f)).join(',')}}`);
  const cols = mapping.columns.map(([c]) => c).join(', ');
  const exprs = mapping.columns.map(([, e]) => e).join(', ');
  const settings = [
    'enable_nullable_tuple_type = 1',
    // The same path is rewritten for every batch: never reuse a cached schema for it.
    'schema_inference_use_cache_for_file = 0',
    `max_threads = ${Math.max(1, files.length)}`,
    // One block for the whole batch, however many readers: ClickHouse numbers an insert's blocks
    // into the dedup token, and parallel readers would fill block N with different rows on a
    // retry, so a retry after a partly landed insert could drop rows as repeats.
    'min_insert_block_size_rows = 1000000000000',
    'min_insert_block_size_bytes = 1000000000000',
    `insert_deduplication_token = ${sqlString(token)}`,
    // A batch of sparse old records (a backfill, a replay) spans many months, one part each:
    // over the default 100, ClickHouse refuses the insert with the code of a passing overload
    // (252), and the writer retried it for good. The JSON inserts (create-sink) lift it too.
    'max_partitions_per_insert_block = 0',
  ].join(', ');
  return `INSERT INTO ${table} (${cols}) SELECT ${exprs} FROM file(${sqlString(source)}, 'Avro') SETTINGS ${settings}`;
}

/**
 * Rows per file below which a batch stays one file. Each file costs the insert a reader and its
 * own header; on 2 cores 2 files were slower than one up to 8k rows (62k vs 66k rows/s) and much
 * faster at 50k (72-87k vs 50k rows/s) (scratch, same store, same run).
 */
export const defaultAvroFileRows = 10_000;

/** Avro files read at once: the usable cores (a container's CPU quota counted), up to 4. */
export const avroReaders = Math.min(4, usableCores());

/**
 * A batch cut into the files for {@link avroInsertSql}, in order: up to `readers` of them, each
 * with at least `minRowsPerFile` rows (one file below that).
 */
export function splitForReaders<T>(rows: readonly T[], readers = avroReaders, minRowsPerFile = defaultAvroFileRows): T[][] {
  const count = Math.max(1, Math.min(Math.floor(readers), Math.floor(rows.length / minRowsPerFile)));
  const per = Math.ceil(rows.length / count);
  return Array.from({ length: count }, (_, i) => rows.slice(i * per, (i + 1) * per));
}

/**
 * Builds Avro object container files (codec null) from datums, into one reused buffer: a fresh
 * 60 MB buffer per batch costs more in garbage collection than the copying itself. The buffer
 * stays at the largest batch seen (up to twice DLOG_SINK_BATCH_BYTES) for the life of the sink.
 *
 * Every datum is its own block with its length declared, so a malformed datum cannot shift the
 * rows after it: one cut short fails the insert (the writer then isolates it as a dead letter).
 * Bytes after a complete record inside its block are ignored by ClickHouse (checked), where the
 * JS path would dead-letter the message; only the enricher writes this topic, with the contract.
 */
export class ContainerBuilder {
  private readonly header: Buffer;
  private readonly sync = randomBytes(16);
  private buf = Buffer.allocUnsafe(1 << 20);

  constructor(schemaJson: string) {
    const meta: [string, Buffer][] = [
      ['avro.schema', Buffer.from(schemaJson)],
      ['avro.codec', Buffer.from('null')],
    ];
    const parts: Buffer[] = [Buffer.from('Obj\x01', 'latin1')];
    const tmp = Buffer.allocUnsafe(16);
    parts.push(tmp.subarray(0, writeAvroLong(tmp, 0, meta.length)));
    for (const [k, v] of meta) {
      const kb = Buffer.from(k);
      const a = Buffer.allocUnsafe(10);
      parts.push(Buffer.from(a.subarray(0, writeAvroLong(a, 0, kb.length))), kb);
      const b = Buffer.allocUnsafe(10);
      parts.push(Buffer.from(b.subarray(0, writeAvroLong(b, 0, v.length))), v);
    }
    parts.push(Buffer.from([0]), this.sync);
    this.header = Buffer.concat(parts);
  }

  /** The container for `datums`; valid until the next call. */
  build(datums: readonly Buffer[]): Buffer {
    let need = this.header.length;
    for (const d of datums) need += d.length + 12 + 16;
    if (need > this.buf.length) this.buf = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
    const out = this.buf;
    let at = this.header.copy(out, 0);
    for (const d of datums) {
      at = writeAvroLong(out, at, 1);
      at = writeAvroLong(out, at, d.length);
      at += d.copy(out, at);
      at += this.sync.copy(out, at);
    }
    return out.subarray(0, at);
  }
}

/**
 * The replay identity of an enriched decision without decoding it: its first fields are
 * event_id (string), request_id (string) and ts (long), in that order (schemas/enriched-decision.avsc).
 */
export function peekDecision(datum: Buffer): { key: string; time: number } {
  const [key, afterKey] = readAvroString(datum, 0);
  const [, afterRequest] = readAvroString(datum, afterKey);
  const [time] = readAvroLong(datum, afterRequest);
  return { key, time };
}
