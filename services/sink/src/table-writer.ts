import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { backoffDelay } from '@dlog/runtime';

/**
 * One table's write path: rows from one topic collect in a batch; a batch is sealed by size,
 * bytes or age; sealed batches are inserted one at a time, in order, and only after a batch's
 * insert (and its dead letters) succeeded are its offsets committed. So commits per partition
 * move forward in order, and nothing is acknowledged while it is only in memory.
 *
 * - ClickHouse retriable errors (network, overload, TOO_MANY_PARTS ...): fetching for the topic is
 *   paused and the same batch is retried with jittered backoff until it lands; it resumes by
 *   itself. The retry carries the same insert_deduplication_token, so if the failed attempt did
 *   land after all, ClickHouse drops the repeat.
 * - Data errors: the batch is split in halves until the failing rows are isolated; those go to the
 *   dead-letter topic with their original bytes, the rest is written. The partition never blocks.
 * - Schema or access errors (missing table, unknown column, denied) are fatal: every row would fail
 *   the same way, so the sink stops without committing instead of dead-lettering everything.
 * - Replays: after (re)assignment, a rebalance or a failed insert, the next batch first asks
 *   ClickHouse which of its keys already exist (bloom-filter indexed, within the batch's time
 *   range) and drops those rows.
 */

export interface SourceMessage {
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers?: Record<string, unknown>;
}

export interface DeadLetter {
  message: SourceMessage;
  reason: string;
  message_: string;
  step: 'decode' | 'insert';
}

export interface WriterLimits {
  batchRows: number;
  batchBytes: number;
  flushIntervalMs: number;
  /** Row data held per table (waiting + in flight) before fetching pauses. */
  maxBufferedBytes: number;
  retryInitialMs: number;
  retryMaxMs: number;
}

/**
 * One row as the writer holds it: a JSONEachRow line, or (embedded decisions) the record's Avro
 * body in the contract's own schema, which ClickHouse reads itself.
 */
export type RowPayload = string | Buffer;

export interface WriterIo {
  /** Inserts the rows in one statement (or one per payload kind), deduplicated by `token`. */
  insert(table: string, token: string, rows: readonly RowPayload[]): Promise<void>;
  /** Keys among `keys` already stored, looking only at rows with time in [lo, hi] ms. */
  existing(table: string, keyColumn: string, timeColumn: string, keys: string[], lo: number, hi: number): Promise<Set<string>>;
  deadLetter(topic: string, letters: DeadLetter[]): Promise<void>;
  commit(topic: string, offsets: { partition: number; offset: string }[]): Promise<void>;
  pause(topic: string): void;
  resume(topic: string): void;
  isRetriable(err: unknown): boolean;
  isFatal(err: unknown): boolean;
  /**
   * Refused for its size (ClickHouse's memory limit): retried like any overload, but after a few
   * attempts the rows are split, since the same statement may never fit. Optional.
   */
  isTooLarge?(err: unknown): boolean;
}

/** Attempts at a statement refused for its size before its rows are split in two. */
const tooLargeAttempts = 3;

export interface WriterStats {
  table: string;
  topic: string;
  bufferedRows: number;
  bufferedBytes: number;
  peakBufferedBytes: number;
  batchesWritten: number;
  rowsWritten: number;
  /** Of rowsWritten, those ClickHouse read as Avro (the embedded fast path). */
  rowsWrittenAsAvro: number;
  rowsSkippedAsReplay: number;
  deadLettered: number;
  insertFailures: number;
  paused: boolean;
  failing: boolean;
}

class Batch {
  readonly lines: RowPayload[] = [];
  readonly keys: string[] = [];
  readonly times: number[] = [];
  /** Source message of each row, for dead letters. */
  readonly sources: SourceMessage[] = [];
  readonly deadLetters: DeadLetter[] = [];
  /** Highest offset per partition the batch covers (rows, dead letters and skipped alike). */
  readonly last = new Map<number, string>();
  readonly first = new Map<number, string>();
  bytes = 0;
  readonly openedAt = Date.now();
  /** The writer's assignment count when writing began: a batch whose partitions moved since is abandoned. */
  assignment = -1;

