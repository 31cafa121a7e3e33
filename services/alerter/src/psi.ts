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

/** Pooled bucket for rare categories and those beyond maxCategories. */
export const otherCategory = '(other)';

/**
 * A category seen fewer times than this on both sides is pooled: a share estimated from a handful
 * of decisions is noise, and the epsilon floor turns each such category present on one side only
 * into a sizeable term. Free-text decisions (agent steps, generated answers) are nearly all
 * unique: two versions behaving the same had PSI 2.2 at 50 decisions each, 0.37 at 200, all from
 * singletons. Five is the usual least expected count for a test on a contingency table.
 */
export const minCategoryCount = 5;

/**
 * Population stability index between two categorical distributions given as weights:
 * Σ (actual − baseline) · ln(actual / baseline) over shares. A category absent on one side would
 * make the log infinite, so shares are floored at `epsilon` (the usual practice); that keeps one
 * unseen decision from dominating while still counting it. Categories seen fewer than `minCount`
 * times on both sides, and those beyond the most frequent `maxCategories` (by combined share), are
 * pooled, so free-text outputs stay bounded and their singletons do not pass for a shift.
 * `counts`: decisions actually seen on each side (the weights are 1 / sample rate each); default:
 * the totals of the weights.
 *
 * A side with "(other)" mass kept only some categories (aggregates keep the first 200 distinct
 * decisions they meet, in arrival order): a category it does not track may be hidden in its
 * "(other)", so the other side's count of it is pooled too. Only categories both sides track are
 * compared one by one; two versions with the same mix over 300 categories had PSI 1.8 otherwise.
 */
export function psi(
  baselineWeights: ReadonlyMap<string, number>,
  actualWeights: ReadonlyMap<string, number>,
  opts: { maxCategories?: number; epsilon?: number; minCount?: number; counts?: { baseline: number; actual: number } } = {},
): PsiResult {
  const epsilon = opts.epsilon ?? 1e-4;
  const maxCategories = opts.maxCategories ?? 20;
  const minCount = opts.minCount ?? minCategoryCount;
  const total = (m: ReadonlyMap<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  const baseline = poolUntracked(baselineWeights, actualWeights);
  const actual = poolUntracked(actualWeights, baselineWeights);
  const tb = total(baseline);
  const ta = total(actual);
  if (tb <= 0 || ta <= 0) return { psi: 0, bins: [] };
  const nb = opts.counts?.baseline ?? tb;
  const na = opts.counts?.actual ?? ta;

  const combined = new Map<string, number>();
  for (const [k, v] of baseline) combined.set(k, (combined.get(k) ?? 0) + v / tb);
  for (const [k, v] of actual) combined.set(k, (combined.get(k) ?? 0) + v / ta);
  // Decisions seen of a category on a side, estimated from its share (weights differ by sample rate).
  const seen = (m: ReadonlyMap<string, number>, k: string, t: number, n: number) => ((m.get(k) ?? 0) / t) * n;
  const ranked = [...combined.entries()]
    .filter(([k]) => k !== otherCategory && (seen(baseline, k, tb, nb) >= minCount || seen(actual, k, ta, na) >= minCount))
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([k]) => k);
  // One bin goes to the pool when anything is pooled.
  const pooled = combined.size > ranked.length;
  const kept = new Set(ranked.length + (pooled ? 1 : 0) > maxCategories ? ranked.slice(0, maxCategories - 1) : ranked);

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

/** `side` with every category `other` does not track pooled as "(other)", when `other` has "(other)" mass. */
function poolUntracked(side: ReadonlyMap<string, number>, other: ReadonlyMap<string, number>): ReadonlyMap<string, number> {
  if (!((other.get(otherCategory) ?? 0) > 0)) return side;
  const out = new Map<string, number>();
  for (const [k, v] of side) {
    const key = other.has(k) ? k : otherCategory;
    out.set(key, (out.get(key) ?? 0) + v);
  }
  return out;
}
