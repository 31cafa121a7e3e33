import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * CPUs this process may keep busy: the ones it may run on (availableParallelism), capped by a
 * cgroup CPU quota. Node does not read quotas, so a container limited to 2 CPUs on a 64-core
 * host would otherwise size its thread pools (the sink's Avro readers, the pipeline's gate
 * threads) for 64 and lose time to hand-offs and throttling.
 */
export function usableCores(read: (file: string) => string | undefined = readIfThere, cpus = availableParallelism()): number {
  const quota = cgroupQuota(read);
  return quota === undefined ? cpus : Math.max(1, Math.min(cpus, Math.ceil(quota)));
}

/**
 * The CPU quota in CPUs (quota / period), undefined when there is none. cgroup v2: the smallest
 * `cpu.max` ("max 100000" or "200000 100000") on the way from this process's own cgroup (from
 * /proc/self/cgroup, so a systemd CPUQuota or a parent's limit counts) up to the root. Else
 * cgroup v1: `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`. Anything unreadable or
 * malformed counts as no quota.
 */
export function cgroupQuota(read: (file: string) => string | undefined): number | undefined {
  const own = /^0::(\/.*)$/m.exec(read('/proc/self/cgroup') ?? '')?.[1];
  const dirs: string[] = [];
  for (let dir = own ?? '/'; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
    dirs.push(dir === '/' ? '' : dir);
    if (dir === '/') break;
  }
  let v2: number | undefined;
  let sawV2 = false;
  for (const dir of dirs) {
    const max = read(`/sys/fs/cgroup${dir}/cpu.max`);
    if (max === undefined) continue;
    sawV2 = true;
    const [quota, period] = max.trim().split(/\s+/);
    const q = ratio(quota, period);
    if (q !== undefined && (v2 === undefined || q < v2)) v2 = q;
  }
  if (sawV2) return v2;
  return ratio(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')?.trim(), read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')?.trim());
}

function ratio(quota: string | undefined, period: string | undefined): number | undefined {
  if (quota === undefined || period === undefined || !/^\d+$/.test(quota) || !/^\d+$/.test(period)) return undefined;
  const q = Number(quota);
  const p = Number(period);
  return q > 0 && p > 0 ? q / p : undefined;
}

function readIfThere(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
