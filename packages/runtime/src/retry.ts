/** Errors that say whether trying again can help. Programmer errors are never retried. */
export class RetriableError extends Error {
  readonly retriable = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RetriableError';
  }
}

/** Bugs fail the same way every time; retrying only hides them. */
function isProgrammerError(err: unknown): boolean {
  return err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError || err instanceof ReferenceError;
}

export function isRetriable(err: unknown): boolean {
  if (isProgrammerError(err)) return false;
  return typeof err === 'object' && err !== null && (err as { retriable?: unknown }).retriable === true;
}

export interface RetryOptions {
  /** Attempts in all, including the first; Infinity retries until `signal` aborts. */
  attempts: number;
  initialMs: number;
  maxMs: number;
  /** Which errors to retry; defaults to isRetriable. */
  retryOn?: (err: unknown) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
}

/** Full-jitter exponential backoff, so many workers recovering together do not stampede. */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const retryOn = opts.retryOn ?? isRetriable;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt + 1 >= opts.attempts || isProgrammerError(err) || !retryOn(err) || opts.signal?.aborted) throw err;
      const delay = backoffDelay(attempt, opts.initialMs, opts.maxMs);
      opts.onRetry?.(err, attempt + 1, delay);
      await sleep(delay, opts.signal);
    }
  }
}
