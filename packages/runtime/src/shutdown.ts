import type { Logger } from 'pino';

export interface ShutdownStep {
  name: string;
  run: () => Promise<void> | void;
}

/**
 * Graceful shutdown in a fixed order under a hard limit.
 *
 * Steps run one after another in the order they were added (workers add them as: stop fetching,
 * drain, flush the sink, commit, flush dead letters, disconnect), each failure is logged and the
 * next step still runs, and the process exits non-zero if anything failed or the limit passed.
 */
export class Shutdown {
  private readonly steps: ShutdownStep[] = [];
  private running: Promise<number> | undefined;
  private installed = false;
  private firstSignalAt = 0;

  constructor(
    private readonly log: Logger,
    private readonly timeoutMs: number,
    private readonly exit: (code: number) => void = (code) => process.exit(code),
  ) {}

  add(name: string, run: ShutdownStep['run']): void {
    this.steps.push({ name, run });
  }

  get started(): boolean {
    return this.running !== undefined;
  }

  /**
   * SIGTERM, SIGINT and SIGHUP (the terminal or SSH session closed) start the shutdown; a second
   * signal forces exit. One Ctrl-C often arrives twice within milliseconds (from the terminal to
   * the process group, and forwarded by `npm start`), so a signal within `repeatMs` of the first
   * is taken as the same request. Crashes exit non-zero.
   */
  install(target: NodeJS.EventEmitter = process, repeatMs = 1_000): void {
    if (this.installed) return;
    this.installed = true;
    const onSignal = (signal: NodeJS.Signals) => {
      if (this.running) {
        if (Date.now() - this.firstSignalAt < repeatMs) {
          this.log.debug({ signal }, 'signal repeated right after the first: already shutting down');
          return;
        }
        this.log.warn({ signal }, 'second signal during shutdown: exiting now');
        this.exit(130);
        return;
      }
      this.firstSignalAt = Date.now();
      this.log.info({ signal }, 'shutdown requested');
      void this.run(0);
    };
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) target.on(signal, onSignal);
    target.on('uncaughtException', (err) => {
      this.log.fatal({ err }, 'uncaught exception');
      void this.run(1);
    });
    target.on('unhandledRejection', (err) => {
      this.log.fatal({ err }, 'unhandled rejection');
      void this.run(1);
    });
  }

  /** Runs every step once; resolves with the exit code (and exits the process, unless told not to). */
  run(code: number, opts: { exit?: boolean } = {}): Promise<number> {
    if (!this.running) {
      this.running = this.execute(code).then((finalCode) => {
        if (opts.exit !== false) this.exit(finalCode);
        return finalCode;
      });
    }
    return this.running;
  }

  private async execute(code: number): Promise<number> {
    const started = Date.now();
    let failed = false;
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<'timeout'>((resolve) => {
      // Not unref'd: a step waiting on nothing must still end in a timeout, not a silent exit 0.
      timer = setTimeout(() => resolve('timeout'), this.timeoutMs);
    });
    const steps = (async () => {
      for (const step of this.steps) {
        const t0 = Date.now();
        try {
          await step.run();
          this.log.debug({ step: step.name, ms: Date.now() - t0 }, 'shutdown step done');
        } catch (err) {
          failed = true;
          this.log.error({ err, step: step.name }, 'shutdown step failed');
        }
      }
      return 'done' as const;
    })();
    const outcome = await Promise.race([steps, limit]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.log.error({ timeoutMs: this.timeoutMs }, 'shutdown exceeded its time limit');
      return code || 1;
    }
    this.log.info({ ms: Date.now() - started, failed }, 'shutdown complete');
    return code || (failed ? 1 : 0);
  }
}
