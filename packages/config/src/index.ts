import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/**
 * One typed configuration for every service and the CLI.
 *
 * Every setting is an environment variable with a default that points at the local stack, so a
 * newcomer needs none of them. Validation happens once, at start: the first wrong field stops the
 * process with its name, the value given and what to write instead. Secrets may come from
 * `<NAME>_FILE` (a path) instead of the variable itself, and are never echoed in errors.
 */

export class ConfigError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'ConfigError';
    this.field = field;
  }
}

interface FieldSpec<T> {
  /** Environment variable that sets it. */
  readonly env: string;
  readonly schema: z.ZodType<T>;
  /**
   * Raw default, parsed like a user value; undefined: the setting is optional. A function derives
   * it from other settings (the brokers' default follows the local stack's port).
   */
  readonly fallback: string | undefined | ((env: NodeJS.ProcessEnv) => string | undefined);
  /** What a user should write; shown on error. */
  readonly example: string;
  readonly doc: string;
  /** Secret values are never printed, and may be read from `<env>_FILE`. */
  readonly secret?: boolean;
}

function field<T>(spec: FieldSpec<T>): FieldSpec<T> {
  return spec;
}

const hostPort = /^[A-Za-z0-9.\-_]+:\d{1,5}$/;
const port = z.coerce.number().int().min(1).max(65535);
const positiveInt = z.coerce.number().int().positive();
const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), 'must start with http:// or https://');

/** A port setting as given, when it looks like one; else the default (its own field reports it). */
function localPort(raw: string | undefined, fallback: number): number {
  const n = raw !== undefined && /^\d{1,5}$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  return n >= 1 && n <= 65535 ? n : fallback;
}

const brokers = z
  .string()
  .transform((s) => s.split(',').map((b) => b.trim()).filter((b) => b.length > 0))
  .refine((list) => list.length > 0 && list.every((b) => hostPort.test(b)), 'must be host:port[,host:port...]');

