import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { TableWriter, utcMonth, type DeadLetter, type WriterIo } from './table-writer.js';

const log = pino({ level: 'silent' });
const limits = { batchRows: 4, batchBytes: 1 << 20, flushIntervalMs: 10, maxBufferedBytes: 1 << 20, retryInitialMs: 1, retryMaxMs: 5 };

/** An in-memory ClickHouse and Kafka, recording the order of what the writer does. */
function fakeIo(opts: { badRows?: Set<string>; failTimes?: number } = {}) {
  const events: string[] = [];
  const stored = new Set<string>();
  const letters: DeadLetter[] = [];
  let failures = opts.failTimes ?? 0;
  const io: WriterIo = {
    insert: async (_t, token, body) => {
      if (failures > 0) {
        failures--;
        throw Object.assign(new Error('Too many parts'), { code: '252' });
      }
      if (new Set(body.map((r) => typeof r)).size > 1) events.push('MIXED');
      const rows = body.map((r) => (typeof r === 'string' ? r : `avro:${r.toString()}`));
      if (rows.some((r) => opts.badRows?.has(r))) throw Object.assign(new Error('Cannot parse input'), { code: '27' });
      rows.forEach((r) => stored.add(r));
      // The token's content fingerprint (#xxxxxxxx) and a part's row digest (@x{16}) are checked on their own below.
      events.push(`insert ${rows.join(',')} ${token.replace(/#[0-9a-f]{8}/, '').replace(/@[0-9a-f]{16}$/, '')}`);
    },
    existing: async (_t, _k, _tc, keys) => new Set(keys.filter((k) => stored.has(k))),
    deadLetter: async (_topic, l) => {
      letters.push(...l);
      events.push(`dlq ${l.map((d) => d.message.offset).join(',')}`);
    },
    commit: async (_topic, offsets) => {
      events.push(`commit ${offsets.map((o) => `${o.partition}@${o.offset}`).join(',')}`);
    },
    pause: () => events.push('pause'),
    resume: () => events.push('resume'),
    isRetriable: (err) => (err as { code?: string }).code === '252',
    isFatal: () => false,
  };
  return { io, events, stored, letters };
}

function add(w: TableWriter, partition: number, offset: number, key: string) {
  w.addRow({ partition, offset: String(offset), key: null, value: Buffer.from(key) }, key, key, 1000 + offset);
}

