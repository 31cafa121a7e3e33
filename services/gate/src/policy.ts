import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';
import { joinKey } from '@dlog/contracts';
import { fieldPathProblem } from './field-path.js';

export type Tier = 'full' | 'standard' | 'minimal';
export type FieldRule = 'hash' | 'redact' | 'drop' | 'keep';
export const detectorNames = ['email', 'phone', 'card', 'iban', 'national_id', 'ip'] as const;
export type DetectorName = (typeof detectorNames)[number];

const tier = z.enum(['full', 'standard', 'minimal']);
const rate = z.number().min(0).max(1);
const glob = z.string().min(1).max(200);

const policySchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
    version: z.string().regex(/^[A-Za-z0-9._-]{1,32}$/),
    limits: z
      .object({
        max_event_bytes: z.number().int().positive().max(16 * 1024 * 1024),
        max_ts_skew_past_ms: z.number().int().positive(),
        max_ts_skew_future_ms: z.number().int().positive(),
      })
      .strict(),
    defaults: z.object({ tier, sample_rate: rate }).strict(),
    rules: z
      .array(
        z
          .object({
            name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
            match: z
              .object({ model: glob, endpoint: glob, decision_type: glob, tenant: glob })
              .partial()
              .strict()
              .refine((m) => Object.keys(m).length > 0, 'a rule must match on at least one of model, endpoint, decision_type, tenant'),
            tier,
            sample_rate: rate,
          })
          .strict(),
      )
      .default([]),
    pii: z
      .object({
        fields: z
          .array(
            z
              .object({
                // Refused here, when the gate starts, rather than matching nothing for ever.
                path: z
                  .string()
                  .max(300)
                  .superRefine((path, ctx) => {
                    const problem = fieldPathProblem(path);
                    if (problem) ctx.addIssue({ code: 'custom', message: problem });
                  }),
                rule: z.enum(['hash', 'redact', 'drop', 'keep']),
              })
              .strict(),
          )
          .default([]),
        detectors: z.array(z.enum(detectorNames)).default([...detectorNames]),
      })
      .strict(),
  })
  .strict();

export type PolicyDocument = z.infer<typeof policySchema>;

export interface Classification {
  tier: Tier;
  sampleRate: number;
  rule: string;
}

export interface Policy {
  /** `name@version+<digest>`: stamped on every record this policy treats. */
  readonly id: string;
  readonly doc: PolicyDocument;
  classify(event: { model: string; endpoint: string; decisionType: string; tenant: string | null }): Classification;
}

export class PolicyError extends Error {
  constructor(
    readonly file: string,
    readonly path: string,
    message: string,
  ) {
    super(`Invalid policy ${file} at ${path || '(top)'}: ${message}`);
    this.name = 'PolicyError';
  }
}

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*');
  return new RegExp(`^${escaped}$`);
}

export function parsePolicy(text: string, file = '<inline>'): Policy {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    throw new PolicyError(file, '', `not valid YAML: ${(err as Error).message}`);
  }
  const parsed = policySchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new PolicyError(file, issue.path.join('.'), issue.message);
  }
  const doc = parsed.data;
  const digest = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const rules = doc.rules.map((r) => ({
    ...r,
    model: r.match.model ? globToRegExp(r.match.model) : undefined,
    endpoint: r.match.endpoint ? globToRegExp(r.match.endpoint) : undefined,
    decisionType: r.match.decision_type ? globToRegExp(r.match.decision_type) : undefined,
    tenant: r.match.tenant ? globToRegExp(r.match.tenant) : undefined,
  }));
  const fallback: Classification = { tier: doc.defaults.tier, sampleRate: doc.defaults.sample_rate, rule: 'defaults' };
  const cache = new Map<string, Classification>();
  return {
    id: `${doc.name}@${doc.version}+${digest}`,
    doc,
    classify(e) {
      // Few distinct combinations exist in practice; caching keeps the regexes off the hot path.
      const key = joinKey([e.model, e.endpoint, e.decisionType, e.tenant === null ? 0 : 1, e.tenant ?? ''], '\u0000');
      let hit = cache.get(key);
      if (!hit) {
        const rule = rules.find(
          (r) =>
            (!r.model || r.model.test(e.model)) &&
            (!r.endpoint || r.endpoint.test(e.endpoint)) &&
            (!r.decisionType || r.decisionType.test(e.decisionType)) &&
            (!r.tenant || (e.tenant !== null && r.tenant.test(e.tenant))),
        );
        hit = rule ? { tier: rule.tier, sampleRate: rule.sample_rate, rule: rule.name } : fallback;
        if (cache.size < 10_000) cache.set(key, hit);
      }
      return hit;
    },
  };
}

export function loadPolicy(file: string): Policy {
  return parsePolicy(readPolicyText(file), file);
}

/** The policy file's text, read once at start: gate threads parse this text, never the file again. */
export function readPolicyText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new PolicyError(file, '', `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}