/** Every setting the project knows. Services read the whole set; all have safe defaults. */
export const fields = {
  kafkaBrokers: field({
    env: 'KAFKA_BROKERS',
    schema: brokers,
    // The local stack's broker, wherever DLOG_KAFKA_PORT put it.
    fallback: (env) => `127.0.0.1:${localPort(env.DLOG_KAFKA_PORT, 9092)}`,
    example: '127.0.0.1:9092,127.0.0.1:9094',
    doc: 'Kafka bootstrap servers',
  }),
  kafkaClientId: field({
    env: 'KAFKA_CLIENT_ID',
    schema: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'letters, digits, . _ - only'),
    fallback: 'decision-log',
    example: 'decision-log-gate',
    doc: 'client.id sent to Kafka',
  }),
  kafkaClient: field({
    env: 'DLOG_KAFKA_CLIENT',
    schema: z.enum(['auto', 'native', 'kafkajs']),
    fallback: 'auto',
    example: 'native',
    doc: 'Kafka client of the gate, enricher and alerter loops: native (librdkafka via node-rdkafka, several times less CPU per message), kafkajs, or auto (native when installed); the sink consumes on kafkajs unless this is native',
  }),
  schemaRegistryUrl: field({
    env: 'SCHEMA_REGISTRY_URL',
    schema: httpUrl,
    fallback: (env) => `http://127.0.0.1:${localPort(env.DLOG_REGISTRY_PORT, 8081)}/apis/ccompat/v7`,
    example: 'http://127.0.0.1:8081/apis/ccompat/v7',
    doc: 'Confluent-compatible schema registry base URL',
  }),
  clickhouseUrl: field({
    env: 'CLICKHOUSE_URL',
    schema: httpUrl.optional(),
    fallback: undefined,
    example: 'http://127.0.0.1:8123',
    doc: 'ClickHouse server HTTP URL; unset: embedded chDB on CLICKHOUSE_DATA_DIR',
  }),
  clickhouseUser: field({
    env: 'CLICKHOUSE_USER',
    schema: z.string().min(1),
    fallback: 'default',
    example: 'dlog_writer',
    doc: 'ClickHouse user (server mode)',
  }),
  clickhousePassword: field({
    env: 'CLICKHOUSE_PASSWORD',
    schema: z.string(),
    fallback: '',
    example: '<from a secret store>',
    doc: 'ClickHouse password (server mode); or CLICKHOUSE_PASSWORD_FILE',
    secret: true,
  }),
  clickhouseDatabase: field({
    env: 'CLICKHOUSE_DATABASE',
    schema: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'an identifier: letters, digits, _'),
    fallback: 'dlog',
    example: 'dlog',
    doc: 'Database that holds the decision tables',
  }),
  clickhouseDataDir: field({
    env: 'CLICKHOUSE_DATA_DIR',
    schema: z.string().min(1).transform((p) => path.resolve(p)),
    fallback: '.data/clickhouse',
    example: '/var/lib/decision-log/clickhouse',
    doc: 'Embedded ClickHouse data directory (used when CLICKHOUSE_URL is unset)',
  }),
  logLevel: field({
    env: 'LOG_LEVEL',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    fallback: 'info',
    example: 'debug',
    doc: 'pino log level',
  }),
  stackDir: field({
    env: 'DLOG_STACK_DIR',
    schema: z.string().min(1).transform((p) => path.resolve(p)),
    fallback: '.cache/stack',
    example: '/opt/decision-log/stack',
    doc: 'Where the local stack keeps its downloads, data and logs',
  }),
  kafkaPort: field({
    env: 'DLOG_KAFKA_PORT',
    schema: port,
    fallback: '9092',
    example: '19092',
    doc: 'Local stack: Kafka client port on 127.0.0.1',
  }),
  kafkaControllerPort: field({
    env: 'DLOG_KAFKA_CONTROLLER_PORT',
    schema: port,
    fallback: '9093',
    example: '19093',
    doc: 'Local stack: KRaft controller port on 127.0.0.1',
  }),
  registryPort: field({
    env: 'DLOG_REGISTRY_PORT',
    schema: port,
    fallback: '8081',
    example: '18081',
    doc: 'Local stack: schema registry port on 127.0.0.1',
  }),
  stackStartTimeoutMs: field({
    env: 'DLOG_STACK_TIMEOUT_MS',
    schema: positiveInt,
    fallback: '120000',
    example: '180000',
    doc: 'How long `stack up` waits for each component to become ready',
  }),
  queryPort: field({
    env: 'DLOG_QUERY_PORT',
    schema: port,
    fallback: '8124',
    example: '18124',
    doc: 'Embedded mode: loopback port where the running pipeline answers `dlog query`',
  }),
  topicPrefix: field({
    env: 'DLOG_TOPIC_PREFIX',
    schema: z.string().regex(/^[A-Za-z0-9._-]{0,100}$/, 'letters, digits, . _ - only'),
    fallback: '',
    example: 'staging.',
    doc: 'Prefix for every topic and consumer group the pipeline uses (one Kafka cluster, several pipelines)',
  }),
  policyFile: field({
    env: 'DLOG_POLICY_FILE',
    schema: z.string().min(1).transform((p) => path.resolve(p)),
    fallback: 'infra/policies/default.yaml',
    example: '/etc/decision-log/policy.yaml',
    doc: 'Gate policy: tiers, sample rates and personal-data rules',
  }),
  piiKeys: field({
    env: 'DLOG_PII_KEYS',
    schema: z.string().optional(),
    fallback: undefined,
    example: 'k2026a:<base64 32-byte secret>,k2025b:<older secret>',
    doc: 'HMAC keys for personal data, active first; or DLOG_PII_KEYS_FILE. Unset: a local key in .data/pii-keys',
    secret: true,
  }),
  instanceId: field({
    env: 'DLOG_INSTANCE_ID',
    schema: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, . _ - only'),
    fallback: '0',
    example: 'gate-eu-1',
    doc: 'Stable id of this worker instance; names its Kafka transactional id, so give each replica its own',
  }),
  shutdownTimeoutMs: field({
    env: 'DLOG_SHUTDOWN_TIMEOUT_MS',
    schema: positiveInt,
    fallback: '15000',
    example: '30000',
    doc: 'Hard limit for a graceful shutdown',
  }),
  gateThreads: field({
    env: 'DLOG_GATE_THREADS',
    schema: z.coerce.number().int().min(0).max(16),
    fallback: '2',
    example: '4',
    doc: 'Gate: worker threads that validate and protect events while the main thread moves Kafka data (0: all on the main thread)',
  }),
  sinkGroupId: field({
    env: 'DLOG_SINK_GROUP_ID',
    schema: z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, 'letters, digits, . _ - only'),
    fallback: 'dlog-sink',
    example: 'dlog-sink',
    doc: 'Kafka consumer group of the ClickHouse sink, after DLOG_TOPIC_PREFIX (its committed offsets are what is durably written)',
  }),
  sinkBatchRows: field({
    env: 'DLOG_SINK_BATCH_ROWS',
    schema: z.coerce.number().int().min(1).max(1_000_000),
    fallback: '50000',
    example: '20000',
    doc: 'Sink: rows per ClickHouse insert, at most (large inserts make few parts)',
  }),
  sinkBatchBytes: field({
    env: 'DLOG_SINK_BATCH_BYTES',
    // At most 256 MiB: ClickHouse writes an insert up to min_insert_block_size_bytes (256 MiB) as
    // one part, so a batch lands whole or not at all, which retries and dead-lettering rely on.
    schema: z.coerce.number().int().min(1024).max(256 * 1024 * 1024),
    // 64 MiB (~50k decisions of 1.3 KB, so DLOG_SINK_BATCH_ROWS binds first): against 16 MiB,
    // bench:sink used 34 µs of CPU a row instead of 41-50, as fewer parts leave fewer merges.
    // Only a backlog fills a batch; at a steady rate DLOG_SINK_FLUSH_INTERVAL_MS seals it.
    fallback: String(64 * 1024 * 1024),
    example: String(8 * 1024 * 1024),
    doc: 'Sink: bytes of row data per ClickHouse insert, at most',
  }),
  sinkFlushIntervalMs: field({
    env: 'DLOG_SINK_FLUSH_INTERVAL_MS',
    schema: z.coerce.number().int().min(10).max(600_000),
    // 400 ms: at 5,000 decisions/s p99 produce-to-queryable went from 4.3 s (1,000 ms) to 2.6 s
    // (bench:pipeline, BENCH_RATE=5000); busy tables seal by rows and bytes long before this.
    fallback: '400',
    example: '500',
    doc: 'Sink: longest a row waits in memory before its batch is inserted (bounds produce-to-queryable latency)',
  }),
  sinkMaxBufferedBytes: field({
    env: 'DLOG_SINK_MAX_BUFFERED_BYTES',
    schema: z.coerce.number().int().min(1024).max(8 * 1024 * 1024 * 1024),
    fallback: String(128 * 1024 * 1024),
    example: String(64 * 1024 * 1024),
    doc: 'Sink: row data held in memory per table (in flight + waiting) before fetching pauses; at least DLOG_SINK_BATCH_BYTES',
  }),
  alerterRulesFile: field({
    env: 'DLOG_ALERTER_RULES_FILE',
    schema: z.string().min(1).transform((p) => path.resolve(p)),
    fallback: 'infra/alerts/rules.yaml',
    example: '/etc/decision-log/alerts.yaml',
    doc: 'Alerter: rules as code (windows, thresholds, minimum samples, suppression)',
  }),
  alerterReplayTimeoutMs: field({
    env: 'DLOG_ALERTER_REPLAY_TIMEOUT_MS',
    schema: z.coerce.number().int().min(1000).max(3_600_000),
    fallback: '120000',
    example: '300000',
    doc: 'Alerter: longest the start may spend rebuilding its windows from already-processed input',
  }),
} as const;

