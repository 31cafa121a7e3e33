import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';

const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `30s`, `5m`, `1h`, `7d` or a number of milliseconds → milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(value.trim());
  return m ? Number(m[1]) * units[m[2]!]! : undefined;
}

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration; write e.g. 30s, 5m, 1h, 7d or a number of milliseconds` });
    return z.NEVER;
  }
  return ms;
});
const positiveDuration = duration.refine((ms) => ms > 0, 'must be longer than 0');

const window = z
  .object({
    /** Length of the window in event time. */
    size: positiveDuration,
    /** Distance between window ends; equal to size (or absent): tumbling; smaller: sliding. */
    hop: positiveDuration.optional(),
  })
  .strict()
  .transform((w) => ({ size: w.size, hop: w.hop ?? w.size }))
  .refine((w) => w.hop <= w.size && w.size % w.hop === 0, 'window.size must be a whole multiple of window.hop');

const common = {
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lower-case letters, digits, _ and -'),
  severity: z.enum(['info', 'warning', 'critical']).default('warning'),
  window,
  /** Decisions actually observed (not weighted) before the rule may fire, on each side of a comparison. */
  min_samples: z.number().int().min(1),
  /** Repeats for the same rule and model version are dropped for this long (event time). */
  suppress_for: duration,
};

const ruleSchema = z.discriminatedUnion(
  'kind',
  [
    z
      .object({
        ...common,
        kind: z.literal('confidence_drop'),
        /** Fire when baseline mean confidence minus the version's is at least this (absolute). */
        min_drop: z.number().gt(0).max(1),
      })
      .strict(),
    z
      .object({
        ...common,
        kind: z.literal('decision_mix_shift'),
        /** Fire when the population stability index of the decision mix is at least this. */
        min_psi: z.number().gt(0),
        /** Decisions beyond the most frequent N are pooled, so free-text outputs stay bounded. */
        max_categories: z.number().int().min(2).max(1000).default(20),
      })
      .strict(),
    z
      .object({
        ...common,
        kind: z.literal('unresolved_artifacts'),
        /** Fire when the weighted share of decisions with resolved=false exceeds this. */
        max_rate: z.number().min(0).max(1),
      })
      .strict(),
    z
      .object({
        ...common,
        kind: z.literal('dead_letters'),
        /** Fire when dead letters / (dead letters + weighted decisions) exceeds this. */
        max_rate: z.number().min(0).max(1),
      })
      .strict(),
  ],
  { error: () => 'kind must be one of confidence_drop, decision_mix_shift, unresolved_artifacts, dead_letters' },
);

const rulesSchema = z
  .object({
    watermark: z
      .object({
        /** How far behind the newest event time windows stay open for stragglers. */
        allowed_lateness: duration,
        /**
         * A partition that has delivered nothing for this long (wall clock) is quiet, not slow,
         * and stops holding windows open, so one quiet partition does not stall every window.
         */
        idle_partition_after: positiveDuration,
        /**
         * Wall-clock time a starting alerter waits for every input partition that holds unread
         * decisions before it closes any window. Without it, the first partition fetched would
         * close windows that the others still hold data for, and that data would count as late.
         */
        startup_wait: duration.default(30_000),
      })
      .strict(),
    rules: z.array(ruleSchema).min(1, 'at least one rule'),
    /**
     * How long (event time) a version's last window is kept as a possible predecessor baseline
     * after it was last seen. Each model's two highest versions on each endpoint are kept regardless.
     */
    baseline_retention: positiveDuration.default(30 * 86_400_000),
  })
  .strict()
  .superRefine((doc, ctx) => {
    const seen = new Set<string>();
    doc.rules.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name ${r.name}` });
      seen.add(r.name);
    });
  });

export type RulesDocument = z.output<typeof rulesSchema>;
export type Rule = RulesDocument['rules'][number];
export type RuleKind = Rule['kind'];

export class RulesError extends Error {
  constructor(
    readonly file: string,
    readonly path: string,
    message: string,
  ) {
    super(`Invalid alert rules ${file} at ${path || '(top)'}: ${message}`);
    this.name = 'RulesError';
  }
}

/** ['rules', 1, 'min_drop'] → rules[1].min_drop */
function formatPath(path: PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out;
}

export function parseRules(text: string, file = '<inline>'): RulesDocument {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    throw new RulesError(file, '', `not valid YAML: ${(err as Error).message}`);
  }
  const parsed = rulesSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RulesError(file, formatPath(issue.path), issue.message);
  }
  return parsed.data;
}

export function loadRules(file: string): RulesDocument {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RulesError(file, '', `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}); set DLOG_ALERTER_RULES_FILE to a rules file`);
  }
  return parseRules(text, file);
}
