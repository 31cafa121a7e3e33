import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * Paths pino censors wherever they appear: connection secrets and personal-data keys must never
 * reach a log line, even when a whole config or error object is logged by mistake.
 */
export const redactPaths = [
  'password',
  '*.password',
  '*.*.password',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  'key',
  '*.key',
  'keys',
  '*.keys',
  'hmacKey',
  '*.hmacKey',
  'clickhousePassword',
  '*.clickhousePassword',
  // The rest of Config's secrets, by their names there (a whole config logged by mistake).
  'piiKeys',
  '*.piiKeys',
  'schemaRegistryPassword',
  '*.schemaRegistryPassword',
  'Authorization',
  '*.Authorization',
  '*.headers.Authorization',
  '*.*.headers.authorization',
  '*.*.headers.Authorization',
  'sasl',
  '*.sasl',
];

export interface LoggerOptions {
  name: string;
  level?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read what was logged. */
  destination?: pino.DestinationStream;
}

export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      redact: { paths: redactPaths, censor: '[redacted]' },
      base: { service: opts.name, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
