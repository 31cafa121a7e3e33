import { z } from 'zod';
import type { Checkpoint } from './engine.js';

/**
 * The alerter's checkpoint on the compacted topic `alerter.baselines`, next to the baselines: one
 * record under one key, holding how far windows are closed and the suppression that goes with it.
 * Written in the transaction of a batch that moved it (see `Engine.checkpointDue`), with that
 * batch's alerts and input offsets, and only by the instance holding every input partition, so
 * what a restart reads back is what went out: it closes those windows silently and no others
 * (see `Engine.resume`). Before, a restart closed windows from the re-read
 * input alone: on every partition "just heard from", so a quiet partition held back windows that
 * closed a second time (and alerted again) once it was quiet again; and from only the partitions
 * committed when a crash came during the startup wait, so the alerts of windows the others still
 * held input for were never sent.
 *
 * The key is a JSON string, never the [rule, endpoint, model, version] array of a baseline, so the
 * two cannot meet; an older alerter skips it as an unreadable baseline.
 */
export const checkpointKey = JSON.stringify('checkpoint');

const format = 1;

const valueSchema = z
  .object({
    format: z.literal(format),
    // null: nothing closed yet. Written by a first start, so a crash before its first window
    // closes is told from an upgrade from an alerter that wrote no checkpoint.
    closed_up_to: z.number().finite().nullable(),
    last_fired: z.array(z.tuple([z.string(), z.number().finite()])).max(100_000),
  })
  .strip();

/**
 * One suppression entry is a rule, a model and a version (about 100 bytes): a record of 256 KiB
 * holds thousands, more than alerts that fire within one suppression period. Past that the oldest
 * are left out, which at worst lets one of them alert again.
 */
export const maxCheckpointBytes = 256 * 1024;

export function encodeCheckpoint(c: Checkpoint): { key: string; value: string; dropped: number } {
  const entries = [...c.lastFired].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let bytes = 128;
  let kept = 0;
  for (const [k] of entries) {
    const cost = Buffer.byteLength(JSON.stringify(k)) + 24;
    if (bytes + cost > maxCheckpointBytes) break;
    bytes += cost;
    kept++;
  }
  const value = JSON.stringify({ format, closed_up_to: c.closedUpTo ?? null, last_fired: entries.slice(0, kept) });
  return { key: checkpointKey, value, dropped: entries.length - kept };
}

export type DecodedCheckpoint = { ok: true; checkpoint: Checkpoint } | { ok: false; reason: string };

/** The record's value → the checkpoint; never throws. */
export function decodeCheckpoint(value: Buffer | string | null): DecodedCheckpoint {
  if (value === null) return { ok: false, reason: 'tombstone' };
  try {
    const v = valueSchema.safeParse(JSON.parse(String(value)));
    if (!v.success) return { ok: false, reason: `value: ${v.error.issues[0]?.path.join('.') ?? ''} ${v.error.issues[0]?.message ?? 'invalid'}` };
    return { ok: true, checkpoint: { closedUpTo: v.data.closed_up_to ?? undefined, lastFired: new Map(v.data.last_fired) } };
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` };
  }
}

/** A checkpoint record as read from the topic. */
export interface CheckpointRecord {
  partition: number;
  offset: number;
  /** The record's timestamp: orders records of different partitions. */
  timestamp: number;
  value: Buffer | string | null;
}

export type LatestCheckpoint =
  | { kind: 'found'; checkpoint: Checkpoint }
  /** No checkpoint record at all. */
  | { kind: 'none' }
  /** The latest record could not be read, or not every record was: an earlier one may be stale. */
  | { kind: 'unreadable'; reason: string };

interface Position {
  partition: number;
  offset: number;
  timestamp: number;
}

/**
 * Picks the checkpoint a restart may trust from the records read, in offset order per partition.
 * Usually one partition holds them all, but producers on different clients hash the key to
 * different partitions (librdkafka's default partitioner is not kafkajs's), so there can be
 * several: the one with the largest closedUpTo wins. A record that cannot be read makes the
 * result unreadable when it came after the winner (later in the same partition, or stamped no
 * earlier in another): taking the earlier checkpoint would send again every alert between the
 * two. One before a readable record of its own partition is superseded by it.
 */
export class CheckpointPicker {
  private best: (Position & { checkpoint: Checkpoint }) | undefined;
  /** partition → the latest unreadable record after its last readable one */
  private readonly unreadable = new Map<number, Position & { reason: string }>();

  add(r: CheckpointRecord): void {
    const c = decodeCheckpoint(r.value);
    if (!c.ok) {
      const prev = this.unreadable.get(r.partition);
      this.unreadable.set(r.partition, { partition: r.partition, offset: r.offset, timestamp: Math.max(r.timestamp, prev?.timestamp ?? -Infinity), reason: c.reason });
      return;
    }
    this.unreadable.delete(r.partition);
    const b = this.best;
    const closed = c.checkpoint.closedUpTo ?? -Infinity;
    const bestClosed = b?.checkpoint.closedUpTo ?? -Infinity;
    if (!b || closed > bestClosed || (closed === bestClosed && (r.partition === b.partition ? r.offset > b.offset : r.timestamp >= b.timestamp))) {
      this.best = { partition: r.partition, offset: r.offset, timestamp: r.timestamp, checkpoint: c.checkpoint };
    }
  }

  /** `complete`: every record up to the end of the topic was read. */
  result(complete: boolean): LatestCheckpoint {
    if (!complete) return { kind: 'unreadable', reason: 'the read ended before the end of the topic' };
    const b = this.best;
    for (const u of this.unreadable.values()) {
      const later = !b || (u.partition === b.partition ? u.offset > b.offset : u.timestamp >= b.timestamp);
      if (later) return { kind: 'unreadable', reason: `${u.partition}@${u.offset}: ${u.reason}` };
    }
    return b ? { kind: 'found', checkpoint: b.checkpoint } : { kind: 'none' };
  }
}