  cover(m: SourceMessage): void {
    if (!this.first.has(m.partition)) this.first.set(m.partition, m.offset);
    this.last.set(m.partition, m.offset);
  }

  get size(): number {
    return this.lines.length + this.deadLetters.length;
  }

  /**
   * Deterministic for the same offsets and rows: a retried batch gets the same token. Offsets
   * alone are not enough: a topic deleted and made again starts at offset 0, and ClickHouse,
   * remembering the old token, would drop the new rows and report success. So the token also
   * carries a fingerprint of the batch's first and last row keys and its row count.
   */
  token(topic: string): string {
    const parts = [...this.first.keys()].sort((a, b) => a - b).map((p) => `${p}:${this.first.get(p)}-${this.last.get(p)}`);
    const n = this.keys.length;
    const fingerprint = createHash('sha1').update(`${n}\u0000${this.keys[0] ?? ''}\u0000${this.keys[n - 1] ?? ''}`).digest('hex').slice(0, 8);
    return `${topic}/${parts.join(',')}#${fingerprint}`;
  }
}

/**
 * The deduplication token of one statement. ClickHouse drops an insert whose token it has seen,
 * whatever rows it carries, so a token must name exactly its rows: a statement of all the batch's
 * rows has the batch's token; one of some of them (a split, or what the replay check left) adds a
 * digest of their offsets. Named only by their place in the batch (`/a`), the first half of a
 * split after a restart, which held other rows once the replay check had dropped those already
 * written, took the token of the first half written before the crash and was silently dropped.
 */
function statementToken(batch: Batch, rows: readonly number[], token: string): string {
  if (rows.length === batch.lines.length) return token;
  let offsets = '';
  for (const i of rows) offsets += `${batch.sources[i]!.partition}:${batch.sources[i]!.offset},`;
  return `${token}@${createHash('sha1').update(offsets).digest('hex').slice(0, 16)}`;
}

let monthFrom = 0;
let monthUntil = -1;
let monthNumber = 0;

/**
 * The UTC month of a time in ms as a number (202611), as ClickHouse's `toYYYYMM` puts a
 * `DateTime64(3, 'UTC')` row in a partition. The last month seen is kept: a batch's rows are
 * nearly all in one.
 */
export function utcMonth(ms: number): number {
  if (ms >= monthFrom && ms < monthUntil) return monthNumber;
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  if (Number.isNaN(y)) return 0;
  monthFrom = Date.UTC(y, m, 1);
  monthUntil = Date.UTC(y, m + 1, 1);
  monthNumber = y * 100 + m + 1;
  return monthNumber;
}

/**
 * The replay check's unit for row `i` (see TableWriter.settled): its Kafka partition and the
 * month ClickHouse files it under. Tables with no month partitions get the finer unit too, which
 * costs at most one more lookup when a month begins.
 */
function settleKey(batch: Batch, i: number): number {
  return batch.sources[i]!.partition * 100_000_000 + utcMonth(batch.times[i]!);
}

/** A statement that kept failing for its size: its rows are split and inserted in two. */
class TooLargeError extends Error {
  constructor(cause: unknown) {
    super('insert refused for its size; splitting it', { cause });
    this.name = 'TooLargeError';
  }
}

/** The assignment changed while the batch was written: Kafka delivers its messages again to whoever owns them now. */
class AbandonedError extends Error {
  constructor() {
    super('assignment changed while the batch was written; it is neither written further nor committed');
    this.name = 'AbandonedError';
  }
}

export class StoppedError extends Error {
  constructor() {
    super('sink stopped before the batch was written; it is not committed and will be read again');
    this.name = 'StoppedError';
  }
}

