import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTierRetention } from './retention.js';

describe('retention per tier', () => {
  it('is read from the TTL as the engine writes the table back', () => {
    const engineFull =
      "MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (model_name, model_version, ts, event_id) TTL toDateTime(ts) + toIntervalDay(90) WHERE tier = 'minimal', toDateTime(ts) + toIntervalWeek(2) WHERE tier = 'standard' SETTINGS index_granularity = 8192";
    assert.deepEqual(parseTierRetention(engineFull), [
      { tier: 'minimal', days: 90 },
      { tier: 'standard', days: 14 },
    ]);
  });

  it('leaves out what it cannot count back in days, and a table without TTL', () => {
    assert.deepEqual(parseTierRetention("MergeTree ORDER BY ts TTL toDateTime(ts) + toIntervalMonth(3) WHERE tier = 'minimal'"), []);
    assert.deepEqual(parseTierRetention('MergeTree ORDER BY ts SETTINGS index_granularity = 8192'), []);
  });
});
