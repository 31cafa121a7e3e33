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
  /** How a value that may embed a secret (a URL's password) is shown in errors and logs. */
  readonly redact?: (value: string) => string;
}

function field<T>(spec: FieldSpec<T>): FieldSpec<T> {
  return spec;
}

const hostPort = /^[A-Za-z0-9.\-_]+:\d{1,5}$/;

/**
 * A whole number written in plain digits. Number() would also take `0x2384`, `1e3` or `12.0`,
 * which in an environment variable are typos, not intent.
 */
function integer(min: number, max: number, why?: string): z.ZodType<number> {
  return z.string().transform((raw, ctx) => {
    const s = raw.trim();
    if (!/^\d+$/.test(s)) {
      ctx.addIssue({ code: 'custom', message: 'write a whole number in plain digits (no sign, decimal point, exponent or 0x)' });
      return z.NEVER;
    }
    const n = Number(s);
    if (n < min || n > max) {
      ctx.addIssue({ code: 'custom', message: `must be from ${min} to ${max}${why ? ` (${why})` : ''}` });
      return z.NEVER;
    }
    return n;
  });
}

const port = integer(1, 65535);
/** Node runs a timer set longer than 2^31-1 ms after 1 ms, so a larger timeout would fire at once. */
const maxTimerMs = 2_147_483_647;
function millis(min: number, max = maxTimerMs): z.ZodType<number> {
  return integer(min, max, max === maxTimerMs ? 'about 24.8 days, the longest timer Node can run' : undefined);
}

/** Query parameters that may carry credentials (ClickHouse takes `password=` and `http_header_authorization=`). */
const secretParam = /pass|pwd|secret|token|key|auth|sig|credential/i;

/**
 * A URL as safe to show: the password in `user:password@` and credential-like query values become
 * `***`. Works on the text rather than a parsed URL, so it also covers values that fail to parse
 * (a password with an unescaped `/` or `#`) and shows the rest as the user wrote it.
 */
export function redactUrl(raw: string): string {
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(raw)?.[0] ?? '';
  let rest = raw.slice(scheme.length);
  const authorityEnd = rest.search(/[/?#\\]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  // The last '@' of the authority ends the userinfo, as the URL parser reads it. A value that does
  // not parse may hold a password with '/', '?' or '#' in it: mask up to its last '@' instead.
  // One that parses with an '@' after its authority ('user:2024#Winter@host' reads as host 'user',
  // port 2024) holds such a password too.
  const parses = URL.canParse(raw) && !rest.slice(authority.length).includes('@');
  const at = parses ? authority.lastIndexOf('@') : rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    const colon = userinfo.indexOf(':');
    if (colon >= 0) rest = `${userinfo.slice(0, colon)}:***${rest.slice(at)}`;
  }
  rest = rest.replace(/([?&])([^=&#]*)=([^&#]*)/g, (all, lead: string, name: string) =>
    secretParam.test(name) ? `${lead}${name}=***` : all,
  );
  return scheme + rest;
}

function httpUrl(opts: { credentials: boolean; noPath?: string }): z.ZodType<string> {
  return z.string().superRefine((u, ctx) => {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not a URL' });
      return;
    }
    const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#\\]*/.exec(u)?.[0] ?? '';
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      ctx.addIssue({ code: 'custom', message: 'must start with http:// or https://' });
    } else if (u.slice(authority.length).includes('@')) {
      // 'http://user:2024#Winter@host' parses as host 'user', port 2024: the password ends up in
      // error messages as part of the "host", and the request goes elsewhere.
      ctx.addIssue({ code: 'custom', message: "has an '@' after the host: percent-encode a password's '#', '/', '?' and '@' (%23, %2F, %3F, %40)" });
    } else if (opts.noPath !== undefined && url.pathname !== '/' && url.pathname !== '') {
      ctx.addIssue({ code: 'custom', message: opts.noPath });
    } else if (!opts.credentials && (url.username !== '' || url.password !== '')) {
      // Node's fetch refuses such a URL, and its error quotes the URL, password and all.
      ctx.addIssue({ code: 'custom', message: 'must not carry user:password@ (the registry client does not send them)' });
    }
  });
}

/** A port setting as given, when it looks like one; else the default (its own field reports it). */
function localPort(raw: string | undefined, fallback: number): number {
  const n = raw !== undefined && /^\d{1,5}$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  return n >= 1 && n <= 65535 ? n : fallback;
}

const brokers = z
  .string()
  .transform((s) => s.split(',').map((b) => b.trim()).filter((b) => b.length > 0))
  .refine((list) => list.length > 0 && list.every((b) => hostPort.test(b)), 'must be host:port[,host:port...]')
  .refine((list) => list.every((b) => validPort(Number(b.slice(b.lastIndexOf(':') + 1)))), 'ports go from 1 to 65535');

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 1 && p <= 65535;
}

