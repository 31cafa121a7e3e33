import { mkdirSync, rmSync } from 'node:fs';
import { unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { sinkBufferProblem, type Config } from '@dlog/config';
import { AvroDecoder, avroType, registryFetcher, type SchemaFetcher } from '@dlog/contracts';
import { retry, RetriableError } from '@dlog/runtime';
import { chunkMessages, deadLetterMessage, ensureTopics, loadTopicDefinitions, type NativeKafka, type TopicDefinition } from '@dlog/kafka';
import { clickHouseErrorCode, isRetriableClickHouseError, type Store } from '@dlog/store';
import type { Kafka, Producer } from 'kafkajs';
import type { Logger } from 'pino';
import { avroInsertSql, avroReaders, ContainerBuilder, defaultAvroFileRows, splitForReaders, sqlString, type AvroMapping } from './avro-rows.js';
import { deadLetterSender } from './dead-letter-sender.js';
import { deadLetterTopic, sinkTables, type TableSpec } from './tables.js';
import { kafkajsSource, nativeSource, type BatchHandler, type SinkSource } from './source.js';
import { TableWriter, type RowPayload, type SourceMessage, type WriterIo, type WriterLimits, type WriterStats } from './table-writer.js';

export interface SinkOptions {
  kafka: Kafka;
  store: Store;
  log: Logger;
  /** The settings the sink reads: group, topic prefix, batch and memory limits, registry URL. */
  config: Pick<
    Config,
    'schemaRegistryUrl' | 'topicPrefix' | 'sinkGroupId' | 'sinkBatchRows' | 'sinkBatchBytes' | 'sinkFlushIntervalMs' | 'sinkMaxBufferedBytes'
  >;
  /** Writer schemas by id; defaults to the registry at config.schemaRegistryUrl. */
  fetchSchema?: SchemaFetcher;
  /** Which tables to fill (default: all). */
  tables?: readonly TableSpec[];
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Decode every record in JS and insert JSON rows, even where ClickHouse could read the Avro (tests compare both). */
  jsonOnly?: boolean;
  /** Rows per Avro file before an embedded batch is read as several files in parallel (default 10,000). */
  avroFileRows?: number;
  /** How long stop() keeps trying to write what is buffered. */
  drainTimeoutMs?: number;
  /** Consume on librdkafka (see `sinkNativeClient`); kafkajs when absent. */
  native?: { kafka: NativeKafka; brokers: string[]; clientId: string };
}

export interface Sink {
  start(): Promise<void>;
  /** Stop fetching, write and commit what is buffered (unless ClickHouse refuses), disconnect. */
  stop(): Promise<void>;
  stats(): WriterStats[];
  /** Topic names in use (with prefix), by table. */
  readonly topics: Record<string, string>;
  readonly deadLetterTopic: string;
  /** Resolves when the sink fails for good (a fatal ClickHouse error, a crashed consumer). */
  readonly failed: Promise<Error>;
}

/** Errors every row would hit again: the schema or the credentials, not the data. */
const fatalCodes = new Set([16, 47, 60, 62, 81, 115, 192, 193, 194, 497, 516]);

/** For a config built in code (loadConfig already refuses these sizes, naming the variable). */
export function validateSinkConfig(config: SinkOptions['config']): void {
  const problem = sinkBufferProblem(config);
  if (problem) throw new Error(problem);
}

const separator = '\u001e';

/** AVRO_EXCEPTION: ClickHouse could not read a record of the file. */
/**
 * Codes of a record ClickHouse cannot take, whatever the rest of the batch: the writer splits
 * the batch to find it and dead-letters it. 748 AVRO_EXCEPTION (unreadable bytes), 117
 * INCORRECT_DATA (an enum index out of range), and the parse and conversion errors of a value
 * (6, 27, 41, 69, 70, 72). Any other refusal of an Avro insert is about the statement.
 */
const avroRecordErrors = new Set([748, 117, 6, 27, 41, 69, 70, 72]);

/** ClickHouse I/O shared by all tables. In embedded mode chDB runs one statement at a time. */
function clickhouseIo(store: Store, avroTables: ReadonlyMap<string, AvroMapping>, avroFileRows: number) {
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    if (store.mode !== 'embedded') return fn();
    const run = chain.then(fn, fn);
    chain = run.catch(() => undefined);
    return run;
  };
  // Embedded: chDB's passthrough insert hands the bytes to its parallel parser without building
  // one SQL string of the whole batch (~1.4x faster). It sits on the chDB connection, which the
  // store does not expose; until it does, reach it where clickhouse-js keeps it, else use exec.
  type RawInsert = (p: { table: string; values: Buffer; format: 'JSONEachRow'; settings: Record<string, string> }) => Promise<unknown>;
  const chdb = store.mode === 'embedded' ? (store.client as unknown as { connection?: { chdb?: { rawInsert?: RawInsert } } }).connection?.chdb : undefined;
  const rawInsert = chdb?.rawInsert ? chdb.rawInsert.bind(chdb) : undefined;

  // Avro container files for `INSERT … SELECT FROM file()`: one path per table in a spool beside
  // the embedded data directory (`<dataDir>.sink-spool`). Only this process may open that data
  // directory (ClickHouse locks it), so the spool is its own: what a crashed run left there is
  // cleared at the first insert.
  const spool = store.mode === 'embedded' ? `${path.resolve(store.location)}.sink-spool` : undefined;
  let spoolReady = false;
  const builders = new Map<string, ContainerBuilder>();
  const insertAvro = async (table: string, token: string, datums: Buffer[]) => {
    const mapping = avroTables.get(table);
    if (!mapping || !spool) throw new Error(`internal: no Avro path for table ${table}`);
    let builder = builders.get(table);
    if (!builder) builders.set(table, (builder = new ContainerBuilder(mapping.schemaJson)));
    // One file per reader: ClickHouse parses each file on its own thread.
    const parts = splitForReaders(datums, avroReaders, avroFileRows);
    const files = parts.map((_, i) => path.join(spool, `${table}-${i}.avro`));
    try {
      if (!spoolReady) {
        rmSync(spool, { recursive: true, force: true });
        mkdirSync(spool, { recursive: true });
        spoolReady = true;
      }
      // build() reuses one buffer: each file is written before the next is built.
      for (const [i, part] of parts.entries()) await writeFile(files[i]!, builder.build(part));
    } catch (err) {
      // A full or read-only disk: nothing about the rows. Retried (fetching pauses) until the
      // files can be written; nothing is committed meanwhile.
      throw new RetriableError(`cannot write the batch files ${files.join(', ')} for ClickHouse: ${(err as Error).message}`, { cause: err });
    }
    try {
      await store.client.command({ query: avroInsertSql(table, mapping, files, token) });
    } catch (err) {
      // chDB's native errors carry the code only in their text: clickHouseErrorCode reads it there.
      const code = clickHouseErrorCode(err);
      // A record ClickHouse cannot take: the writer splits the batch to find it. Anything else
      // that is not retriable is about the statement (the file, the mapping, the table) and
      // would fail for every row: stop, commit nothing.
      if ((code === undefined || !avroRecordErrors.has(code)) && !isRetriableClickHouseError(err)) {
        throw Object.assign(new Error(`ClickHouse refused the Avro insert into ${table} (code ${code ?? '?'}): ${(err as Error).message}`, { cause: err }), { fatal: true });
      }
      throw err;
    } finally {
      // Removed at once: a crash leaves at most the one batch being inserted behind.
      await Promise.all(files.map((f) => unlink(f).catch(() => undefined)));
    }
  };

  const insertJson = async (table: string, token: string, lines: string[]) => {
    let body = '';
    for (const l of lines) body += l + '\n';
    if (rawInsert) {
      // Per-insert settings here are scoped to this statement (checked: no session leak).
      await rawInsert({ table, values: Buffer.from(body), format: 'JSONEachRow', settings: { insert_deduplication_token: token, max_partitions_per_insert_block: '0' } });
      return;
    }
    // Settings in the statement, not clickhouse_settings: chDB applies the latter as a session
    // SET, which would leak the token into every later insert of the process.
    const rs = await store.client.exec({
      query: `INSERT INTO ${table} SETTINGS insert_deduplication_token = ${sqlString(token)}, max_partitions_per_insert_block = 0 FORMAT JSONEachRow`,
      values: Readable.from([body]),
    });
    rs.stream.destroy();
  };

  return {
    /** The spool, when the Avro path can use it: file() reads glob characters as patterns. */
    avroUsable: () => spool !== undefined && !/[*?{}[\]]/.test(spool),
    close: () => {
      if (spool && spoolReady) rmSync(spool, { recursive: true, force: true });
      spoolReady = false;
    },
    insert: (table: string, token: string, rows: readonly RowPayload[]) =>
      serial(async () => {
        // The writer sends one kind per call (see TableWriter.insertRows).
        if (rows.every((r) => typeof r !== 'string')) await insertAvro(table, token, rows as Buffer[]);
        else if (rows.every((r) => typeof r === 'string')) await insertJson(table, token, rows as string[]);
        else throw new Error(`internal: a ${table} insert mixes JSON and Avro rows`);
      }),
    existing: (table: string, keyColumn: string, timeColumn: string, keys: string[], lo: number, hi: number) =>
      serial(async () => {
        // Keys travel as one string split server-side: parsing 50k literals costs ~5x more.
        const plain = keys.filter((k) => !k.includes(separator));
        const odd = keys.filter((k) => k.includes(separator));
        const list = `(SELECT arrayJoin(splitByString(${sqlString(separator)}, ${sqlString(plain.join(separator))})))`;
        const query =
          `SELECT DISTINCT ${keyColumn} AS k FROM ${table} ` +
          `WHERE ${timeColumn} BETWEEN fromUnixTimestamp64Milli(toInt64(${Math.floor(lo)}), 'UTC') AND fromUnixTimestamp64Milli(toInt64(${Math.ceil(hi)}), 'UTC') ` +
          `AND (${keyColumn} IN ${list}${odd.length ? ` OR ${keyColumn} IN (${odd.map(sqlString).join(',')})` : ''})`;
        const rs = await store.client.query({
          query,
          format: 'JSONCompactEachRow',
          // Never below the default: embedded, a setting given with one query outlives it in the
          // session, and a small limit here once made the next insert unparseable (code 62).
          // In bytes, as ClickHouse counts: sized in UTF-16 units, keys in other scripts made the
          // query too long for its own limit (code 62, fatal) and the sink died at every start.
          clickhouse_settings: { max_query_size: String(Math.max(262_144, Buffer.byteLength(query) + 1024)) },
        });
        const rows = await rs.json<[string]>();
        return new Set(rows.map((r) => r[0]));
      }),
  };
}