describe('TableWriter', () => {
  it('keys a batch by its offsets and its rows: a topic made again from offset 0 gets new tokens', async () => {
    const tokens: string[] = [];
    const { io } = fakeIo();
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, limits, { ...io, insert: async (_t, token) => void tokens.push(token) }, log, 'dlq');
    for (const keys of [['a', 'b'], ['x', 'y'], ['a', 'b']]) {
      keys.forEach((k, i) => add(w, 0, i, k));
      await w.drain();
    }
    assert.equal(tokens.length, 3);
    assert.notEqual(tokens[0], tokens[1], 'same offsets, other rows');
    assert.equal(tokens[0], tokens[2], 'same offsets and rows: a retry, deduplicated by ClickHouse');
  });

  it('splits a statement the server keeps refusing for its size, and loses nothing', async () => {
    const { io, events, stored } = fakeIo();
    let refused = 0;
    const sized: WriterIo = {
      ...io,
      insert: async (t, token, body) => {
        if (body.length > 2) {
          refused++;
          throw Object.assign(new Error('Memory limit exceeded'), { code: '241' });
        }
        return io.insert(t, token, body);
      },
      isRetriable: (err) => ['241', '252'].includes((err as { code?: string }).code ?? ''),
      isTooLarge: (err) => (err as { code?: string }).code === '241',
    };
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, limits, sized, log, 'dlq');
    ['a', 'b', 'c', 'd'].forEach((k, i) => add(w, 0, i, k));
    await w.drain();
    assert.equal(refused, 3, 'three attempts at the whole, then halves');
    assert.deepEqual([...stored].sort(), ['a', 'b', 'c', 'd']);
    assert.deepEqual(events.filter((e) => !e.startsWith('pause') && !e.startsWith('resume')), ['insert a,b topic/0:0-3/a', 'insert c,d topic/0:0-3/b', 'commit 0@4']);
  });

  it('after a crash, rows written past an isolated bad row are not written again', async () => {
    // The killed run wrote a, b, d, e, f (c was refused and isolated) and died before its dead
    // letter and commit. The new run reads the partition again in smaller batches.
    const { io, events, stored, letters } = fakeIo({ badRows: new Set(['c']) });
    for (const k of ['a', 'b', 'd', 'e', 'f']) stored.add(k);
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, { ...limits, batchRows: 2 }, io, log, 'dlq');
    ['a', 'b', 'c', 'd', 'e', 'f', 'g'].forEach((k, i) => add(w, 0, i, k));
    await w.drain();
    assert.deepEqual(events.filter((e) => e.startsWith('insert')).map((e) => e.split(' ')[1]), ['g']);
    assert.deepEqual(letters.map((l) => l.message.offset), ['2']);
  });

  it('after a crash inside an insert spanning two months, the month that landed is not written again', async () => {
    // The killed run's batch held offsets 0-5, January and February rows interleaved. ClickHouse
    // stores and commits one part per month: the January part landed, then the run died. The new
    // run reads the partition again in batches of two, each holding one row of each month.
    const jan = Date.UTC(2026, 0, 31, 23, 59);
    const feb = Date.UTC(2026, 1, 1, 0, 1);
    const { io, events, stored } = fakeIo();
    for (const k of ['a1', 'a2', 'a3']) stored.add(k);
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, { ...limits, batchRows: 2 }, io, log, 'dlq');
    const rows: [string, number][] = [['a1', jan], ['b1', feb], ['a2', jan], ['b2', feb], ['a3', jan], ['b3', feb], ['a4', jan], ['b4', feb]];
    rows.forEach(([k, t], i) => w.addRow({ partition: 0, offset: String(i), key: null, value: Buffer.from(k) }, k, k, t));
    await w.drain();
    assert.deepEqual(events.filter((e) => e.startsWith('insert')).map((e) => e.split(' ')[1]), ['b1', 'b2', 'b3', 'a4,b4']);
    assert.deepEqual(w.getStats().rowsSkippedAsReplay, 3);
  });

  it('files times under the UTC month ClickHouse partitions by', () => {
    assert.equal(utcMonth(Date.UTC(2026, 0, 31, 23, 59, 59, 999)), 202601);
    assert.equal(utcMonth(Date.UTC(2026, 1, 1)), 202602);
    assert.equal(utcMonth(Date.UTC(2026, 0, 15)), 202601, 'back to a month seen before the last');
    assert.equal(utcMonth(Date.UTC(1999, 11, 31, 12)), 199912);
    assert.equal(utcMonth(Number.NaN), 0);
  });

  it('commits only after the insert, in order, and isolates a bad row as a dead letter', async () => {
    const { io, events, letters } = fakeIo({ badRows: new Set(['c']) });
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, limits, io, log, 'dlq');
    ['a', 'b', 'c', 'd'].forEach((k, i) => add(w, 0, i, k));
    add(w, 1, 0, 'e');
    await w.drain();
    assert.deepEqual(letters.map((l) => [l.message.offset, l.reason]), [['2', 'clickhouse_rejected']]);
    assert.deepEqual(events, [
      'insert a,b topic/0:0-3/a',
      'insert d topic/0:0-3/b/b',
      'dlq 2',
      'commit 0@4',
      'insert e topic/1:0-0',
      'commit 1@1',
    ]);
  });

  it('retries retriable failures with the same token, paused, then resumes and checks for replays', async () => {
    const { io, events, stored } = fakeIo({ failTimes: 2 });
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, limits, io, log, 'dlq');
    stored.add('a'); // written by a previous owner of the partition
    ['a', 'b', 'c', 'd'].forEach((k, i) => add(w, 0, i, k));
    await w.drain();
    assert.deepEqual(events, ['pause', 'insert b,c,d topic/0:0-3', 'resume', 'commit 0@4']);
    const s = w.getStats();
    assert.equal(s.insertFailures, 2);
    assert.equal(s.rowsSkippedAsReplay, 1);
    assert.equal(s.paused, false);
  });

  it('never mixes JSON lines and Avro bodies in a batch: a change of kind seals it, so rows land in offset order', async () => {
    const { io, events, letters } = fakeIo({ badRows: new Set(['c']) });
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, limits, io, log, 'dlq');
    const avro = (offset: number, key: string) => w.addRow({ partition: 0, offset: String(offset), key: null, value: Buffer.from(key) }, Buffer.from(key), key, 1000 + offset);
    add(w, 0, 0, 'a');
    avro(1, 'b');
    add(w, 0, 2, 'c');
    avro(3, 'd');
    await w.drain();
    // Once, a batch of both was a JSON statement then an Avro one: a crash between them left d
    // written before b, and a replay check could settle on b and write d again.
    assert.deepEqual(events, ['insert a topic/0:0-0', 'commit 0@1', 'insert avro:b topic/0:1-1', 'commit 0@2', 'dlq 2', 'commit 0@3', 'insert avro:d topic/0:3-3', 'commit 0@4']);
    assert.deepEqual(letters.map((l) => l.message.offset), ['2']);
    const s = w.getStats();
    assert.equal(s.rowsWritten, 3);
    assert.equal(s.rowsWrittenAsAvro, 2);
  });

  it('drops what it buffered when the assignment changes (Kafka delivers it again)', async () => {
    const { io, events } = fakeIo();
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, { ...limits, batchRows: 100 }, io, log, 'dlq');
    add(w, 0, 0, 'a');
    w.reassigned();
    add(w, 0, 0, 'a');
    await w.drain();
    assert.deepEqual(events, ['insert a topic/0:0-0', 'commit 0@1']);
  });

  it('a rebalance during a replay check leaves the partition to be checked again: redelivered rows are not written twice', async () => {
    const stored: string[] = [];
    const tokens = new Set<string>();
    let release: (() => void) | undefined;
    let first = true;
    const { io } = fakeIo();
    const w = new TableWriter(
      't',
      'topic',
      { keyColumn: 'k', timeColumn: 'ts' },
      { ...limits, batchRows: 4 },
      {
        ...io,
        // ClickHouse drops a repeated insert token, as insert_deduplication_token does.
        insert: async (_t, token, rows) => {
          if (tokens.has(token)) return;
          tokens.add(token);
          stored.push(...rows.map(String));
        },
        // The first check waits (ClickHouse out of reach) while the group rebalances.
        existing: async (_t, _k, _tc, keys) => {
          if (first) {
            first = false;
            await new Promise<void>((r) => (release = r));
          }
          return new Set(keys.filter((k) => stored.includes(k)));
        },
      },
      log,
      'dlq',
    );
    for (let o = 0; o < 3; o++) add(w, 0, o, `e${o}`);
    await new Promise((r) => setTimeout(r, 20));
    w.tick(); // sealed by age: its replay check hangs
    await new Promise((r) => setTimeout(r, 20));
    w.reassigned();
    // Kafka delivers again from the committed offset (0), with newer messages: other batch bounds.
    for (let o = 0; o < 6; o++) add(w, 0, o, `e${o}`);
    release!();
    await new Promise((r) => setTimeout(r, 50));
    w.tick();
    await w.drain();
    assert.deepEqual([...stored].sort(), ['e0', 'e1', 'e2', 'e3', 'e4', 'e5']);
  });

  it('while a batch is being written, lets the next one grow and writes it as one insert when free', async () => {
    const { io, events } = fakeIo();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const insert = io.insert;
    let calls = 0;
    io.insert = async (t, token, rows) => {
      if (calls++ === 0) await gate;
      return insert(t, token, rows);
    };
    const w = new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, { ...limits, batchRows: 100 }, io, log, 'dlq');
    const t0 = Date.now();
    add(w, 0, 0, 'a');
    w.tick(t0 + 20); // sealed by age: the first insert starts and hangs
    // Three more flush intervals pass while it hangs, a row in each.
    add(w, 0, 1, 'b');
    w.tick(t0 + 40);
    add(w, 0, 2, 'c');
    w.tick(t0 + 60);
    add(w, 0, 3, 'd');
    w.tick(t0 + 80);
    assert.equal(w.getStats().bufferedRows, 4, 'nothing was sealed behind the batch in flight');
    await new Promise((r) => setTimeout(r, 15)); // the open batch is now older than the interval
    release();
    // The write loop takes b, c and d by itself (no tick, no drain).
    for (let i = 0; i < 200 && events.length < 4; i++) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(events, ['insert a topic/0:0-0', 'commit 0@1', 'insert b,c,d topic/0:1-3', 'commit 0@4']);
    await w.drain();
    assert.deepEqual(events, ['insert a topic/0:0-0', 'commit 0@1', 'insert b,c,d topic/0:1-3', 'commit 0@4']);
  });
});

