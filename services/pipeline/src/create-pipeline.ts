import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import { createAlerter, type Alerter } from '@dlog/alerter';
import { createEnricher, type Enricher } from '@dlog/enricher';
import { createGate, type Gate } from '@dlog/gate';
import { createKafka, ensurePipelineTopics } from '@dlog/kafka';
import { createSink, sinkNativeClient, type Sink } from '@dlog/sink';
import { storeFromConfig, migrate, startQueryServer, type Store } from '@dlog/store';
import { usableCores } from '@dlog/runtime';
import { describeExit, startWorkerProcess, type WorkerProcess } from './worker-process.js';

export interface Pipeline {
  readonly store: Store;
  /** In-process workers (workers: 'in-process'); undefined when they run as child processes. */
  readonly gate: Gate | undefined;
  readonly enricher: Enricher | undefined;
  readonly alerter: Alerter | undefined;
  readonly sink: Sink;
  readonly processes: WorkerProcess[];
  readonly queryPort: number | undefined;
  /** Resolves if a worker fails for good; the host should then stop and exit non-zero. */
  readonly failed: Promise<Error>;
  stop(): Promise<void>;
}

/**
 * How the pipeline's shutdown limit is shared: each worker process in turn gets 22% of it before
 * SIGKILL (its own limit a fifth shorter, so it ends itself first), and the sink's last flush
 * 25%; the rest is slack for closing the store. At the default 15 s: 3.3 s per worker (which
 * stop in well under a second when healthy) and 3.75 s for the sink.
 */
export function shutdownBudget(limitMs: number): { workerGraceMs: number; workerLimitMs: number; sinkDrainMs: number } {
  const workerGraceMs = Math.max(1, Math.floor(limitMs * 0.22));
  return {
    workerGraceMs,
    workerLimitMs: Math.max(1, Math.floor(workerGraceMs * 0.8)),
    sinkDrainMs: Math.max(1, Math.floor(limitMs * 0.25)),
  };
}

/**
 * The gate's threads when it shares a 2-core machine with the whole pipeline: none (it validates
 * and protects in its own event loop), unless DLOG_GATE_THREADS says otherwise. Alone on 2 cores
 * the gate is fastest with two (bench:gate, steady 30k vs 23k events/s), but beside the broker,
 * the enricher, the alerter and the sink a thread only adds hand-offs: draining a 150k backlog,
 * alternated three times, the gate used 5.3-5.4 s of CPU inline against 6.0 s with one thread,
 * and the pipeline drained 16.9-17.9k decisions/s against 15.9-17.3k (103-107 against 107-113 us
 * a decision; 2026-11-28). Live at 10k/s the latency was the same either way.
 */
export function pipelineGateThreads(env: NodeJS.ProcessEnv, cores: number): NodeJS.ProcessEnv {
  if (env.DLOG_GATE_THREADS !== undefined && env.DLOG_GATE_THREADS !== '') return {};
  return cores <= 2 ? { DLOG_GATE_THREADS: '0' } : {};
}

/**
 * Gate, enricher, alerter and sink with the store the sink owns. In embedded mode this is the
 * only process that may open the data directory, so it also answers `dlog query` on loopback.
 * The workers that never touch the store may run as child processes (`workers: 'processes'`,
 * what `dlog up` does) so they use the machine's other cores; tests run them in-process to read
 * their counters. With CLICKHOUSE_URL set the same composition runs against a server.
 */
