export interface WaitForOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Named in the timeout error, so a failure says what never happened. */
  what: string;
}

/**
 * Polls a condition until it returns a truthy value or the deadline passes. The last error the
 * condition threw is kept as the cause, so a timeout explains itself.
 */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitForOptions): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 100;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`Timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${reason}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
