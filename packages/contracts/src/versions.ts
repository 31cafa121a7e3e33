/**
 * Orders versions like people read them: numeric runs compare as numbers (2.10.0 after 2.9.1),
 * the rest as text. Written out rather than Intl.Collator so every process orders the same way.
 */
export function compareVersions(a: string, b: string): number {
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
