/**
 * Deterministic sampling: the decision depends only on the trajectory key and the rate, so a
 * trajectory is kept or dropped whole, reprocessing gives the same answer, and raising the rate
 * keeps a superset of what a lower rate kept.
 */
export function sampleKey(traceId: string | null | undefined, requestId: string, eventId: string): string {
  // An empty id (a zero value in Go or Java) names nothing: every event carrying one would share
  // a single hash, all kept or all dropped. The next id that names something stands in.
  if (traceId) return traceId;
  if (requestId) return requestId;
  return eventId;
}

/** FNV-1a over UTF-16 code units, finished with murmur3's fmix32 for good avalanche on short keys. */
export function hash32(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function keep(key: string, rate: number): boolean {
  if (rate >= 1) return true;
  if (rate <= 0) return false;
  return hash32(key) / 0x1_0000_0000 < rate;
}
