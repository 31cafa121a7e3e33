export interface PartitionProgress {
  /** Newest decision event time read from the partition. */
  newest: number;
  /** Wall-clock time its last batch arrived. */
  seenAt: number;
}

/**
 * Event-time watermark over input partitions: the newest event time of the slowest active
 * partition, minus the allowed lateness. Taking the slowest keeps windows open while partitions
 * are read in turns (one fetch can hold minutes of one partition and nothing yet of the next).
 * A partition that has delivered nothing for `idleAfter` of wall-clock time is quiet, not slow,
 * and stops holding windows open; while catching up on a backlog every partition delivers on
 * each fetch round, so none is taken for quiet. When all are quiet, the newest of all counts,
 * including `whenQuiet` (the dead-letter partitions, which keep arriving when every event is refused).
 *
 * Wall clock here only decides *when* a window closes in a live run, never what it holds, as
 * long as no input comes late; a replay closes its windows in one pass (see the alerter).
 */
export function watermark(
  partitions: ReadonlyMap<string, PartitionProgress>,
  now: number,
  allowedLateness: number,
  idleAfter: number,
  /** Consulted only when every partition above is quiet: the newest of these counts too. */
  whenQuiet: ReadonlyMap<string, PartitionProgress> = new Map(),
): number | undefined {
  if (partitions.size === 0 && whenQuiet.size === 0) return undefined;
  let newest = -Infinity;
  let slowestActive = Infinity;
  for (const p of partitions.values()) {
    newest = Math.max(newest, p.newest);
    if (now - p.seenAt < idleAfter) slowestActive = Math.min(slowestActive, p.newest);
  }
  if (slowestActive !== Infinity) return slowestActive - allowedLateness;
  for (const p of whenQuiet.values()) newest = Math.max(newest, p.newest);
  return newest - allowedLateness;
}
