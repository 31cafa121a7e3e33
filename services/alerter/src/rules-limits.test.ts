import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseDuration, parseRules, RulesError } from './rules.js';
import { paneSize } from './windows.js';

const watermark = (fields = 'allowed_lateness: 30s, idle_partition_after: 30s') => `watermark: { ${fields} }\n`;
const rule = (window: string, suppressFor = '1h') => `  - { name: c, kind: confidence_drop, window: ${window}, min_samples: 5, min_drop: 0.1, suppress_for: ${suppressFor} }\n`;
const doc = (rules: string, wm = watermark(), top = '') => `${wm}rules:\n${rules}${top}`;

const refused = (text: string, path: string, message: RegExp) =>
  assert.throws(
    () => parseRules(text, 'r.yaml'),
    (err: unknown) => err instanceof RulesError && err.path === path && message.test(err.message),
    `${path} should be refused with ${message}`,
  );

describe('rules: durations need a unit', () => {
  it('refuses a bare number, saying which units to write', () => {
    // `size: 10` was 10 ms: every rule's pane became 10 ms (31k panes held, 12 s of CPU for 12 min of traffic).
    refused(doc(rule('{ size: 10 }')), 'rules[0].window.size', /: 10 has no unit; write 10s, 10m or 10h$/);
    refused(doc(rule('{ size: 10m, hop: 60000 }')), 'rules[0].window.hop', /60000 has no unit/);
    refused(doc(rule('{ size: 10m }', '3600')), 'rules[0].suppress_for', /3600 has no unit/);
    refused(doc(rule('{ size: 10m }'), watermark('allowed_lateness: 30s, idle_partition_after: 30')), 'watermark.idle_partition_after', /30 has no unit/);
  });

  it('takes 0 without a unit where 0 is allowed', () => {
    assert.equal(parseRules(doc(rule('{ size: 10m }'), watermark('allowed_lateness: 0, idle_partition_after: 30s'))).watermark.allowed_lateness, 0);
  });
});

describe('rules: durations stay exact', () => {
  it('refuses a duration that is not a safe integer of milliseconds', () => {
    // 99999999999999999999d is 8.64e27 ms: accepted, its windows never closed.
    refused(doc(rule('{ size: 99999999999999999999d }')), 'rules[0].window.size', /too long; write at most 30d/);
    refused(doc(rule(`{ size: ${'9'.repeat(400)}ms }`)), 'rules[0].window.size', /too long/);
    assert.equal(parseDuration('99999999999999999999d'), undefined);
    assert.equal(parseDuration(2 ** 53), undefined);
    assert.equal(parseDuration('30d'), 30 * 86_400_000);
  });
});

describe('rules: every duration field has bounds', () => {
  it('keeps windows and hops to whole seconds of at least 1s and at most 30d', () => {
    refused(doc(rule('{ size: 500ms }')), 'rules[0].window.size', /too short; write at least 1s/);
    refused(doc(rule('{ size: 10m, hop: 10ms }')), 'rules[0].window.hop', /too short; write at least 1s/);
    // 1001ms and 1s would make a pane of 1 ms, as a bare number did.
    refused(doc(rule('{ size: 1001ms }')), 'rules[0].window.size', /whole number of seconds/);
    refused(doc(rule('{ size: 31d }')), 'rules[0].window.size', /too long; write at most 30d/);
    assert.equal(parseRules(doc(rule('{ size: 30d, hop: 1h }'))).rules[0]!.window.size, 30 * 86_400_000);
    assert.equal(parseRules(doc(rule('{ size: 1s }'))).rules[0]!.window.size, 1_000);
  });

  it('refuses a window that would span too many panes of the step shared by every rule', () => {
    // Each rule is fine alone; together the pane is 1 s and the 30-day window would hold 2.6M of them.
    const text = doc(`${rule('{ size: 30d, hop: 1d }')}  - { name: d, kind: dead_letters, window: { size: 1m, hop: 1s }, min_samples: 5, max_rate: 0.1, suppress_for: 1h }\n`);
    refused(text, 'rules[0].window', /spans 2592000 panes of 1s; at most 10080/);
  });

  it('bounds the watermark and the other durations', () => {
    const wm = (fields: string) => doc(rule('{ size: 10m }'), watermark(fields));
    refused(wm('allowed_lateness: 30s, idle_partition_after: 500ms'), 'watermark.idle_partition_after', /too short; write at least 1s/);
    refused(wm('allowed_lateness: 30s, idle_partition_after: 0s'), 'watermark.idle_partition_after', /too short/);
    refused(wm('allowed_lateness: 30s, idle_partition_after: 2d'), 'watermark.idle_partition_after', /too long; write at most 1d/);
    refused(wm('allowed_lateness: 2d, idle_partition_after: 30s'), 'watermark.allowed_lateness', /too long; write at most 1d/);
    refused(wm('allowed_lateness: 30s, idle_partition_after: 30s, startup_wait: 2h'), 'watermark.startup_wait', /too long; write at most 1h/);
    refused(doc(rule('{ size: 10m }', '31d')), 'rules[0].suppress_for', /too long; write at most 30d/);
    refused(doc(rule('{ size: 10m }'), watermark(), 'baseline_retention: 400d\n'), 'baseline_retention', /too long; write at most 365d/);
    refused(doc(rule('{ size: 10m }'), watermark(), 'baseline_retention: 0s\n'), 'baseline_retention', /too short; write at least 1s/);
    const zero = parseRules(doc(rule('{ size: 10m }', '0s'), watermark('allowed_lateness: 0s, idle_partition_after: 1s, startup_wait: 0s')));
    assert.deepEqual([zero.watermark.allowed_lateness, zero.watermark.idle_partition_after, zero.watermark.startup_wait, zero.rules[0]!.suppress_for], [0, 1_000, 0, 0]);
  });

  it('still reads the shipped rules file, with its one-minute pane', () => {
    const shipped = parseRules(readFileSync(new URL('../../../infra/alerts/rules.yaml', import.meta.url), 'utf8'));
    assert.equal(paneSize(shipped.rules.map((r) => r.window)), 60_000);
    assert.equal(shipped.baseline_retention, 30 * 86_400_000);
  });
});
