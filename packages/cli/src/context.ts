import { loadConfig, type Config } from '@dlog/config';
import { createLogger, type Logger } from '@dlog/runtime';
import pino from 'pino';

export interface CliContext {
  config: Config;
  log: Logger;
}

/** The CLI keeps stdout for answers; its structured log goes to stderr, quiet unless LOG_LEVEL asks. */
export function cliContext(): CliContext {
  const config = loadConfig();
  const level = process.env.LOG_LEVEL ?? 'warn';
  const log = createLogger({ name: 'dlog', level, destination: pino.destination({ dest: 2, sync: true }) });
  return { config, log };
}
