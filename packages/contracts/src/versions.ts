/**
 * Orders versions like people read them: numeric runs compare as numbers (2.10.0 after 2.9.1),
 * the rest as text, and a pre-release before its release (2.5.0-rc1 before 2.5.0, as semver
 * has it: the alerter takes the older of two versions as the baseline, and took 2.5.0 as the
 * baseline of its own release candidate). A pre-release is a `-` after a digit followed by a
 * letter, so date-like versions (2026-11-27) are read as they were. Versions equal by these rules
 * but written differently (1.01, 1.1) are ordered by their text, so the order is total and every
 * process sorts the same way. Written out rather than Intl.Collator for that reason too.
 */
export function compareVersions(a: string, b: string): number {
  if (a === b) return 0;
  const pa = preRelease.exec(a);
  const pb = preRelease.exec(b);
  const byRelease = compareRuns(pa ? pa[1]! : a, pb ? pb[1]! : b);
  if (byRelease !== 0) return byRelease;
  if (pa && !pb) return -1;
  if (pb && !pa) return 1;
  const byPre = pa && pb ? compareRuns(pa[2]!, pb[2]!) : 0;
  if (byPre !== 0) return byPre;
  return a < b ? -1 : 1;
}

const preRelease = /^(.*?\d)-([A-Za-z].*)$/s;

function compareRuns(a: string, b: string): number {
  const ta = a.split(/(\d+)/);
  const tb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    const x = ta[i]!;
    const y = tb[i]!;
    if (x === y) continue;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny) {
      const diff = Number(x) - Number(y);
      if (diff !== 0) return diff < 0 ? -1 : 1;
      continue;
    }
    return x < y ? -1 : 1;
  }
  return ta.length === tb.length ? 0 : ta.length < tb.length ? -1 : 1;
}
