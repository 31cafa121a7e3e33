/**
 * Repeats of the same rule for the same subject (model version) are dropped for `suppressFor` of
 * event time after the window end of the last alert that went out. Event time, not the wall
 * clock, so a replay of the same input suppresses the same alerts. Returns true when the alert
 * should go out (and records it).
 */
export function admit(lastFired: Map<string, number>, key: string, windowEnd: number, suppressFor: number): boolean {
  const last = lastFired.get(key);
  if (last !== undefined && windowEnd - last < suppressFor) return false;
  lastFired.set(key, windowEnd);
  return true;
}

/** Forgets entries that can no longer suppress anything, so the map stays small. */
export function expire(lastFired: Map<string, number>, closedUpTo: number, longestSuppression: number): void {
  for (const [key, end] of lastFired) if (closedUpTo - end >= longestSuppression) lastFired.delete(key);
}
