/** Largest step that divides every window size and hop: state is kept per pane of this length. */
export function paneSize(windows: readonly { size: number; hop: number }[]): number {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  return windows.reduce((g, w) => gcd(gcd(g, w.size), w.hop), 0);
}

/** Start of the step-aligned interval holding ts (aligned to the epoch, so every process agrees). */
export function floorTo(ts: number, step: number): number {
  return Math.floor(ts / step) * step;
}

/**
 * Ends of the windows (size, hop) that close in (after, upTo] and hold at least one of the given
 * panes, ascending. Windows are [end − size, end) with end a multiple of hop; a pane starting at s
 * lies in every window with s < end ≤ s + size. Empty windows are never listed, so a long gap in
 * event time costs nothing.
 */
export function closingWindowEnds(
  paneStarts: Iterable<number>,
  window: { size: number; hop: number },
  after: number,
  upTo: number,
): number[] {
  const ends = new Set<number>();
  for (const s of paneStarts) {
    const first = Math.max(floorTo(s, window.hop) + window.hop, floorTo(after, window.hop) + window.hop);
    const last = Math.min(floorTo(s + window.size, window.hop), floorTo(upTo, window.hop));
    for (let e = first; e <= last; e += window.hop) ends.add(e);
  }
  return [...ends].sort((a, b) => a - b);
}