const keyId = /^[A-Za-z0-9._-]{1,32}$/;
// Standard or URL-safe alphabet (Buffer decodes both), padding only at the end. Buffer.from skips
// any other character silently, which would turn a mangled secret into a different key.
const base64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

/**
 * What is wrong with a DLOG_PII_KEYS value, in the format the gate's key ring reads:
 * `kid:base64secret[,kid:base64secret...]`, ids unique, secrets at least 32 bytes. Names keys by
 * position and (valid) id, never by their secret. Checked here so a bad or empty value stops every
 * replica at start instead of one crashing later or, worse, falling back to a key of its own.
 */
function piiKeysProblem(spec: string): string | undefined {
  if (spec.trim() === '') {
    return 'it is empty; give at least one <key-id>:<base64 secret>, or unset it to use a local development key';
  }
  const seen = new Map<string, number>();
  for (const [i, raw] of spec.split(',').entries()) {
    const part = raw.trim();
    const n = `key #${i + 1}`;
    // A stray comma is often a key that expanded to nothing; dropping it would orphan its hashes.
    if (part === '') return `${n} is empty (a stray comma, or a key that expanded to nothing?)`;
    const sep = part.indexOf(':');
    if (sep < 0) return `${n} is not <key-id>:<base64 secret>`;
    const id = part.slice(0, sep);
    if (!keyId.test(id)) return `${n}: the key id must be 1-32 letters, digits, . _ -`;
    // Whitespace inside a secret is fine (openssl wraps base64 at 64 characters; the gate skips
    // it), but a second `kid:` after it is a key per line, which the gate would read as one key.
    if (part.includes(':', sep + 1)) return `${n} (${id}): keys are separated by commas, not line breaks or spaces`;
    const secret = part.slice(sep + 1).replace(/\s+/g, '');
    if (!base64.test(secret) || secret.replace(/=+$/, '').length % 4 === 1) {
      return `${n} (${id}): the secret is not base64`;
    }
    const bytes = Buffer.from(secret, 'base64').length;
    if (bytes < 32) return `${n} (${id}): the secret is ${bytes} bytes, it must be at least 32 (openssl rand -base64 32)`;
    const first = seen.get(id);
    if (first !== undefined) return `key id ${id} is used twice (keys #${first} and #${i + 1})`;
    seen.set(id, i + 1);
  }
  return undefined;
}

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
    schema: httpUrl({ credentials: true }),
    fallback: (env) => `http://127.0.0.1:${localPort(env.DLOG_REGISTRY_PORT, 8081)}/apis/ccompat/v7`,
    example: 'http://127.0.0.1:8081/apis/ccompat/v7',
    doc: 'Confluent-compatible schema registry base URL (credentials: SCHEMA_REGISTRY_USER and SCHEMA_REGISTRY_PASSWORD)',
    redact: redactUrl,
  }),
  schemaRegistryUser: field({
    env: 'SCHEMA_REGISTRY_USER',
    schema: z.string().min(1, 'is empty; unset it for a registry without authentication').optional(),
    fallback: undefined,
    example: 'dlog-pipeline',
    doc: 'Schema registry user (Basic authentication), with SCHEMA_REGISTRY_PASSWORD',
  }),
  schemaRegistryPassword: field({
    env: 'SCHEMA_REGISTRY_PASSWORD',
    schema: z.string().optional(),
    fallback: undefined,
    example: '<password or API secret>',
    doc: 'Schema registry password (Basic authentication); or SCHEMA_REGISTRY_PASSWORD_FILE',
    secret: true,
  }),
  clickhouseUrl: field({
    env: 'CLICKHOUSE_URL',
    // The ClickHouse client reads a URL's path as the database, over CLICKHOUSE_DATABASE: every
    // table went to another database than the one analysts and the grants point at.
    schema: httpUrl({ credentials: true, noPath: 'must have no path: the ClickHouse client would take it for the database; name the database in CLICKHOUSE_DATABASE' }).optional(),
    fallback: undefined,
    example: 'http://127.0.0.1:8123',
    doc: 'ClickHouse server HTTP URL; unset: embedded chDB on CLICKHOUSE_DATA_DIR',
    redact: redactUrl,
  }),
  clickhouseUser: field({
    env: 'CLICKHOUSE_USER',
    schema: z.string().regex(/^\S(.*\S)?$/, 'is blank or has spaces around it'),
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
    schema: z.string().regex(/^\S(.*\S)?$/, 'is blank or has spaces around it').transform((p) => path.resolve(p)),
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
    schema: millis(1),
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
  queryTimeoutMs: field({
    env: 'DLOG_QUERY_TIMEOUT_MS',
    schema: millis(1_000, 3_600_000),
    fallback: '110000',
    example: '300000',
    doc: 'Longest an analyst query (dlog query and the audit commands) runs in the engine before it is stopped; in embedded mode it shares the engine with the sink',
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
    schema: z
      .string()
      .superRefine((spec, ctx) => {
        const problem = piiKeysProblem(spec);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
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
    doc: 'Stable id of this worker instance; names its Kafka transactional id, so give each replica its own. The alerter runs as one instance per pipeline (a second in its group makes both hold their windows)',
  }),
  shutdownTimeoutMs: field({
    env: 'DLOG_SHUTDOWN_TIMEOUT_MS',
    schema: millis(1),
    fallback: '15000',
    example: '30000',
    doc: 'Hard limit for a graceful shutdown',
  }),
  gateThreads: field({
    env: 'DLOG_GATE_THREADS',
    schema: integer(0, 16),
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
    schema: integer(1, 1_000_000),
    fallback: '50000',
    example: '20000',
    doc: 'Sink: rows per ClickHouse insert, at most (large inserts make few parts)',
  }),
  sinkBatchBytes: field({
    env: 'DLOG_SINK_BATCH_BYTES',
    // At most 256 MiB: ClickHouse writes an insert up to min_insert_block_size_bytes (256 MiB) as
    // one part, so a batch lands whole or not at all, which retries and dead-lettering rely on.
    schema: integer(1024, 256 * 1024 * 1024),
    // 64 MiB (~50k decisions of 1.3 KB, so DLOG_SINK_BATCH_ROWS binds first): against 16 MiB,
    // bench:sink used 34 µs of CPU a row instead of 41-50, as fewer parts leave fewer merges.
    // Only a backlog fills a batch; at a steady rate DLOG_SINK_FLUSH_INTERVAL_MS seals it.
    fallback: String(64 * 1024 * 1024),
    example: String(8 * 1024 * 1024),
    doc: 'Sink: bytes of row data per ClickHouse insert, at most',
  }),
  sinkFlushIntervalMs: field({
    env: 'DLOG_SINK_FLUSH_INTERVAL_MS',
    schema: millis(10, 600_000),
    // 400 ms: at 5,000 decisions/s p99 produce-to-queryable went from 4.3 s (1,000 ms) to 2.6 s
    // (bench:pipeline, BENCH_RATE=5000); busy tables seal by rows and bytes long before this.
    fallback: '400',
    example: '500',
    doc: 'Sink: longest a row waits in memory before its batch is inserted (bounds produce-to-queryable latency)',
  }),
  sinkMaxBufferedBytes: field({
    env: 'DLOG_SINK_MAX_BUFFERED_BYTES',
    schema: integer(1024, 8 * 1024 * 1024 * 1024),
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
    schema: millis(1000, 3_600_000),
    fallback: '120000',
    example: '300000',
    doc: 'Alerter: longest the start may spend rebuilding its windows from already-processed input',
  }),
} as const;

type Fields = typeof fields;
export type Config = { readonly [K in keyof Fields]: z.output<Fields[K]['schema']> };

/** Environment variable names the project reads (including `<secret>_FILE` forms). */
const sharedPrefixes = ['CLICKHOUSE_', 'SCHEMA_REGISTRY_', 'KAFKA_'];

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

/** A value the user set, and the variable it came from (`<env>_FILE` for a secret read from a file). */
interface Given {
  readonly value: string;
  readonly from: string;
}

function rawValue(spec: FieldSpec<unknown>, env: NodeJS.ProcessEnv): Given | undefined {
  const direct = env[spec.env];
  const fileEnv = `${spec.env}_FILE`;
  const file = spec.secret ? env[fileEnv] : undefined;
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(spec.env, `Set either ${spec.env} or ${fileEnv}, not both.`);
  }
  if (file !== undefined) {
    let value: string;
    try {
      // Every line ending at the end, as the server's entrypoint strips them: with one left, the
      // client sent a password the server never set.
      value = readFileSync(file, 'utf8').replace(/[\r\n]+$/, '');
    } catch (err) {
      throw new ConfigError(
        fileEnv,
        `${fileEnv}=${JSON.stringify(file)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}); point it at a readable file holding the secret.`,
      );
    }
    // An empty file is a secret that was not mounted or not written, never an intended value.
    if (value.trim() === '') {
      throw new ConfigError(fileEnv, `${fileEnv}=${JSON.stringify(file)} names an empty file; put the secret in it, or unset ${fileEnv}.`);
    }
    return { value, from: fileEnv };
  }
  if (direct === undefined) return undefined;
  // An empty non-secret means "the default" (`FOO=` in a compose file); an empty secret is checked
  // by its schema, since for a key ring it would otherwise read as "not configured".
  if (direct === '' && spec.fallback !== undefined && !spec.secret) return undefined;
  return { value: direct, from: spec.env };
}

/**
 * The local listeners, which all bind 127.0.0.1 and so need different ports: the stack's, and the
 * pipeline's query endpoint (on the registry's port, `dlog query` sent its token to the registry).
 */
const stackPorts = ['kafkaPort', 'kafkaControllerPort', 'registryPort', 'queryPort'] as const;

/** A port near `taken[0]` that none of `taken` uses, to suggest. */
function freePort(taken: readonly number[]): number {
  for (let p = taken[0]! + 1; p <= 65535; p++) if (!taken.includes(p)) return p;
  for (let p = taken[0]! - 1; p >= 1; p--) if (!taken.includes(p)) return p;
  return 1;
}

function checkStackPorts(config: Config, given: ReadonlySet<string>): void {
  const taken = stackPorts.map((k) => config[k]);
  for (const [i, a] of stackPorts.entries()) {
    for (const b of stackPorts.slice(i + 1)) {
      if (config[a] !== config[b]) continue;
      const p = config[a];
      const envA = fields[a].env;
      const envB = fields[b].env;
      const suggestion = freePort([p, ...taken]);
      // Blame the one the user set; when both (or neither) were set, name both.
      if (given.has(envA) !== given.has(envB)) {
        const [set, other] = given.has(envA) ? [envA, envB] : [envB, envA];
        throw new ConfigError(
          set,
          `${set}=${p} is also the port of ${other} (its default); change ${set}, for example ${set}=${suggestion}, or set ${other} to another port.`,
        );
      }
      throw new ConfigError(
        envB,
        `${envA} and ${envB} are both ${p}; the local stack needs a port for each: change one, for example ${envB}=${suggestion}.`,
      );
    }
  }
}

/**
 * The registry URL carrying SCHEMA_REGISTRY_USER and SCHEMA_REGISTRY_PASSWORD as its userinfo:
 * one value reaches every registry client, which takes them out again and sends them as a Basic
 * authorization header (contracts' registryEndpoint). Logs show the URL with the password masked.
 */
function withRegistryCredentials(config: Config): string {
  const url = config.schemaRegistryUrl;
  const user = config.schemaRegistryUser;
  const password = config.schemaRegistryPassword;
  if (user === undefined) {
    if (password !== undefined) throw new ConfigError('SCHEMA_REGISTRY_USER', 'SCHEMA_REGISTRY_PASSWORD is set without SCHEMA_REGISTRY_USER; set the user too, for example SCHEMA_REGISTRY_USER=dlog-pipeline.');
    return url;
  }
  const parsed = new URL(url);
  if (parsed.username !== '' || parsed.password !== '') {
    throw new ConfigError('SCHEMA_REGISTRY_USER', `SCHEMA_REGISTRY_URL=${JSON.stringify(redactUrl(url))} already carries credentials; give them either in the URL or as SCHEMA_REGISTRY_USER/SCHEMA_REGISTRY_PASSWORD.`);
  }
  parsed.username = encodeURIComponent(user);
  parsed.password = encodeURIComponent(password ?? '');
  return parsed.toString();
}

/**
 * The ClickHouse client lets `user:password@` in CLICKHOUSE_URL override CLICKHOUSE_USER and
 * CLICKHOUSE_PASSWORD with no more than a warning, so a deployment would run as a user other than
 * the one its settings name. Both at once is refused.
 */
function checkClickhouseCredentials(config: Config, given: ReadonlySet<string>): void {
  if (config.clickhouseUrl === undefined) return;
  const url = new URL(config.clickhouseUrl);
  if (url.username === '' && url.password === '') return;
  const also = ['CLICKHOUSE_USER', 'CLICKHOUSE_PASSWORD'].filter((e) => given.has(e));
  if (also.length === 0) return;
  throw new ConfigError(
    also[0]!,
    `CLICKHOUSE_URL=${JSON.stringify(redactUrl(config.clickhouseUrl))} carries credentials and ${also.join(' and ')} ${also.length > 1 ? 'are' : 'is'} set too; give them in one place, for example drop user:password@ from the URL.`,
  );
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
    // The other prefixes are shared with other programs (KAFKA_HEAP_OPTS, a server image's
    // CLICKHOUSE_DB), so only a near miss of one of ours is refused: CLICKHOUSE_PASWORD was
    // ignored, and the process ran on without a password.
    if (sharedPrefixes.some((p) => name.startsWith(p)) && !known.includes(name)) {
      // One edit: CLICKHOUSE_UID (the server image's) is two from CLICKHOUSE_URL, and not ours.
      const near = known.find((k) => sharedPrefixes.some((p) => k.startsWith(p)) && levenshtein(name, k) <= 1);
      if (near) throw new ConfigError(name, `Unknown setting ${name}. Did you mean ${near}?`);
    }
  }
  const out: Record<string, unknown> = {};
  const given = new Set<string>();
  for (const [key, spec] of Object.entries(fields) as [string, FieldSpec<unknown>][]) {
    const user = rawValue(spec, env);
    if (user) given.add(spec.env);
    const raw = user?.value ?? (typeof spec.fallback === 'function' ? spec.fallback(env) : spec.fallback);
    if (raw === undefined) {
      out[key] = undefined;
      continue;
    }
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      const reason = parsed.error.issues.map((i) => i.message).join('; ');
      const from = user?.from ?? spec.env;
      const shown =
        from !== spec.env
          ? ` (read from ${from}=${JSON.stringify(env[from])})`
          : `=${spec.secret && raw.trim() !== '' ? '<secret>' : JSON.stringify(spec.redact ? spec.redact(raw) : raw)}`;
      throw new ConfigError(from, `Invalid ${spec.env}${shown}: ${reason}. ${spec.doc}; for example ${spec.env}=${spec.example}.`);
    }
    out[key] = parsed.data;
  }
  out.schemaRegistryUrl = withRegistryCredentials(out as Config);
  checkClickhouseCredentials(out as Config, given);
  const config = out as Config;
  checkStackPorts(config, given);
  // Checked here, not only when the sink starts: then the store had been opened and migrated,
  // and under `dlog up` the other workers had started, before the process died with a stack trace.
  const buffers = sinkBufferProblem(config);
  if (buffers) {
    const env = given.has(fields.sinkMaxBufferedBytes.env) || !given.has(fields.sinkBatchBytes.env) ? fields.sinkMaxBufferedBytes.env : fields.sinkBatchBytes.env;
    throw new ConfigError(env, buffers);
  }
  return Object.freeze(config);
}

/** Why the sink could not hold a full batch with these sizes, or undefined. */
export function sinkBufferProblem(c: Pick<Config, 'sinkMaxBufferedBytes' | 'sinkBatchBytes'>): string | undefined {
  if (c.sinkMaxBufferedBytes >= c.sinkBatchBytes) return undefined;
  return `DLOG_SINK_MAX_BUFFERED_BYTES=${c.sinkMaxBufferedBytes} is below DLOG_SINK_BATCH_BYTES=${c.sinkBatchBytes}: a full batch could never be held; set DLOG_SINK_MAX_BUFFERED_BYTES to at least ${c.sinkBatchBytes * 2}, or lower DLOG_SINK_BATCH_BYTES.`;
}

/** A copy safe to log: secrets masked, and the passwords in URLs. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(fields) as [keyof Config, FieldSpec<unknown>][]) {
    const value = config[key];
    if (spec.secret && value) out[key] = '<secret>';
    else if (spec.redact && typeof value === 'string') out[key] = spec.redact(value);
    else out[key] = value;
  }
  return out;
}
