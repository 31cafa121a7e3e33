import type { Message } from 'kafkajs';
import { RetriableError } from '@dlog/runtime';

/** kafkajs's protocol error for a record over the topic's max.message.bytes (Kafka error 10). */
function tooLarge(err: unknown): boolean {
  // The protocol error may come wrapped (retries exhausted, a non-retriable wrapper): follow causes.
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 4; depth++) {
    const x = e as { type?: unknown; code?: unknown; cause?: unknown; originalError?: unknown };
    if (x.type === 'MESSAGE_TOO_LARGE' || (x.code === 10 && 'type' in x)) return true;
    e = x.cause ?? x.originalError;
  }
  return false;
}

/**
 * Sends the sink's dead letters. A Kafka failure here must not stop the sink: the batch is not
 * committed until its dead letters are sent, so every failure becomes a RetriableError and the
 * writer backs off and pauses fetching, as for a ClickHouse outage (it used to read Kafka errors as
 * ClickHouse codes, and a broker restart stopped the process owning the embedded store). A dead
 * letter the topic cannot hold goes without its value; its headers name the source topic, partition
 * and offset, where the original still is.
 */
export function deadLetterSender(send: (topic: string, messages: Message[]) => Promise<unknown>): (topic: string, messages: Message[]) => Promise<void> {
  const sendAll = async (topic: string, messages: Message[]): Promise<void> => {
    try {
      await send(topic, messages);
    } catch (err) {
      if (!tooLarge(err)) throw new RetriableError(`sending ${messages.length} dead letter(s) to ${topic} failed: ${(err as Error).message}`, { cause: err });
      if (messages.length > 1) {
        for (const m of messages) await sendAll(topic, [m]);
        return;
      }
      const m = messages[0]!;
      const size = m.value === null || m.value === undefined ? 0 : Buffer.byteLength(m.value);
      const headers: NonNullable<Message['headers']> = {};
      // Without the value, and if that is still too large, with our own headers only.
      for (const [k, v] of Object.entries(m.headers ?? {})) if (m.value === null ? k.startsWith('dlog.') : true) headers[k] = v;
      if (m.value === null && Object.keys(headers).length === Object.keys(m.headers ?? {}).length) {
        throw new RetriableError(`a dead letter for ${topic} is too large even without its value`, { cause: err });
      }
      headers['dlog.value_dropped'] = `too large for ${topic}: ${size} bytes; read it at the source offset`;
      await sendAll(topic, [{ ...m, value: null, headers }]);
    }
  };
  return sendAll;
}
