/**
 * An enriched record made to fit what Kafka holds as far as its lineage goes: made once with the
 * lineage's own bounds and, when that is `overBy` the limit, made again with its lineage cut by as
 * many bytes (leaving out lineage shrinks the record by at least its bytes). A decision large
 * enough for that keeps the nearest part of its lineage that fits, instead of being dead-lettered
 * for it; one over the limit with no lineage at all is left for the caller to refuse.
 */
export function fitLineage<R extends { value: Buffer; lineageBytes: number } | { error: string }>(make: (lineageBytes?: number) => R, overBy: (value: Buffer) => number): R {
  const first = make();
  if ('error' in first || first.lineageBytes === 0) return first;
  const over = overBy(first.value);
  return over <= 0 ? first : make(Math.max(0, first.lineageBytes - over));
}
