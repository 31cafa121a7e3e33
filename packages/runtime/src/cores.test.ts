import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cgroupQuota, usableCores } from './cores.js';

const files = (map: Record<string, string>) => (file: string) => map[file];

describe('usableCores', () => {
  it('reads a cgroup v2 quota and caps the CPUs by it, rounding up', () => {
    assert.equal(cgroupQuota(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })), 1.5);
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' }), 64), 2);
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu.max': '50000 100000' }), 64), 1);
  });

  it('takes no v2 quota ("max") as no cap, and does not fall back to v1 then', () => {
    const read = files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '100000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' });
    assert.equal(cgroupQuota(read), undefined);
    assert.equal(usableCores(read, 8), 8);
  });

  it("takes the smallest v2 quota from the process's own cgroup up to the root", () => {
    const read = files({
      '/proc/self/cgroup': '0::/system.slice/worker.service\n',
      '/sys/fs/cgroup/cpu.max': 'max 100000',
      '/sys/fs/cgroup/system.slice/cpu.max': '300000 100000',
      '/sys/fs/cgroup/system.slice/worker.service/cpu.max': 'max 100000',
    });
    assert.equal(cgroupQuota(read), 3);
    assert.equal(usableCores(read, 16), 3);
    const tighter = files({ '/proc/self/cgroup': '0::/a/b\n', '/sys/fs/cgroup/a/cpu.max': '400000 100000', '/sys/fs/cgroup/a/b/cpu.max': '100000 100000' });
    assert.equal(usableCores(tighter, 16), 1);
  });

  it('reads a cgroup v1 quota; -1 is none', () => {
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '400000\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' }), 64), 4);
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' }), 6), 6);
  });

  it('never raises the count above the CPUs the process may run on, and ignores what it cannot parse', () => {
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu.max': '800000 100000' }), 2), 2);
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu.max': 'garbage' }), 3), 3);
    assert.equal(usableCores(files({ '/sys/fs/cgroup/cpu.max': '0 100000' }), 3), 3);
    assert.equal(usableCores(files({}), 5), 5);
  });
});
