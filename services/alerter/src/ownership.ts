import { AssignerProtocol, type GroupDescription } from 'kafkajs';

export interface Ownership {
  /** One member of the group holds every partition of the input topics. */
  whole: boolean;
  /** Members holding input partitions. */
  holders: number;
  reason?: string;
}

/** A member's assignment (the consumer protocol's, which kafkajs and librdkafka both write) → topic → partitions. */
function assignmentOf(buffer: Buffer): Record<string, number[]> {
  if (buffer.length === 0) return {};
  try {
    return AssignerProtocol.MemberAssignment.decode(buffer)?.assignment ?? {};
  } catch {
    return {};
  }
}

/**
 * Whether the group's input is read by one member alone. A rule compares versions across every
 * partition, so an instance holding some of them closes windows on part of the data: two
 * instances in one group each sent the same alert (same alert_id) with different evidence, or
 * one each side of the threshold. `partitions`: input topic → its partition count. A group that
 * is rebalancing is not whole: its assignment is about to change.
 */
export function soleOwner(group: GroupDescription | undefined, partitions: ReadonlyMap<string, number>): Ownership {
  if (!group) return { whole: false, holders: 0, reason: 'group not found' };
  if (group.state !== 'Stable') return { whole: false, holders: 0, reason: `group ${group.state}` };
  const holders = group.members.map((m) => assignmentOf(m.memberAssignment)).filter((a) => [...partitions.keys()].some((t) => (a[t]?.length ?? 0) > 0));
  if (holders.length !== 1) return { whole: false, holders: holders.length, reason: `${holders.length} members hold input partitions` };
  for (const [topic, count] of partitions) {
    const held = new Set(holders[0]![topic] ?? []);
    for (let p = 0; p < count; p++) if (!held.has(p)) return { whole: false, holders: 1, reason: `${topic}:${p} is not assigned` };
  }
  return { whole: true, holders: 1 };
}