/**
 * ClickHouse as the writer meets it across runs: a statement with a token seen before is dropped
 * whatever rows it carries (insert_deduplication_token), and refused rows fail their statement.
 */
function dedupingStore(badRows: ReadonlySet<string> = new Set()) {
  const stored: string[] = [];
  const tokens = new Set<string>();
  const letters: DeadLetter[] = [];
  const commits: string[] = [];
  const io: WriterIo = {
    insert: async (_t, token, body) => {
      const rows = body.map(String);
      if (rows.some((r) => badRows.has(r))) throw Object.assign(new Error('Cannot parse input'), { code: '27' });
      if (tokens.has(token)) return;
      tokens.add(token);
      stored.push(...rows);
    },
    existing: async (_t, _k, _tc, keys) => new Set(keys.filter((k) => stored.includes(k))),
    deadLetter: async (_topic, l) => void letters.push(...l),
    commit: async (_topic, offsets) => void commits.push(offsets.map((o) => `${o.partition}@${o.offset}`).join(',')),
    pause: () => undefined,
    resume: () => undefined,
    isRetriable: (err) => (err as { code?: string }).code === '252',
    isFatal: () => false,
  };
  return { io, stored, letters, commits };
}

const writer = (io: WriterIo, batchRows: number) => new TableWriter('t', 'topic', { keyColumn: 'k', timeColumn: 'ts' }, { ...limits, batchRows }, io, log, 'dlq');

