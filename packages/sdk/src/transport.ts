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
  disconnect(): Promise<void>;
}
