/**
 * The message of anything thrown, for a report or a log line; never throws itself. A host can
 * throw any value from a getter or toJSON: a Proxy whose every property read throws (a strict
 * mock), a getter on `message`. A catch block that read `.message` of it threw again, out of the
 * SDK and into the host as an uncaught exception or an unhandled rejection.
 */
export function messageOf(err: unknown): string {
  try {
    if (typeof err === 'string') return err;
    if ((typeof err === 'object' && err !== null) || typeof err === 'function') {
      const message = (err as { message?: unknown }).message;
      if (typeof message === 'string') return message;
    }
    return String(err);
  } catch {
    return 'a thrown value that cannot be read (reading it threw)';
  }
}

/** The class name of anything thrown (`Error`, `TypeError` ...), or its type; never throws. */
export function errorName(err: unknown): string {
  try {
    if (err instanceof Error && typeof err.name === 'string') return err.name;
    return typeof err;
  } catch {
    return 'unreadable value';
  }
}
