import { z } from 'zod';
import { decisionEntryBytes, maxDecisionBytes, type VersionAgg } from './aggregate.js';
import { otherCategory } from './psi.js';
import type { AlerterState } from './engine.js';
import { parseSubjectKey, splitKey, subjectKey, type HistoryEntry } from './evaluate.js';

/**
 * The alerter's predecessor baselines on the compacted topic `alerter.baselines`: one record per
 * rule and model version, keyed by both, holding the version's last window with enough samples;
 * a tombstone once it is dropped. Written in the same transaction as the alerts and input offsets
 * of the batch that changed them, and read back at start, so a restart keeps every baseline, not
 * only those the input replay (the lookback of the longest window and suppression) happens to
 * rebuild. Internal to the alerter: JSON, with a format version.
 */

const format = 1;

const count = z.number().finite().min(0);
const pairs = z.array(z.tuple([z.string(), z.number().finite()])).max(10_000);
const valueSchema = z
  .object({
    format: z.literal(format),
    rule: z.string(),
    endpoint: z.string(),
    model: z.string(),
    version: z.string(),
    window_end: z.number().int(),
    agg: z.object({
      n: count,
      weight: count,
      confN: count,
      confWeight: count,
      confSum: z.number().finite(),
      unresolvedN: count,
      unresolvedWeight: count,
      decisions: pairs,
      unresolvedRefs: pairs,
    }),
  })
  .strip();
const keySchema = z.tuple([z.string(), z.string(), z.string(), z.string()]);

/**
 * Bounds on a record. Decisions can be free text (agent steps), and one record over the broker's
 * message.max.bytes (1 MiB by default) would fail its batch's transaction every time it is tried
 * again. Windows already keep their decisions within `maxDecisionBytes` (aggregate.ts), so a
 * record holds the window as it was judged; an entry over it all the same is cut down here, the
 * least frequent decisions pooled as "(other)", as PSI pools its tail anyway. A record still over
 * `maxRecordBytes` (identifiers of absurd length) is not written.
 */
export { maxDecisionBytes };
export const maxRecordBytes = 256 * 1024;

function boundedDecisions(decisions: ReadonlyMap<string, number>): [string, number][] {
  const all = [...decisions];
  let bytes = 0;
  for (const [k] of all) bytes += decisionEntryBytes(k);
  if (bytes <= maxDecisionBytes) return all;
  all.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const kept: [string, number][] = [];
  let other = 0;
  bytes = decisionEntryBytes(otherCategory);
  for (const [k, v] of all) {
    const cost = decisionEntryBytes(k);
    if (k === otherCategory || bytes + cost > maxDecisionBytes) other += v;
    else {
      kept.push([k, v]);
      bytes += cost;
    }
  }
  kept.push([otherCategory, other]);
  return kept;
}

export interface BaselineRecord {
  key: string;
  value: string | null;
}

/**
 * State key (`baselineKey`) → the topic record: a JSON key naming rule and subject, and the entry
 * or a tombstone; undefined when it would be over `maxRecordBytes`. Only what a comparison reads
 * of the window is kept: not the refs left unresolved.
 */
export function encodeBaseline(stateKey: string, entry: HistoryEntry | null): BaselineRecord | undefined {
  const [rule = '', subject = ''] = splitKey(stateKey);
  const { endpoint, model, version } = parseSubjectKey(subject);
  const key = JSON.stringify([rule, endpoint, model, version]);
  if (entry === null) return { key, value: null };
  const a: VersionAgg = entry.subject.agg;
  const value = JSON.stringify({
    format,
    rule,
    endpoint,
    model,
    version,
    window_end: entry.windowEnd,
    agg: { ...a, decisions: boundedDecisions(a.decisions), unresolvedRefs: [] },
  });
  return Buffer.byteLength(key) + Buffer.byteLength(value) > maxRecordBytes ? undefined : { key, value };
}

export type DecodedBaseline =
  | { ok: true; rule: string; subject: string; entry: HistoryEntry | null }
  | { ok: false; reason: string };

/** A record of the topic → what to do with the state; never throws. */
export function decodeBaseline(key: Buffer | string | null, value: Buffer | string | null): DecodedBaseline {
  try {
    const k = keySchema.safeParse(JSON.parse(String(key)));
    if (!k.success) return { ok: false, reason: 'key is not [rule, endpoint, model, version]' };
    const [rule, endpoint, model, version] = k.data;
    const subject = subjectKey(endpoint, model, version);
    if (value === null) return { ok: true, rule, subject, entry: null };
    const v = valueSchema.safeParse(JSON.parse(String(value)));
    if (!v.success) return { ok: false, reason: `value: ${v.error.issues[0]?.path.join('.') ?? ''} ${v.error.issues[0]?.message ?? 'invalid'}` };
    const d = v.data;
    if (d.rule !== rule || d.endpoint !== endpoint || d.model !== model || d.version !== version) return { ok: false, reason: 'value names another rule or subject than its key' };
    const agg: VersionAgg = { ...d.agg, decisions: new Map(d.agg.decisions), unresolvedRefs: new Map(d.agg.unresolvedRefs) };
    return { ok: true, rule, subject, entry: { windowEnd: d.window_end, subject: { endpoint, model, version, agg } } };
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` };
  }
}

/**
 * Applies a restored baseline to the state. Later records of a key replace earlier ones; a
 * tombstone removes it. Rules not in the rules file are left out but not deleted: a rule taken
 * out and put back finds its baselines again.
 */
export function applyBaseline(state: AlerterState, rules: ReadonlySet<string>, b: Extract<DecodedBaseline, { ok: true }>): void {
  if (!rules.has(b.rule)) return;
  let history = state.history.get(b.rule);
  if (b.entry === null) {
    history?.delete(b.subject);
    return;
  }
  if (!history) state.history.set(b.rule, (history = new Map()));
  history.set(b.subject, b.entry);
}
