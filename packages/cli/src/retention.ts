import { clickHouseErrorCode } from '@dlog/store';
import type { AuditQuery, Row } from './audit-query.js';

/** How long the decisions table keeps one tier's records. A tier without a TTL keeps them. */
export interface TierRetention {
  tier: string;
  days: number;
}

/**
 * The decisions table's retention per tier, read from the table itself: its TTL (migration 001)
 * is the one place the policy is written, so a changed TTL changes what dlog says with it. The
 * counts (decision_counts) have no TTL: a count can outlive the record it counted.
 */
export async function decisionRetention(q: AuditQuery): Promise<TierRetention[]> {
  let rows: Row[];
  try {
    rows = await q("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'decisions'");
  } catch (err) {
    // A server may refuse an analyst the system tables (an engine error, with a code): the
    // retention only adds a note, which is then left out; the scope itself must not fail for it.
    if (clickHouseErrorCode(err) === undefined) throw err;
    return [];
  }
  return parseTierRetention(String(rows[0]?.engine_full ?? ''));
}

const dayUnits: Record<string, number> = { Day: 1, Week: 7 };

/**
 * The per-tier TTLs of a table's `engine_full`, as the engine writes them back:
 * `TTL toDateTime(ts) + toIntervalDay(90) WHERE tier = 'minimal', ...`. Only whole days and weeks
 * are read (a month has no fixed length to count back from); a TTL written another way is left
 * out, and dlog then says nothing of expiry rather than something wrong.
 */
export function parseTierRetention(engineFull: string): TierRetention[] {
  const ttl = /\bTTL\b(.*?)(?:\bSETTINGS\b|$)/s.exec(engineFull)?.[1] ?? '';
  const out: TierRetention[] = [];
  for (const m of ttl.matchAll(/\+\s*toInterval(Day|Week)\((\d+)\)\s+(?:DELETE\s+)?WHERE\s+tier\s*=\s*'([^'\\]+)'/g)) {
    out.push({ tier: m[3]!, days: Number(m[2]) * dayUnits[m[1]!]! });
  }
  return out;
}