export class TableWriter {
  private open = new Batch();
  private readonly sealed: Batch[] = [];
  private flushing: Promise<void> | undefined;
  private inFlightBytes = 0;
  /**
   * Partition-months whose rows are known not to be in ClickHouse yet. After a start, a rebalance
   * or an insert of unknown outcome, rows already written but not committed form a prefix of each
   * partition's redelivered offsets, and that prefix can span several batches (the killed run's
   * batch may have been larger than the new one). Not quite a prefix, though:
   * - a bad row isolated from its batch is missing among written rows;
   * - ClickHouse stores an insert as one part per month of its rows (the partitioned tables go by
   *   UTC month) and commits each part on its own, so a run killed inside an insert may have
   *   written its January rows and not its February ones, interleaved in offset order.
   * Within one partition and one month the written rows are still a prefix, less refused rows. So
   * each partition-month is checked batch by batch until one of its rows is neither found nor
   * refused by ClickHouse: from there on it is past what was written (see write). A batch holds
   * one kind of row (JSON lines or Avro bodies, see addRow), so its rows are written in offset order.
   */
  private readonly settled = new Set<number>();
  private failing = false;
  /** Between a revoke and the next assignment: no batch starts (see revoke). */
  private held = false;
  /** Ends the backoff wait in progress, if any. */
  private wakeBackoff: (() => void) | undefined;
  private paused = false;
  private stopping = false;
  private readonly stopped = new AbortController();
  private fatal: unknown;
  private committed = new Map<number, bigint>();
  /** Counts assignment changes: a replay check that began under an earlier one settles nothing. */
  private assignment = 0;
  private readonly stats: WriterStats;

  constructor(
    readonly table: string,
    readonly topic: string,
    private readonly spec: { keyColumn: string; timeColumn: string },
    private readonly limits: WriterLimits,
    private readonly io: WriterIo,
    private readonly log: Logger,
    private readonly deadLetterTopic: string,
  ) {
    this.stats = {
      table,
      topic,
      bufferedRows: 0,
      bufferedBytes: 0,
      peakBufferedBytes: 0,
      batchesWritten: 0,
      rowsWritten: 0,
      rowsWrittenAsAvro: 0,
      rowsSkippedAsReplay: 0,
      deadLettered: 0,
      insertFailures: 0,
      paused: false,
      failing: false,
    };
  }

  /** A row: its JSONEachRow text, or its Avro body (a view into the source message). */
  addRow(m: SourceMessage, row: RowPayload, key: string, time: number): void {
    // One kind of row per batch: a batch of both is two statements, and a crash between them left
    // later offsets written before earlier ones, which the replay check (see write) cannot tell.
    const lastRow = this.open.lines[this.open.lines.length - 1];
    if (lastRow !== undefined && typeof lastRow !== typeof row) this.seal();
    const b = this.open;
    b.lines.push(row);
    b.keys.push(key);
    b.times.push(time);
    b.sources.push(m);
    // Both the row text and the source bytes it keeps alive count against the memory limit; an
    // Avro body is the source bytes.
    b.bytes += (typeof row === 'string' ? row.length : 0) + (m.value?.length ?? 0);
    b.cover(m);
    this.afterAdd();
  }

  addDeadLetter(m: SourceMessage, reason: string, message: string): void {
    this.open.deadLetters.push({ message: m, reason, message_: message, step: 'decode' });
    this.open.bytes += m.value?.length ?? 0;
    this.open.cover(m);
    this.afterAdd();
  }

  /** A message that needs no row (a compaction tombstone): covered, so its offset commits. */
  addSkip(m: SourceMessage): void {
    this.open.cover(m);
    this.afterAdd();
  }

  private afterAdd(): void {
    if (this.open.lines.length >= this.limits.batchRows || this.open.bytes >= this.limits.batchBytes) this.seal();
    this.updateFlow();
  }

  /**
   * Seals the open batch when it is old enough; called by the sink's timer. While a batch is being
   * written the open one keeps growing instead (up to the size limits), and the write loop takes
   * it as soon as it is free: a sealed batch could not be written any sooner, and one insert of
   * many rows costs far less than several small ones (~20-30 ms of fixed cost each, embedded).
   */
  tick(now = Date.now()): void {
    if (!this.flushing && this.openIsDue(now)) this.seal();
    if (this.fatal) throw this.fatal;
  }

  private openIsDue(now: number): boolean {
    return (this.open.size > 0 || this.open.last.size > 0) && now - this.open.openedAt >= this.limits.flushIntervalMs;
  }

  private seal(): void {
    if (this.open.size === 0 && this.open.last.size === 0) return;
    this.sealed.push(this.open);
    this.open = new Batch();
    this.kick();
  }

