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
 * The CPU quota in CPUs (quota / period), undefined when there is none: cgroup v2 `cpu.max`
 * ("max 100000" or "200000 100000"), else v1 `cpu.cfs_quota_us` (-1: none) over
 * `cpu.cfs_period_us`. Anything unreadable or malformed counts as no quota.
 */
export function cgroupQuota(read: (file: string) => string | undefined): number | undefined {
  const v2 = read('/sys/fs/cgroup/cpu.max');
  if (v2 !== undefined) {
    const [quota, period] = v2.trim().split(/\s+/);
    return ratio(quota, period);
  }
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
