import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';
import { maxDistinctDecisions } from './aggregate.js';
import { paneSize } from './windows.js';

const second = 1_000;
const minute = 60_000;
const hour = 3_600_000;
const day = 86_400_000;
const units: Record<string, number> = { ms: 1, s: second, m: minute, h: hour, d: day };

/**
 * `500ms`, `30s`, `5m`, `1h`, `7d` or a number of milliseconds → milliseconds; undefined past
 * 2^53 − 1, where milliseconds stop being exact. A rules file may not write a bare number (see
 * `duration`).
 */
export function parseDuration(value: string | number): number | undefined {
  const ms = typeof value === 'number' ? value : unitDuration(value);
  return ms !== undefined && Number.isSafeInteger(ms) && ms >= 0 ? ms : undefined;
}

/** `30s` → 30000 (may be past safe integers: the caller bounds it); undefined when not written so. */
function unitDuration(value: string): number | undefined {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(value.trim());
  return m ? Number(m[1]) * units[m[2]!]! : undefined;
}

/** 90000 → `90s`: in the largest unit that writes it whole, for messages. */
function formatDuration(ms: number): string {
  const unit = (['d', 'h', 'm', 's'] as const).find((u) => ms % units[u]! === 0 && ms > 0);
  return unit ? `${ms / units[unit]!}${unit}` : `${ms}ms`;
}

/**
 * A duration field between `min` and `max`, in whole seconds when `wholeSeconds`. A number needs
 * a unit (only 0 means the same in every unit): `size: 10` was read as 10 ms, meant as minutes,
 * and made every rule's pane 10 ms. `max` keeps every sum of an event time and a duration exact
 * and far below 2^53; each field's comment says why its bounds are what they are.
 */
function duration({ min, max, wholeSeconds = false }: { min: number; max: number; wholeSeconds?: boolean }) {
  return z.union([z.string(), z.number()], { error: () => 'write a duration with a unit, e.g. 30s, 5m, 1h or 7d' }).transform((v, ctx) => {
    const fail = (message: string) => {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    };
    if (typeof v === 'number' && v !== 0) {
      return fail(Number.isInteger(v) && v > 0 ? `${v} has no unit; write ${v}s, ${v}m or ${v}h` : `${v} is not a duration; write e.g. 30s, 5m, 1h or 7d`);
    }
    const ms = typeof v === 'number' ? 0 : unitDuration(v);
    if (ms === undefined) return fail(`${JSON.stringify(v)} is not a duration; write e.g. 30s, 5m, 1h or 7d`);
    // Past safe integers (99999999999999999999d) too: every such value is far beyond max.
    if (ms > max) return fail(`${v} is too long; write at most ${formatDuration(max)}`);
    if (ms < min) return fail(`${v} is too short; write at least ${formatDuration(min)}`);
    if (wholeSeconds && ms % second !== 0) return fail(`${v} is not a whole number of seconds; write ${Math.floor(ms / second)}s or ${Math.ceil(ms / second)}s`);
    return ms;
  });
}

/**
 * Window sizes and hops: whole seconds from 1s. The engine keeps state per pane, the largest step
 * dividing every rule's size and hop, so one rule's odd value sets the pane for all (1001ms next
 * to 1s would make it 1 ms); whole seconds keep panes at 1s or more, and a rule closing at most one
 * window a second. Up to 30d: a window longer than a month is not an alert, and the panes of the
 * longest window stay in memory.
 */
const windowDuration = duration({ min: second, max: 30 * day, wholeSeconds: true });

/**
 * Panes one window may span (size / pane, the pane being shared by all rules): a week of one-minute
 * panes. Every window close merges them all, and they are all held: at 10,080 panes with three
 * versions that measured 28 ms a close and 27 MiB, growing linearly; a stray one-second hop next to
 * a 30-day window would hold 2.6M.
 */
const maxPanesPerWindow = 10_080;

const window = z
  .object({
    /** Length of the window in event time. */
    size: windowDuration,
    /** Distance between window ends; equal to size (or absent): tumbling; smaller: sliding. */
    hop: windowDuration.optional(),
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
  /**
   * Repeats for the same rule and model version are dropped for this long (event time); 0 (or
   * anything up to the hop) drops none. Up to 30d: a restart without a checkpoint re-reads this
   * much input to rebuild suppression.
   */
  suppress_for: duration({ min: 0, max: 30 * day }),
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
        /**
         * Decisions beyond the most frequent N are pooled, so free-text outputs stay bounded. At
         * most what a window keeps of each version (`maxDistinctDecisions`): a larger value
         * promised categories that were pooled before PSI saw them.
         */
        max_categories: z
          .number()
          .int()
          .min(2)
          .max(maxDistinctDecisions, `max_categories: at most ${maxDistinctDecisions}; windows keep the first ${maxDistinctDecisions} distinct decisions of each version and pool the rest as "(other)"`)
          .default(20),
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
        /**
         * How far behind the newest event time windows stay open for stragglers; 0: none. Up to 1d:
         * every alert comes this late, and the panes of this much event time are held besides.
         */
        allowed_lateness: duration({ min: 0, max: day }),
        /**
         * A partition that has delivered nothing for this long (wall clock) is quiet, not slow,
         * and stops holding windows open, so one quiet partition does not stall every window.
         * At least 1s: below the time between fetches every partition passes for quiet and the
         * fastest one's event time closes windows the others still hold input for. Up to 1d: a
         * partition gone quiet stalls every window this long.
         */
        idle_partition_after: duration({ min: second, max: day }),
        /**
         * Wall-clock time a starting alerter waits for every input partition that holds unread
         * decisions before it closes any window. Without it, the first partition fetched would
         * close windows that the others still hold data for, and that data would count as late.
         * 0 does not wait (one input partition). Up to 1h: a partition whose only unread record is
         * a transaction marker is waited for this long, with no window closing.
         */
        startup_wait: duration({ min: 0, max: hour }).default(30 * second),
      })
      .strict(),
    rules: z.array(ruleSchema).min(1, 'at least one rule'),
    /**
     * How long (event time) a version's last window is kept as a possible predecessor baseline
     * after it was last seen. Each model's two highest versions on each endpoint are kept regardless.
     * Up to a year: the versions of this period are all held in memory.
     */
    baseline_retention: duration({ min: second, max: 365 * day }).default(30 * day),
  })
  .strict()
  .superRefine((doc, ctx) => {
    const seen = new Set<string>();
    doc.rules.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name ${r.name}` });
      seen.add(r.name);
    });
    const pane = paneSize(doc.rules.map((r) => r.window));
    doc.rules.forEach((r, i) => {
      const panes = r.window.size / pane;
      if (panes > maxPanesPerWindow) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'window'],
          message:
            `window.size ${formatDuration(r.window.size)} spans ${panes} panes of ${formatDuration(pane)}; at most ${maxPanesPerWindow}. ` +
            'The pane is the largest step dividing every rule\'s window size and hop: make the hops coarser or this window shorter',
        });
      }
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