  private kick(): void {
    if (this.flushing || this.held || this.sealed.length === 0 || this.fatal) return;
    this.flushing = (async () => {
      try {
        while (this.sealed.length > 0 && !this.held) {
          const batch = this.sealed[0]!;
          this.inFlightBytes = batch.bytes;
          try {
            await this.write(batch);
          } catch (err) {
            if (!(err instanceof AbandonedError)) throw err;
            this.log.info({ table: this.table, rows: batch.lines.length }, 'assignment changed while writing: batch abandoned, Kafka delivers it again');
            // Abandoned while backing off through an outage: fetching must resume, or no message
            // would ever come to make a batch that finds out ClickHouse is back.
            if (this.failing) this.failing = false;
          }
          this.sealed.shift();
          // What aged while this batch was written goes next, as one batch (see tick).
          if (this.sealed.length === 0 && this.openIsDue(Date.now())) {
            this.sealed.push(this.open);
            this.open = new Batch();
          }
          // The next batch counts as in flight from here, so the memory check never sees it
          // as gone between two writes.
          this.inFlightBytes = this.held ? 0 : (this.sealed[0]?.bytes ?? 0);
          this.updateFlow();
        }
      } catch (err) {
        this.inFlightBytes = 0;
        if (!(err instanceof StoppedError)) {
          this.fatal = err;
          this.log.fatal({ err, table: this.table }, 'sink cannot write this table; stopping without committing');
        }
      } finally {
        this.flushing = undefined;
      }
    })();
  }

  /**
   * The group's assignment changed: Kafka will deliver again from the committed offsets, so what
   * is buffered but not yet being written is dropped (it comes back), and the next batch checks
   * for rows a previous owner may already have written. The batch being written is abandoned at
   * its next step (before any further insert attempt, and before its commit): retried through an
   * outage, it used to land after the partition's new owner had checked for it, and to commit
   * behind that owner's commit, moving the group's offset back.
   */
  reassigned(): void {
    this.held = false;
    const dropped = this.open.size + this.sealed.slice(this.flushing ? 1 : 0).reduce((n, b) => n + b.size, 0);
    this.open = new Batch();
    if (this.flushing) this.sealed.splice(1);
    else {
      this.sealed.length = 0;
      this.inFlightBytes = 0;
    }
    this.settled.clear();
    this.committed.clear();
    this.assignment++;
    if (dropped > 0) this.log.info({ table: this.table, dropped }, 'assignment changed: buffered rows dropped, Kafka delivers them again');
    this.updateFlow();
  }

  /**
   * The partitions are about to go (librdkafka's revoke): what is buffered is dropped, the batch
   * being written is abandoned at its next step, and no other batch starts until the next
   * assignment. Resolves once the statement in flight, if any, has ended.
   */
  async revoke(): Promise<void> {
    this.reassigned();
    this.held = true;
    this.wakeBackoff?.();
    while (this.flushing) await this.flushing;
  }

  /** At the memory limit: take no more messages until a batch is written. */
  get full(): boolean {
    return this.bufferedBytes >= this.limits.maxBufferedBytes;
  }

  get bufferedBytes(): number {
    const waiting = this.sealed.reduce((n, b) => n + b.bytes, 0) - (this.flushing ? (this.sealed[0]?.bytes ?? 0) : 0);
    return this.open.bytes + waiting + this.inFlightBytes;
  }

  private updateFlow(): void {
    const bytes = this.bufferedBytes;
    if (bytes > this.stats.peakBufferedBytes) this.stats.peakBufferedBytes = bytes;
    const shouldPause = this.failing || bytes >= this.limits.maxBufferedBytes;
    const mayResume = !this.failing && bytes < this.limits.maxBufferedBytes / 2;
    if (shouldPause && !this.paused) {
      this.paused = true;
      this.io.pause(this.topic);
      this.log.info({ table: this.table, bufferedBytes: bytes, failing: this.failing }, 'fetching paused');
    } else if (this.paused && mayResume && !this.stopping) {
      this.paused = false;
      this.io.resume(this.topic);
      this.log.info({ table: this.table, bufferedBytes: bytes }, 'fetching resumed');
    }
  }

  /** Seals what is open and waits until everything sealed is written and committed. */
  async drain(): Promise<void> {
    this.seal();
    while (this.flushing) await this.flushing;
    if (this.fatal) throw this.fatal;
  }

