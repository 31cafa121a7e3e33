import { AssignerProtocol, type GroupDescription } from 'kafkajs';

export interface Ownership {
  /** One member of the group holds every partition of the input topics. */
  whole: boolean;
  /** Members holding input partitions. */
  holders: number;
  reason?: string;
  /**
   * Set when the group runs a consumer protocol whose assignments cannot be seen here: windows
   * would be held for ever, so the caller says so as an error, not as a passing split.
   */
  protocol?: string;
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
 * is rebalancing is not whole: its assignment is about to change. `self`: this instance's member
 * id, where its client tells it; the sole holder must then be this instance.
 */
export function soleOwner(group: GroupDescription | undefined, partitions: ReadonlyMap<string, number>, self?: string): Ownership {
  if (!group) return { whole: false, holders: 0, reason: 'group not found' };
  // Asked while this instance is processing a batch, so the group has a member: a group on the
  // KIP-848 protocol (group.protocol=consumer) is what the classic DescribeGroups shows as Dead
  // and empty; its assignments are only in ConsumerGroupDescribe, which kafkajs lacks. Nothing
  // configures that protocol today; should something start to, this must not pass silently.
  if (group.state === 'Dead' && group.members.length === 0) {
    return { whole: false, holders: 0, reason: 'group reads as Dead with no members: it runs the KIP-848 "consumer" protocol (group.protocol=consumer)', protocol: 'consumer' };
  }
  if (group.state !== 'Stable') return { whole: false, holders: 0, reason: `group ${group.state}` };
  const holders = group.members
    .map((m) => ({ memberId: m.memberId, assignment: assignmentOf(m.memberAssignment) }))
    .filter(({ assignment: a }) => [...partitions.keys()].some((t) => (a[t]?.length ?? 0) > 0));
  if (holders.length !== 1) return { whole: false, holders: holders.length, reason: `${holders.length} members hold input partitions` };
  // An instance the group evicted (a batch that outlasted the session) still runs its batch in
  // hand: the sole holder it sees is then its successor, whose windows these are not.
  if (self !== undefined && holders[0]!.memberId !== self) return { whole: false, holders: 1, reason: `the input is held by member ${holders[0]!.memberId}, not this one (${self})` };
  for (const [topic, count] of partitions) {
    const held = new Set(holders[0]!.assignment[topic] ?? []);
    for (let p = 0; p < count; p++) if (!held.has(p)) return { whole: false, holders: 1, reason: `${topic}:${p} is not assigned` };
  }
  return { whole: true, holders: 1 };
}
