export interface PsiBin {
  category: string;
  /** Share in the baseline (expected). */
  baseline: number;
  /** Share in the version under test (actual). */
  actual: number;
  contribution: number;
}

export interface PsiResult {
  psi: number;
  bins: PsiBin[];
}

/** Pooled bucket for categories beyond maxCategories. */
export const otherCategory = '(other)';

/**
 * Population stability index between two categorical distributions given as weights:
 * Σ (actual − baseline) · ln(actual / baseline) over shares. A category absent on one side would
 * make the log infinite, so shares are floored at `epsilon` (the usual practice); that keeps one
 * unseen decision from dominating while still counting it. Categories beyond the most frequent
 * `maxCategories` (by combined share) are pooled, so free-text outputs stay bounded.
 */
export function psi(
  baseline: ReadonlyMap<string, number>,
  actual: ReadonlyMap<string, number>,
  opts: { maxCategories?: number; epsilon?: number } = {},
): PsiResult {
  const epsilon = opts.epsilon ?? 1e-4;
  const maxCategories = opts.maxCategories ?? 20;
  const total = (m: ReadonlyMap<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  const tb = total(baseline);
  const ta = total(actual);
  if (tb <= 0 || ta <= 0) return { psi: 0, bins: [] };

  const combined = new Map<string, number>();
  for (const [k, v] of baseline) combined.set(k, (combined.get(k) ?? 0) + v / tb);
  for (const [k, v] of actual) combined.set(k, (combined.get(k) ?? 0) + v / ta);
  const ranked = [...combined.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
  const kept = new Set(ranked.length > maxCategories ? ranked.slice(0, maxCategories - 1) : ranked);

  const shares = (m: ReadonlyMap<string, number>, t: number) => {
    const out = new Map<string, number>();
    for (const [k, v] of m) {
      const key = kept.has(k) ? k : otherCategory;
      out.set(key, (out.get(key) ?? 0) + v / t);
    }
    return out;
  };
  const b = shares(baseline, tb);
  const a = shares(actual, ta);
  const categories = [...new Set([...b.keys(), ...a.keys()])].sort();
  const bins: PsiBin[] = [];
  let sum = 0;
  for (const category of categories) {
    const pb = b.get(category) ?? 0;
    const pa = a.get(category) ?? 0;
    const eb = Math.max(pb, epsilon);
    const ea = Math.max(pa, epsilon);
    const contribution = (ea - eb) * Math.log(ea / eb);
    sum += contribution;
    bins.push({ category, baseline: pb, actual: pa, contribution });
  }
  return { psi: sum, bins };
}