type Fields = typeof fields;
export type Config = { readonly [K in keyof Fields]: z.output<Fields[K]['schema']> };

/** Environment variable names the project reads (including `<secret>_FILE` forms). */
export function knownEnvNames(): string[] {
  const names: string[] = [];
  for (const spec of Object.values(fields)) {
    names.push(spec.env);
    if ('secret' in spec && spec.secret) names.push(`${spec.env}_FILE`);
  }
  return names;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

/** The closest known name, for "did you mean" hints. */
export function closest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = levenshtein(name, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

function rawValue(spec: FieldSpec<unknown>, env: NodeJS.ProcessEnv): string | undefined {
  const direct = env[spec.env];
  const file = spec.secret ? env[`${spec.env}_FILE`] : undefined;
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(spec.env, `Set either ${spec.env} or ${spec.env}_FILE, not both.`);
  }
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError(
        `${spec.env}_FILE`,
        `${spec.env}_FILE=${JSON.stringify(file)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}); point it at a readable file holding the secret.`,
      );
    }
  }
  return direct === '' && spec.fallback !== undefined && !spec.secret ? undefined : direct;
}

/**
 * Reads and validates the configuration. Throws a ConfigError naming the first wrong field.
 * Unknown `DLOG_*` variables are refused, since a typo there would otherwise silently fall back
 * to a default.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const known = knownEnvNames();
  for (const name of Object.keys(env)) {
    if (name.startsWith('DLOG_') && !known.includes(name)) {
      const hint = closest(name, known.filter((k) => k.startsWith('DLOG_')));
      throw new ConfigError(
        name,
        `Unknown setting ${name}.${hint ? ` Did you mean ${hint}?` : ''} Known DLOG_ settings: ${known.filter((k) => k.startsWith('DLOG_')).join(', ')}.`,
      );
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(fields) as [string, FieldSpec<unknown>][]) {
    const raw = rawValue(spec, env) ?? (typeof spec.fallback === 'function' ? spec.fallback(env) : spec.fallback);
    if (raw === undefined) {
      out[key] = undefined;
      continue;
    }
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      const reason = parsed.error.issues.map((i) => i.message).join('; ');
      const shown = spec.secret ? '<secret>' : JSON.stringify(raw);
      throw new ConfigError(
        spec.env,
        `Invalid ${spec.env}=${shown}: ${reason}. ${spec.doc}; for example ${spec.env}=${spec.example}.`,
      );
    }
    out[key] = parsed.data;
  }
  const config = out as Config;
  if (config.kafkaPort === config.kafkaControllerPort) {
    throw new ConfigError(
      'DLOG_KAFKA_CONTROLLER_PORT',
      `DLOG_KAFKA_CONTROLLER_PORT=${config.kafkaControllerPort} equals DLOG_KAFKA_PORT; give the controller its own port, for example ${config.kafkaPort + 1}.`,
    );
  }
  return Object.freeze(config);
}

/** A copy safe to log: secrets masked. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(fields) as [keyof Config, FieldSpec<unknown>][]) {
    const value = config[key];
    out[key] = spec.secret && value ? '<secret>' : value;
  }
  return out;
}