export async function createPipeline(opts: {
  config: Config;
  log: Logger;
  queryServer?: boolean;
  workers?: 'in-process' | 'processes';
  /** Environment for worker processes; defaults to this process's. */
  env?: NodeJS.ProcessEnv;
  /**
   * kafkajs's own log; `log` when not given. `dlog up` gives it the CLI's quieter library log: on
   * new topics kafkajs logs "not the leader" and "coordinator is loading" at error level while it
   * retries them, which buried the first start's output.
   */
  libraryLog?: Logger;
}): Promise<Pipeline> {
  const { config, log } = opts;
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-pipeline`, log: opts.libraryLog ?? log });
  await ensurePipelineTopics(kafka, config.topicPrefix);
  const store = await storeFromConfig(config, { createDatabase: true, log });
  const applied = await migrate(store, { log });
  log.info({ migrations: applied }, 'schema current');
  // First of what listens or runs: a taken DLOG_QUERY_PORT fails the start before any worker runs.
  const query = opts.queryServer !== false && store.mode === 'embedded'
    ? await startQueryServer({ store, port: config.queryPort, dataDir: config.clickhouseDataDir, log, queryTimeoutMs: config.queryTimeoutMs }).catch(async (err: unknown) => {
        await store.close();
        throw err;
      })
    : undefined;
  const sinkLog = log.child({ worker: 'sink' });
  const native = sinkNativeClient(config.kafkaClient, config.kafkaBrokers, `${config.kafkaClientId}-sink`, sinkLog);
  // Shutdown fits in this process's own limit (DLOG_SHUTDOWN_TIMEOUT_MS): 22% of it for each of
  // the three worker processes, in turn, and 25% for the sink's last flush.
  const budget = shutdownBudget(config.shutdownTimeoutMs);
  const sink = createSink({ kafka, store, log: sinkLog, config, native, drainTimeoutMs: budget.sinkDrainMs });
  let gate: Gate | undefined;
  let enricher: Enricher | undefined;
  let alerter: Alerter | undefined;
  const processes: WorkerProcess[] = [];
  let failWith: (err: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => (failWith = resolve));
  void sink.failed.then(failWith);
  let stopping = false;
  try {
    await sink.start();
    if (opts.workers === 'processes') {
      // Each worker's own shutdown limit ends before the pipeline's SIGKILL would.
      const env = { ...(opts.env ?? process.env), DLOG_SHUTDOWN_TIMEOUT_MS: String(budget.workerLimitMs) };
      const gateEnv = { ...env, ...pipelineGateThreads(env, usableCores()) };
      // Downstream first, so nothing waits on a stage that is not there yet.
      for (const name of ['alerter', 'enricher', 'gate'] as const) {
        // The alerter replays its input twice before it is ready (closed windows, then open ones),
        // each within DLOG_ALERTER_REPLAY_TIMEOUT_MS: its limit grows with that setting.
        const w =
          name === 'alerter'
            ? await startWorkerProcess(name, env, 2 * config.alerterReplayTimeoutMs + 60_000, 'twice DLOG_ALERTER_REPLAY_TIMEOUT_MS and a minute')
            : await startWorkerProcess(name, name === 'gate' ? gateEnv : env);
        processes.push(w);
        void w.exited.then((code) => {
          if (!stopping) failWith(new Error(`${name} exited unexpectedly (${describeExit(code, w.signal())})`));
        });
      }
    } else {
      alerter = await createAlerter({ kafka, config, log: log.child({ worker: 'alerter' }) });
      enricher = await createEnricher({ kafka, config, log: log.child({ worker: 'enricher' }) });
      gate = await createGate({ kafka, config, log: log.child({ worker: 'gate' }) });
      await alerter.start();
      await enricher.start();
      await gate.start();
    }
  } catch (err) {
    // A start that fails half way leaves nothing behind: what started stops, in reverse, and the
    // endpoint and the store close (a caller in this process could otherwise not start again).
    stopping = true;
    const quietly = (what: string, fn: () => Promise<unknown>) => fn().catch((e: unknown) => log.warn({ err: e, what }, 'stopping after a failed start'));
    for (const w of [...processes].reverse()) await quietly(w.name, () => w.stop(budget.workerGraceMs));
    for (const [what, worker] of [['gate', gate], ['enricher', enricher], ['alerter', alerter]] as const) if (worker) await quietly(what, () => worker.stop());
    await quietly('sink', () => sink.stop());
    if (query) await quietly('query server', () => query.close());
    await quietly('store', () => store.close());
    throw err;
  }
  return {
    store,
    gate,
    enricher,
    alerter,
    sink,
    processes,
    queryPort: query?.port,
    failed,
    async stop() {
      stopping = true;
      // No new analyst query from here: in embedded mode each one holds the engine the sink's last
      // flush needs. One already running is waited for at the end.
      const queryClosed = query?.close();
      // Upstream first, so each stage drains what the one before it committed: stop taking raw
      // events, then enrichment and alerting, then flush the sink and commit, then the store.
      // With the full limit each, one slow worker once let this process hit its own limit and
      // exit first, leaving the workers running (see shutdownBudget).
      // A worker that had to be killed, or failed its own drain, makes the whole stop a failure
      // (after everything else is closed): a supervisor saw exit 0 for a shutdown that was not clean.
      const unclean: string[] = [];
      for (const name of ['gate', 'enricher', 'alerter']) {
        const w = processes.find((p) => p.name === name);
        if (w) {
          const code = await w.stop(budget.workerGraceMs);
          if (code !== 0) {
            log.warn({ worker: name, code, signal: w.signal() }, 'worker exited non-zero on stop');
            unclean.push(`${name} (${describeExit(code, w.signal())})`);
          }
        }
      }
      // Each step is timed: a stop that drags (or hangs) names the step in the log.
      const step = async (name: string, fn: (() => Promise<void>) | undefined) => {
        if (!fn) return;
        const t0 = Date.now();
        const slow = setInterval(() => log.warn({ step: name, waitedMs: Date.now() - t0 }, 'pipeline stop: still waiting for this step'), 5_000);
        try {
          await fn();
        } finally {
          clearInterval(slow);
          log.debug({ step: name, ms: Date.now() - t0 }, 'pipeline stop: step done');
        }
      };
      await step('gate', gate && (() => gate!.stop()));
      await step('enricher', enricher && (() => enricher!.stop()));
      await step('alerter', alerter && (() => alerter!.stop()));
      await step('sink', () => sink.stop());
      await step('query server', queryClosed && (() => queryClosed));
      await step('store', () => store.close());
      if (unclean.length > 0) throw new Error(`worker(s) did not stop cleanly: ${unclean.join(', ')}`);
    },
  };
}