  /** Stops retrying: an unwritten batch stays uncommitted and is read again after restart. */
  stop(): void {
    this.stopping = true;
    this.stopped.abort();
  }

  getStats(): WriterStats {
    const sealedRows = this.sealed.reduce((n, b) => n + b.lines.length, 0);
    return {
      ...this.stats,
      bufferedRows: this.open.lines.length + sealedRows,
      bufferedBytes: this.bufferedBytes,
      paused: this.paused,
      failing: this.failing,
    };
  }

  get fatalError(): unknown {
    return this.fatal;
  }

  private async write(batch: Batch): Promise<void> {
    batch.assignment = this.assignment;
    let rows = batch.lines.map((_, i) => i);
    const token = batch.token(this.topic);
    if (rows.length > 0) {
      let checked: Set<number> | undefined;
      if (rows.some((i) => !this.settled.has(settleKey(batch, i)))) {
        ({ keep: rows, checked } = await this.withRetry('replay check', () => this.dropExisting(batch, rows), false, batch));
      }
      const t0 = Date.now();
      const rejected = new Set<number>();
      await this.insertRows(batch, rows, token, rejected);
      // A checked partition-month is past what an earlier run wrote once one of its rows was
      // neither found nor refused: that run wrote each partition's rows of a month in order,
      // leaving out only rows ClickHouse refuses, so it never got to this one nor to any after it.
      // Not when its rows were all refused: those are the holes in what it wrote, and rows after
      // them may be there. Another month of the same partition may still hold written rows.
      if (checked && batch.assignment === this.assignment) {
        for (const i of rows) {
          const k = settleKey(batch, i);
          if (checked.has(k) && !rejected.has(i)) this.settled.add(k);
        }
      }
      this.stats.batchesWritten++;
      for (const i of rows) {
        if (rejected.has(i)) continue;
        this.stats.rowsWritten++;
        if (typeof batch.lines[i] !== 'string') this.stats.rowsWrittenAsAvro++;
      }
      this.log.debug({ table: this.table, rows: rows.length, ms: Date.now() - t0 }, 'batch written');
    }
    if (batch.deadLetters.length > 0) {
      await this.withRetry('dead letters', () => this.io.deadLetter(this.deadLetterTopic, batch.deadLetters), false, batch);
      this.stats.deadLettered += batch.deadLetters.length;
      this.log.warn(
        { table: this.table, count: batch.deadLetters.length, reasons: [...new Set(batch.deadLetters.map((d) => d.reason))] },
        'rows sent to the dead-letter topic',
      );
    }
    await this.commit(batch);
  }

  /** The rows not already stored, and the partition-months whose rows were looked for. */
  private async dropExisting(batch: Batch, all: number[]): Promise<{ keep: number[]; checked: Set<number> }> {
    const rows = all.filter((i) => !this.settled.has(settleKey(batch, i)));
    let lo = Infinity;
    let hi = -Infinity;
    for (const i of rows) {
      const t = batch.times[i]!;
      if (t < lo) lo = t;
      if (t > hi) hi = t;
    }
    const found = await this.io.existing(this.table, this.spec.keyColumn, this.spec.timeColumn, rows.map((i) => batch.keys[i]!), lo, hi);
    const checked = new Set<number>();
    for (const i of rows) checked.add(settleKey(batch, i));
    // A key repeated inside the batch (an upstream replay) is written once.
    const seen = new Set<string>(found);
    const keep: number[] = [];
    for (const i of all) {
      const k = batch.keys[i]!;
      if (seen.has(k)) continue;
      seen.add(k);
      keep.push(i);
    }
    const skipped = all.length - keep.length;
    if (skipped > 0) {
      this.stats.rowsSkippedAsReplay += skipped;
      this.log.info({ table: this.table, skipped, checked: rows.length }, 'replayed rows already in ClickHouse were skipped');
    }
    return { keep, checked };
  }

