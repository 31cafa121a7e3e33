import { ConfigError, describeConfig, loadConfig, type Config } from '@dlog/config';
import type { Logger } from 'pino';
import { createLogger } from './logger.js';
import { Shutdown } from './shutdown.js';

export interface Service {
  readonly name: string;
  readonly config: Config;
  readonly log: Logger;
  readonly shutdown: Shutdown;
  /** Marks the service ready: logged once, and sent to a supervising parent process if any. */
  ready(details?: Record<string, unknown>): void;
  readonly isReady: boolean;
}

/**
 * Wires what every worker's main.ts needs: validated config (a wrong field ends the process at
 * start with the field named), a logger, signal handling and a readiness signal.
 */
export function startService(name: string, env: NodeJS.ProcessEnv = process.env): Service {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${name}: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({ name, level: config.logLevel });
  const shutdown = new Shutdown(log, config.shutdownTimeoutMs);
  shutdown.install();
  log.debug({ config: describeConfig(config) }, 'configuration loaded');
  let isReady = false;
  if (process.send) {
    // Started by a supervisor (the pipeline) over IPC: when it goes away without stopping this
    // worker (killed, crashed), stop too rather than run on unsupervised.
    const orphaned = () => {
      if (shutdown.started) return;
      log.warn('the supervising process went away: shutting down');
      void shutdown.run(0);
    };
    // Gone already (it died while this process was loading): the event has passed.
    if (!process.connected) setImmediate(orphaned);
    else process.once('disconnect', orphaned);
  }
  return {
    name,
    config,
    log,
    shutdown,
    get isReady() {
      return isReady;
    },
    ready(details = {}) {
      if (isReady) return;
      isReady = true;
      log.info(details, 'ready');
      process.send?.({ type: 'ready', service: name, ...details });
    },
  };
}
