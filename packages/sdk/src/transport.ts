import type { Schema } from 'avsc';

/** A message as the transport sends it: key and Confluent-framed Avro value. */
export interface OutMessage {
  key: string;
  value: Buffer;
}

/**
 * What the logger needs from Kafka and the schema registry. The Kafka implementation is the
 * real one; unit tests pass a fake to drive outages and slow brokers without infrastructure.
 */
export interface Transport {
  /** Connects; rejects when the broker cannot be reached (the logger retries). */
  connect(): Promise<void>;
  /** Registers a contract under a subject; returns its schema id (the logger retries). */
  register(subject: string, schema: Schema): Promise<number>;
  /** Sends messages in order; resolves once the broker acknowledged all of them. */
  send(topic: string, messages: OutMessage[]): Promise<void>;
  /** Drops the producer session and starts a new one (after errors a retry cannot fix). */
  reset(): Promise<void>;
  /**
   * Which of `eventIds` are already in `topic`, among records written at or after `sinceMs`.
   * Asked before a batch of unknown outcome is resent under a new producer session, which the
   * broker cannot deduplicate against the old one. Optional: without it such a resend may
   * write some events twice (downstream views deduplicate by event_id).
   */
  written?(topic: string, sinceMs: number, eventIds: ReadonlySet<string>): Promise<Set<string>>;
  /**
   * Whether a message handed to send() is known to be in the topic although the send that
   * carried it had already reported a failure (librdkafka keeps such messages in flight). Asked
   * at close, so that what landed after its send gave up is not kept to be sent again. Optional.
   */
  delivered?(value: Buffer): boolean;
  disconnect(): Promise<void>;
}