/**
 * The ClickHouse sink as plain parts: `main.ts` and a combined embedded runner (gate, enricher
 * and sink in the one process that owns the store) both call this.
 */
export function createSink(opts: SinkOptions): Sink {
  const { kafka, store, log, config } = opts;
  validateSinkConfig(config);
  const prefix = config.topicPrefix;
  const groupId = `${prefix}${config.sinkGroupId}`;
  const tables = opts.tables ?? sinkTables;
  const dlqTopic = `${prefix}${deadLetterTopic}`;
  const fetchSchema = opts.fetchSchema ?? registryFetcher(config.schemaRegistryUrl);
  const limits: WriterLimits = {
    batchRows: config.sinkBatchRows,
    batchBytes: config.sinkBatchBytes,
    flushIntervalMs: config.sinkFlushIntervalMs,
    maxBufferedBytes: config.sinkMaxBufferedBytes,
    retryInitialMs: opts.retryInitialMs ?? 200,
    retryMaxMs: opts.retryMaxMs ?? 5_000,
  };
  // Fetches are sized from the memory limit: one fetch lands on top of what a table holds.
  const maxFetchBytes = Math.max(1024 * 1024, Math.min(16 * 1024 * 1024, Math.floor(config.sinkMaxBufferedBytes / 4)));
  const sourceSettings = { groupId, maxFetchBytes, maxBytesPerPartition: Math.min(maxFetchBytes, 4 * 1024 * 1024) };
  const sourceEvents = {
    onAssigned: (assignment: Record<string, unknown>) => {
      log.info({ assignment }, 'sink partitions assigned');
      for (const t of byTopic.values()) t.writer.reassigned();
    },
    // Before the partitions go: every writer drops what it holds and abandons its batch at the
    // next step, and the insert already sent ends. Otherwise it could land after the next owner
    // looked for its rows, which that owner would then write again.
    onRevoking: async () => {
      await Promise.all([...byTopic.values()].map((t) => t.writer.revoke()));
    },
    onCrash: (err: Error) => failWith(err),
  };
  const source: SinkSource = opts.native ? nativeSource(opts.native, sourceSettings, sourceEvents, log) : kafkajsSource(kafka, sourceSettings, sourceEvents);
  const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  // Embedded, tables with an Avro mapping skip decoding in JS: ClickHouse reads the records.
  // A server reads files on its own host, so it gets JSON rows.
  const avroTables = new Map<string, AvroMapping>();
  if (store.mode === 'embedded' && !opts.jsonOnly) for (const t of tables) if (t.avro) avroTables.set(t.table, t.avro.mapping);
  const ch = clickhouseIo(store, avroTables, opts.avroFileRows ?? defaultAvroFileRows);
  if (avroTables.size > 0 && !ch.avroUsable()) {
    log.warn({ dataDir: store.location }, 'the data directory path has characters ClickHouse file() reads as patterns (* ? { } [ ]): decisions go as JSON rows');
    avroTables.clear();
  }

  const sendDeadLetters = deadLetterSender((topic, messages) => producer.send({ topic, acks: -1, messages }));
  const io: Omit<WriterIo, 'deadLetter'> = {
    insert: ch.insert,
    existing: ch.existing,
    commit: (topic, offsets) => source.commit(topic, offsets),
    pause: (topic) => source.pause(topic),
    resume: (topic) => source.resume(topic),
    isRetriable: (err) => err instanceof RetriableError || isRetriableClickHouseError(err),
    isFatal: (err) => {
      if ((err as { fatal?: unknown }).fatal === true) return true;
      const code = clickHouseErrorCode(err);
      return code !== undefined && fatalCodes.has(code);
    },
    isTooLarge: (err) => clickHouseErrorCode(err) === 241, // MEMORY_LIMIT_EXCEEDED
  };

  const byTopic = new Map<string, { topic: string; spec: TableSpec; writer: TableWriter; reader: ReturnType<typeof avroType>; decoder: AvroDecoder<unknown> }>();
  for (const spec of tables) {
    const topic = `${prefix}${spec.topic}`;
    const writer = new TableWriter(
      spec.table,
      topic,
      spec,
      limits,
      {
        ...io,
        deadLetter: async (dlq, letters) => {
          // A whole refused batch can be dead-lettered at once: send it in broker-sized pieces.
          for (const part of chunkMessages(letters.map((d) => deadLetterMessage(d.message, { topic, partition: d.message.partition }, { reason: d.reason, message: d.message_, step: d.step }, 'sink')))) {
            await sendDeadLetters(dlq, part);
          }
        },
      },
      log,
      dlqTopic,
    );
    const reader = avroType(spec.schema);
    byTopic.set(topic, { topic, spec, writer, reader, decoder: new AvroDecoder(reader, fetchSchema) });
  }

  let registryRetries = 0;
  let failWith: (err: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => {
    failWith = resolve;
  });
  let timer: NodeJS.Timeout | undefined;
  let running = false;

  const eachBatch: BatchHandler = async (batch, { resolveOffset, isRunning, isStale }) => {
    const target = byTopic.get(batch.topic);
    if (!target) return;
    const { spec, writer, reader, decoder } = target;
    const fast = avroTables.has(spec.table) ? spec.avro : undefined;
    try {
      await decoder.prepare(batch.messages.map((m) => m.value));
    } catch (err) {
      // The registry did not answer for a writer schema not seen yet (an unknown id is answered,
      // and dead-lettered per record): nothing taken, the batch is read again after a pause. On
      // librdkafka a throw here stopped the sink; kafkajs restarted its consumer.
      if (registryRetries++ % 30 === 0) log.warn({ err, topic: batch.topic, partition: batch.partition }, 'schema registry unreachable: the batch is read again');
      await new Promise((r) => setTimeout(r, 1_000));
      return;
    }
    registryRetries = 0;
    // Only what was taken is resolved (not the whole batch): a message not taken because the
    // table holds its memory limit is fetched again once fetching resumes. Resolving once, for
    // the last one taken, is the same to both consumers and spares kafkajs an offset parse per
    // message.
    let taken: string | undefined;
    try {
      for (const m of batch.messages) {
        if (!isRunning() || isStale() || writer.full) break;
        const source: SourceMessage = { partition: batch.partition, offset: m.offset, key: m.key, value: m.value, headers: m.headers };
        if (m.value === null && spec.tombstones) {
          writer.addSkip(source);
        } else if (fast && decoder.writtenAsReader(m.value)) {
          // The contract's own schema: ClickHouse reads the body; JS only peeks at the replay key.
          const body = m.value!.subarray(5);
          let id: { key: string; time: number } | undefined;
          try {
            id = fast.peek(body);
          } catch (err) {
            writer.addDeadLetter(source, 'invalid_avro', (err as Error).message);
          }
          if (id) writer.addRow(source, body, id.key, id.time);
        } else {
          const r = decoder.decode(m.value);
          let body: Buffer | undefined;
          if (r.ok && fast) {
            // Another writer schema (a producer before or after a schema change): written again
            // in the contract's schema, so the batch stays one Avro statement. A batch of two
            // statements is not atomic: a crash between them left rows the replay check after a
            // restart could miss, written twice (views hid them, base tables did not).
            try {
              body = reader.toBuffer(r.value);
            } catch {
              body = undefined; // not expected for a value read into this type; the JSON row below
            }
          }
          if (!r.ok) {
            writer.addDeadLetter(source, r.reason, r.message);
          } else if (body) {
            writer.addRow(source, body, spec.key(r.value), spec.time(r.value));
          } else {
            let line: string | undefined;
            try {
              line = JSON.stringify(spec.toRow(r.value, source));
            } catch (err) {
              writer.addDeadLetter(source, 'unmappable_record', (err as Error).message);
            }
            if (line !== undefined) writer.addRow(source, line, spec.key(r.value), spec.time(r.value));
          }
        }
        taken = m.offset;
      }
    } finally {
      if (taken !== undefined) resolveOffset(taken);
    }
  };

  return {
    topics: Object.fromEntries([...byTopic.values()].map((t) => [t.spec.table, t.topic])),
    deadLetterTopic: dlqTopic,
    failed,
    stats: () => [...byTopic.values()].map((t) => t.writer.getStats()),

    async start() {
      const admin = kafka.admin();
      await admin.connect();
      try {
        const known = new Map(loadTopicDefinitions().map((d) => [d.name, d]));
        const defs: TopicDefinition[] = tables.map((s) => {
          const d = known.get(s.topic);
          return { name: `${prefix}${s.topic}`, partitions: d?.partitions ?? 1, doc: d?.doc ?? s.topic, config: d?.config ?? {} };
        });
        // The dead-letter topic as infra/kafka/topics.yaml defines it: made here with 3
        // partitions, it drew a warning to recreate it at every later `dlog up`.
        const dlqDef = known.get(deadLetterTopic);
        if (!dlqDef) throw new Error(`internal: ${deadLetterTopic} is missing from infra/kafka/topics.yaml`);
        defs.push({ ...dlqDef, name: dlqTopic });
        // A broker that just created topics may briefly deny knowing them; that is retriable.
        await retry(() => ensureTopics(admin, defs), { attempts: 6, initialMs: 200, maxMs: 2_000 });
      } finally {
        await admin.disconnect();
      }
      await producer.connect();
      running = true;
      await source.start([...byTopic.keys()], eachBatch);
      timer = setInterval(() => {
        for (const t of byTopic.values()) {
          try {
            t.writer.tick();
          } catch (err) {
            failWith(err as Error);
          }
        }
      }, Math.max(10, Math.min(100, Math.floor(config.sinkFlushIntervalMs / 4))));
      log.info({ topics: [...byTopic.keys()], group: groupId, store: store.mode, consumer: opts.native ? 'librdkafka' : 'kafkajs', limits }, 'sink started');
    },

    // Fixed order: stop fetching, write what is buffered, commit (inside the writers), flush the
    // dead-letter producer, leave the group.
    async stop() {
      if (!running) return;
      running = false;
      if (timer) clearInterval(timer);
      source.pauseAll();
      const drained = Promise.allSettled([...byTopic.values()].map((t) => t.writer.drain()));
      // While ClickHouse refuses writes, draining would wait forever: give up after a while; what
      // is not written is not committed, and is read again after the restart.
      let limit: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        drained.then(() => false),
        new Promise<boolean>((resolve) => {
          limit = setTimeout(() => resolve(true), opts.drainTimeoutMs ?? 10_000);
        }),
      ]);
      clearTimeout(limit);
      if (timedOut) log.warn('sink could not write everything before stopping; the rest stays uncommitted');
      for (const t of byTopic.values()) t.writer.stop();
      const results = await drained;
      try {
        await producer.disconnect();
        await source.disconnect();
      } finally {
        ch.close();
      }
      const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failure) throw failure.reason;
    },
  };
}
