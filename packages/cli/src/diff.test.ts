import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatDiff, type DiffResult } from './diff.js';

describe('dlog diff output', () => {
  const base: DiffResult = {
    a: 'rec:1',
    b: 'rec:2',
    paired: { inputs: 100, agreement: 0.5, confidenceShift: 0, confidenceA: 0.5, confidenceB: 0.5 },
    confusion: [
      { a: 'approved', b: 'approved', inputs: 40 },
      { a: 'approved', b: 'declined', inputs: 30 },
    ],
    confusionRest: null,
    mix: [],
    mixRest: null,
    mixPsi: 0,
    confidence: [],
    confidencePsi: null,
    overallConfidence: { a: null, b: null },
  };

  it('shows a confusion table only when every pair is in it: a pair left out would read as 0', () => {
    assert.match(formatDiff(base), /rec:1 ↓ \/ rec:2 →\s+approved\s+declined\n\s+approved\s+40\s+30\n/);
    const cut = formatDiff({ ...base, confusionRest: { cells: 7, inputs: 30 } });
    assert.doesNotMatch(cut, /↓/);
    assert.match(cut, /approved\s+→\s+declined\s+\(30\)\n\s+… and 7 less common pairs \(30 inputs\), counted in the agreement above/);
  });

  it('counts the decisions not shown, those left out by the engine too', () => {
    const mix = Array.from({ length: 20 }, (_, i) => ({ decision: `item-${String(i).padStart(2, '0')}`, a: i, b: 20 - i, shareA: i / 200, shareB: (20 - i) / 200 }));
    const text = formatDiff({ ...base, mix, mixRest: { decisions: 99_990, a: 5, b: 5 } });
    assert.match(text, /… 99998 more decisions \(the 12 that moved most are shown; the PSI is over all of them\)/);
  });
});