  /** Inserts rows; on a data error splits until the bad rows are isolated as dead letters. */
  private async insertRows(batch: Batch, rows: number[], token: string, rejected: Set<number>): Promise<void> {
    if (rows.length === 0) return;
    const statement = statementToken(batch, rows, token);
    try {
      await this.withRetry('insert', () => this.io.insert(this.table, statement, rows.map((i) => batch.lines[i]!)), rows.length > 1, batch);
    } catch (err) {
      if (err instanceof TooLargeError) {
        this.log.warn({ table: this.table, rows: rows.length, err: (err.cause as Error)?.message }, 'insert too large for the server memory: splitting it');
        const mid = rows.length >>> 1;
        await this.insertRows(batch, rows.slice(0, mid), `${token}/a`, rejected);
        await this.insertRows(batch, rows.slice(mid), `${token}/b`, rejected);
        return;
      }
      if (err instanceof StoppedError || err instanceof AbandonedError || this.io.isRetriable(err) || this.io.isFatal(err)) throw err;
      if (rows.length === 1) {
        const i = rows[0]!;
        batch.deadLetters.push({ message: batch.sources[i]!, reason: 'clickhouse_rejected', message_: (err as Error).message, step: 'insert' });
        rejected.add(i);
        return;
      }
      this.log.debug({ table: this.table, rows: rows.length, err }, 'insert refused: splitting to isolate the bad rows');
      const mid = rows.length >>> 1;
      await this.insertRows(batch, rows.slice(0, mid), `${token}/a`, rejected);
      await this.insertRows(batch, rows.slice(mid), `${token}/b`, rejected);
    }
  }

  private async withRetry<T>(what: string, fn: () => Promise<T>, splittable: boolean, batch: Batch): Promise<T> {
    let tooLarge = 0;
    for (let attempt = 0; ; attempt++) {
      if (this.stopping && attempt > 0) throw new StoppedError();
      if (batch.assignment !== this.assignment) throw new AbandonedError();
      try {
        const result = await fn();
        if (this.failing) {
          this.failing = false;
          this.log.info({ table: this.table, what, attempts: attempt + 1 }, 'ClickHouse accepts writes again');
          this.updateFlow();
        }
        return result;
      } catch (err) {
        if (this.io.isFatal(err) || !this.io.isRetriable(err)) throw err;
        if (splittable && this.io.isTooLarge?.(err) && ++tooLarge >= tooLargeAttempts) throw new TooLargeError(err);
        this.stats.insertFailures++;
        // The failed attempt may have landed; check again before writing.
        this.settled.clear();
        if (!this.failing) {
          this.failing = true;
          this.updateFlow();
        }
        const delay = backoffDelay(attempt, this.limits.retryInitialMs, this.limits.retryMaxMs);
        this.log.warn({ table: this.table, what, attempt: attempt + 1, delayMs: delay, err: (err as Error).message }, 'write failed, retrying');
        if (this.stopping) throw new StoppedError();
        if (batch.assignment !== this.assignment) throw new AbandonedError();
        const signal = this.stopped.signal;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            signal.removeEventListener('abort', done);
            this.wakeBackoff = undefined;
            resolve();
          };
          const timer = setTimeout(done, delay);
          signal.addEventListener('abort', done, { once: true });
          // A revoke ends the wait: the batch is abandoned at once, and the group is not held up
          // for the rest of an outage's backoff (up to retryMaxMs).
          this.wakeBackoff = done;
        });
      }
    }
  }

  private async commit(batch: Batch): Promise<void> {
    // Committed behind the new owner's commit, it would move the group's offset back.
    if (batch.assignment !== this.assignment) throw new AbandonedError();
    const offsets: { partition: number; offset: string }[] = [];
    for (const [partition, last] of batch.last) {
      const next = BigInt(last) + 1n;
      // After a rebalance Kafka may redeliver older offsets; never move a commit backwards.
      if ((this.committed.get(partition) ?? -1n) >= next) continue;
      offsets.push({ partition, offset: next.toString() });
    }
    if (offsets.length === 0) return;
    try {
      await this.io.commit(this.topic, offsets);
      for (const o of offsets) this.committed.set(o.partition, BigInt(o.offset));
    } catch (err) {
      // The rows are written; a lost commit only means a redelivery, which the replay check drops.
      this.settled.clear();
      this.log.warn({ table: this.table, err: (err as Error).message }, 'offset commit failed; the rows are written and a redelivery will be skipped');
    }
  }
}