describe('TableWriter across crashes and rebalances', () => {
  it('a batch split again after a crash mid-split writes its other rows: no part reuses a token of other rows', async () => {
    const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const ch = dedupingStore(new Set(['g']));
    // Run 1: the batch is refused (g), split; its first half (a-d) lands; the process dies in the next insert.
    let inserts = 0;
    const dying: WriterIo = { ...ch.io, insert: async (t, token, body) => (inserts++ === 2 ? new Promise<void>(() => undefined) : ch.io.insert(t, token, body)) };
    const run1 = writer(dying, 8);
    keys.forEach((k, i) => add(run1, 0, i, k));
    void run1.drain();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(ch.stored, ['a', 'b', 'c', 'd']);
    assert.deepEqual(ch.commits, []);
    // Run 2 reads the same eight messages: same batch bounds, so the same batch token.
    const run2 = writer(ch.io, 8);
    keys.forEach((k, i) => add(run2, 0, i, k));
    await run2.drain();
    assert.deepEqual([...ch.stored].sort(), ['a', 'b', 'c', 'd', 'e', 'f', 'h'], 'e and f were once dropped as a repeat of the first half');
    assert.deepEqual(ch.letters.map((l) => l.message.offset), ['6']);
    assert.deepEqual(ch.commits, ['0@8']);
  });

  it('a redelivered batch made only of refused rows does not end the replay check', async () => {
    const ch = dedupingStore(new Set(['c', 'd']));
    // The killed run wrote everything but the refused c and d, and died before its dead letters and commit.
    ch.stored.push('a', 'b', 'e', 'f');
    const w = writer(ch.io, 2);
    ['a', 'b', 'c', 'd', 'e', 'f', 'g'].forEach((k, i) => add(w, 0, i, k));
    await w.drain();
    assert.deepEqual([...ch.stored].sort(), ['a', 'b', 'e', 'f', 'g'], 'e and f were written twice');
    assert.deepEqual(ch.letters.map((l) => l.message.offset), ['2', '3']);
  });

  it('a batch retrying through an outage when its partition moves is neither written nor committed by the old owner', async () => {
    const ch = dedupingStore();
    let down = true;
    const oldCommits: string[] = [];
    const old = writer(
      {
        ...ch.io,
        insert: async (t, token, body) => {
          if (down) throw Object.assign(new Error('Too many parts'), { code: '252' });
          return ch.io.insert(t, token, body);
        },
        commit: async (_topic, offsets) => void oldCommits.push(offsets.map((o) => `${o.partition}@${o.offset}`).join(',')),
      },
      4,
    );
    ['a', 'b'].forEach((k, i) => add(old, 0, i, k));
    old.tick(Date.now() + 1_000);
    await new Promise((r) => setTimeout(r, 20));
    old.reassigned(); // the partition moves while the old owner backs off
    const owner = writer(ch.io, 4);
    ['a', 'b', 'c'].forEach((k, i) => add(owner, 0, i, k));
    await owner.drain();
    down = false;
    await old.drain();
    assert.deepEqual([...ch.stored].sort(), ['a', 'b', 'c']);
    assert.deepEqual(oldCommits, [], 'the old owner committed 0@2 behind the new owner\'s 0@3');
    assert.deepEqual(ch.commits, ['0@3']);
    // The old owner fetches again (it may get the partition back): paused for the outage, it
    // must not stay paused with no batch left to find out that ClickHouse is back.
    assert.equal(old.getStats().paused, false);
    assert.equal(old.getStats().failing, false);
  });
});

