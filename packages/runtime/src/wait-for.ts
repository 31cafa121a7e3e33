export interface WaitForOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Named in the timeout error, so a failure says what never happened. */
  what: string;
}

type Outcome<T> = { value: T | undefined | false } | { error: unknown } | { hung: true };

/**
 * Polls a condition until it returns a truthy value or the deadline passes. The last error the
 * condition threw is kept as the cause, so a timeout explains itself. A check that never answers
 * (a query stuck in the engine) is given up at the deadline too: waiting on it would turn a clear
 * failure into a hang that only an outer timeout ends, with nothing said about the cause.
 */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitForOptions): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 100;
  let lastError: unknown;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race<Outcome<T>>([
      Promise.resolve().then(check).then((value) => ({ value }), (error: unknown) => ({ error })),
      new Promise((resolve) => (timer = setTimeout(() => resolve({ hung: true }), Math.max(0, deadline - Date.now())))),
    ]);
    clearTimeout(timer);
    if ('hung' in outcome) {
      throw new Error(`Timed out after ${opts.timeoutMs} ms waiting for ${opts.what}: the check itself did not answer by then`, { cause: lastError });
    }
    if ('error' in outcome) lastError = outcome.error;
    else if (outcome.value !== undefined && outcome.value !== false) return outcome.value;
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`Timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${reason}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
