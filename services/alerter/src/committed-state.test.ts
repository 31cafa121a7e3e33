import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { CommittedState, uncounted } from './committed-state.js';

const log = pino({ level: 'silent' });

describe('CommittedState', () => {
  /** A group whose committed offsets the test sets; counts lookups. */
  function group() {
    const offsets = new Map<string, bigint>();
    let lookups = 0;
    let down = false;
    return {
      offsets,
      get lookups() {
        return lookups;
      },
      set down(v: boolean) {
        down = v;
      },
      lookup: async (topic: string, partition: number) => {
        lookups++;
        if (down) throw new Error('broker unreachable');
        return offsets.get(`${topic}:${partition}`);
      },
    };
  }

  it('adopts a batch when its transaction reports committed, and asks the group nothing', async () => {
    const g = group();
    const s = new CommittedState({ n: 0 }, g.lookup, log);
    s.stage({ n: 1 }, 'in', 0, '9');
    s.commit();
    assert.deepEqual(await s.current(), { n: 1 });
    assert.equal(g.lookups, 0);
  });

  it('adopts an unconfirmed batch whose offsets the group did commit (a commit that timed out but went through)', async () => {
    const g = group();
    const s = new CommittedState({ n: 0 }, g.lookup, log);
    s.stage({ n: 1 }, 'in', 2, '9');
    g.offsets.set('in:2', 10n);
    const heard: string[] = [];
    assert.deepEqual(await s.current((t, p) => heard.push(`${t}:${p}`)), { n: 1 });
    assert.deepEqual(heard, ['in:2']);
    // Settled once: the next batch asks nothing.
    assert.deepEqual(await s.current(), { n: 1 });
    assert.equal(g.lookups, 1);
  });

  it('drops an unconfirmed batch the group did not commit: it is read again', async () => {
    const g = group();
    const s = new CommittedState({ n: 0 }, g.lookup, log);
    s.stage({ n: 1 }, 'in', 0, '9');
    g.offsets.set('in:0', 9n); // the batch started at 9 and is fetched again from there
    assert.deepEqual(await s.current(), { n: 0 });
    s.stage({ n: 2 }, 'in', 1, '4'); // nothing committed on that partition at all
    assert.deepEqual(await s.current(), { n: 0 });
  });

  it('keeps a batch unsettled while the committed offset cannot be read, and settles it later', async () => {
    const g = group();
    const s = new CommittedState({ n: 0 }, g.lookup, log);
    s.stage({ n: 1 }, 'in', 0, '9');
    g.offsets.set('in:0', 10n);
    g.down = true;
    await assert.rejects(s.current(), /broker unreachable/);
    g.down = false;
    assert.deepEqual(await s.current(), { n: 1 });
  });
});

describe('uncounted', () => {
  it('passes a batch on once: fetched again after its commit went through unconfirmed, nothing of it counts twice', () => {
    const counted = new Map<string, bigint>();
    const batch = [{ offset: '7' }, { offset: '9' }, { offset: '10' }];
    assert.deepEqual(uncounted(counted, 'in:0', batch), batch);
    assert.equal(counted.get('in:0'), 10n);
    assert.deepEqual(uncounted(counted, 'in:0', batch), []);
    assert.deepEqual(uncounted(counted, 'in:0', [...batch, { offset: '12' }]), [{ offset: '12' }]);
    assert.deepEqual(uncounted(counted, 'in:1', [{ offset: '3' }]), [{ offset: '3' }]);
    assert.equal(counted.get('in:0'), 12n);
  });
});