describe('TableWriter when its partitions are revoked (librdkafka)', () => {
  it('ends a backoff through an outage at once: the group is not held for the rest of it', async () => {
    const ch = dedupingStore();
    const w = new TableWriter(
      't',
      'topic',
      { keyColumn: 'k', timeColumn: 'ts' },
      { ...limits, batchRows: 2, retryInitialMs: 3_000, retryMaxMs: 3_000 },
      { ...ch.io, insert: async () => Promise.reject(Object.assign(new Error('Too many parts'), { code: '252' })) },
      log,
      'dlq',
    );
    ['a', 'b'].forEach((k, i) => add(w, 0, i, k));
    await new Promise((r) => setTimeout(r, 50)); // the first attempt failed: backing off for 3 s
    const outcome = await Promise.race([w.revoke().then(() => 'revoked'), new Promise((r) => setTimeout(() => r('still waiting'), 1_000))]);
    assert.equal(outcome, 'revoked');
    assert.deepEqual(ch.commits, []);
  });

  it('waits out the insert in flight, neither commits it nor starts another until the next assignment', async () => {
    const ch = dedupingStore();
    let release!: () => void;
    const slow = new Promise<void>((r) => (release = r));
    let calls = 0;
    const w = writer({ ...ch.io, insert: async (t, token, body) => (calls++ === 0 ? slow.then(() => ch.io.insert(t, token, body)) : ch.io.insert(t, token, body)) }, 2);
    ['a', 'b'].forEach((k, i) => add(w, 0, i, k));
    await new Promise((r) => setTimeout(r, 10));
    let revoked = false;
    const revoking = w.revoke().then(() => (revoked = true));
    add(w, 0, 2, 'c');
    add(w, 0, 3, 'd'); // a full batch, sealed while the partitions are going: not started
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(revoked, false, 'the statement already sent has not ended');
    release();
    await revoking;
    assert.deepEqual(ch.stored, ['a', 'b'], 'the statement in flight lands before the partitions go; nothing after it starts');
    assert.deepEqual(ch.commits, [], 'its offsets are not committed: the next owner finds its rows and skips them');
    w.reassigned(); // the next assignment: Kafka delivers from the committed offset again
    ['a', 'b', 'c', 'd'].forEach((k, i) => add(w, 0, i, k));
    await w.drain();
    assert.deepEqual([...ch.stored].sort(), ['a', 'b', 'c', 'd']);
    assert.deepEqual(ch.commits, ['0@2', '0@4']);
    assert.equal(w.getStats().bufferedBytes, 0);
  });
});
