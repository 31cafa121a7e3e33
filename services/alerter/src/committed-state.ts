import type { Logger } from 'pino';

/** The group's committed offset (the next to read) for a partition; undefined when none. */
export type CommittedOffset = (topic: string, partition: number) => Promise<bigint | undefined>;

/**
 * The alerter's state, kept equal to the input its group has committed. A batch works on a copy
 * (`stage`), adopted once its transaction reports committed (`commit`). A transaction can also
 * fail with its outcome unknown, when the commit timed out after the coordinator had it: the
 * processor then starts over from the committed offsets, and if that commit did go through,
 * the batch is never fetched again. Before the next batch is worked on (`current`), the group's
 * committed offset for the unconfirmed batch's partition tells which it was: past the batch,
 * the copy is adopted after all; otherwise it is dropped and the batch comes again.
 *
 * The processor works on one batch at a time, so at most one batch is ever unconfirmed, and no
 * later batch has built on it. The librdkafka processor starts a new producer before fetching
 * again, which settles the old transaction first, so the offset read here is final.
 */
export class CommittedState<S> {
  private unconfirmed: { state: S; topic: string; partition: number; last: bigint } | undefined;

  constructor(
    public committed: S,
    private readonly committedOffset: CommittedOffset,
    private readonly log: Logger,
  ) {}

  /**
   * The state the next batch builds on, after settling a batch whose commit was never confirmed
   * (`adopted` hears of it when that commit went through). Throws, keeping the batch unsettled,
   * when the committed offset cannot be read.
   */
  async current(adopted?: (topic: string, partition: number) => void): Promise<S> {
    const u = this.unconfirmed;
    if (u) {
      const offset = await this.committedOffset(u.topic, u.partition);
      this.unconfirmed = undefined;
      const wentThrough = offset !== undefined && offset > u.last;
      this.log.warn({ topic: u.topic, partition: u.partition, lastOffset: String(u.last), committedOffset: offset === undefined ? null : String(offset), wentThrough }, wentThrough ? 'a batch whose commit was not confirmed had committed: its state is kept' : 'a batch was not committed: it is read again');
      if (wentThrough) {
        this.committed = u.state;
        adopted?.(u.topic, u.partition);
      }
    }
    return this.committed;
  }

  /** The copy a batch built, before its transaction. */
  stage(state: S, topic: string, partition: number, lastOffset: string): void {
    this.unconfirmed = { state, topic, partition, last: BigInt(lastOffset) };
  }

  /** Its transaction committed. */
  commit(): void {
    if (this.unconfirmed) this.committed = this.unconfirmed.state;
    this.unconfirmed = undefined;
  }
}

/**
 * The messages of a batch past what the state has counted from its partition (`at`), noting the
 * last of them as counted. A batch whose commit went through unconfirmed can be fetched again
 * (kafkajs fetches it again after the failure, and `current` has already kept its state).
 */
export function uncounted<M extends { offset: string }>(counted: Map<string, bigint>, at: string, messages: M[]): M[] {
  const upTo = counted.get(at);
  // Offsets rise within a batch: only one fetched again starts at or below what was counted.
  const fresh = upTo === undefined || messages.length === 0 || BigInt(messages[0]!.offset) > upTo ? messages : messages.filter((m) => BigInt(m.offset) > upTo);
  if (fresh.length > 0) counted.set(at, BigInt(fresh[fresh.length - 1]!.offset));
  return fresh;
}
