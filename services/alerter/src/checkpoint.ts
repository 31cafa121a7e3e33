import { z } from 'zod';
import type { Checkpoint } from './engine.js';

/**
 * The alerter's checkpoint on the compacted topic `alerter.baselines`, next to the baselines: one
 * record under one key, holding how far windows are closed and the suppression that goes with it.
 * Written in the transaction of every batch that closed windows, with that batch's alerts and
 * input offsets, so what a restart reads back is exactly what went out: it closes those windows
 * silently and no others (see `Engine.restore`). Before, a restart closed windows from the re-read
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
    closed_up_to: z.number().finite(),
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
  const value = JSON.stringify({ format, closed_up_to: c.closedUpTo, last_fired: entries.slice(0, kept) });
  return { key: checkpointKey, value, dropped: entries.length - kept };
}

export type DecodedCheckpoint = { ok: true; checkpoint: Checkpoint } | { ok: false; reason: string };

/** The record's value → the checkpoint; never throws. */
export function decodeCheckpoint(value: Buffer | string | null): DecodedCheckpoint {
  if (value === null) return { ok: false, reason: 'tombstone' };
  try {
    const v = valueSchema.safeParse(JSON.parse(String(value)));
    if (!v.success) return { ok: false, reason: `value: ${v.error.issues[0]?.path.join('.') ?? ''} ${v.error.issues[0]?.message ?? 'invalid'}` };
    return { ok: true, checkpoint: { closedUpTo: v.data.closed_up_to, lastFired: new Map(v.data.last_fired) } };
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` };
  }
}
