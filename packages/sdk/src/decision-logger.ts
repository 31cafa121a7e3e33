import os from 'node:os';
import avro from 'avsc';
import { z } from 'zod';
import { isWellFormed, loadSchema, valueSubject } from '@dlog/contracts';
import { backoffDelay, createLogger, type Logger } from '@dlog/runtime';
import {
  eventKey,
  gateForbiddenKeys,
  InvalidDecisionError,
  toInferenceEvent,
  type ConfigRef,
  type Decision,
  type EventDefaults,
  type ImageRef,
  type ModelRef,
  type PreprocessingRef,
  type TrajectoryContext,
} from './decision.js';
import { captureEnvironment, environmentMetadata, type Environment, type EnvironmentOptions } from './environment.js';
import { loadNativeKafka, nativeKafkaLoadError, pickNativeKafka, type KafkaClientKind } from '@dlog/kafka';
import { kafkaTransport, leadingString } from './kafka-transport.js';
import { nativeTransport } from './native-transport.js';
import { errorName, messageOf } from './safe-error.js';
import { SpillFile, spillFrameBytes, type Encoded } from './spill-file.js';
import type { OutMessage, Transport } from './transport.js';
import { uuidv7, uuidv7Time } from './uuid-v7.js';

export const sdkName = '@dlog/sdk@0.1.0';

export type BufferPolicy = 'drop' | 'spill';

export interface DecisionLoggerOptions {
  /** Name of the host service (producer.service on every event). */
  service: string;
  /** Kafka bootstrap servers; required unless `transport` is given. */
  brokers?: string[];
  /** Confluent-compatible schema registry URL; required unless `transport` is given. */
  registryUrl?: string;
  /** Defaults to inference.raw. */
  topic?: string;
  /** Where the environment snapshot is registered; defaults to registry.artifacts. */
  artifactTopic?: string;
  /** Defaults for every event; a decision may override each. */
  endpoint?: string;
  decisionType?: string;
  tenant?: string | null;
  model?: ModelRef | string;
  image?: ImageRef | null;
  config?: ConfigRef | null;
  preprocessing?: PreprocessingRef | null;
  attributes?: Record<string, string>;
  environment?: EnvironmentOptions;
  buffer?: {
    /** Events held (waiting to be encoded or sent) before the policy applies. */
    maxEvents?: number;
    /** Encoded bytes held in memory before the policy applies; at least maxEventBytes. */
    maxBytes?: number;
    /** drop: newest events are dropped and counted; spill: written to spillDir and replayed in order. */
    policy?: BufferPolicy;
    /** Required for spill (and only used with it); one directory per logger (it is locked). */
    spillDir?: string;
    /**
     * Unsent bytes the spill file may hold (default 4 GiB): past it, the newest events are
     * dropped, counted and reported, rather than filling the disk (a full disk fails the host's
     * other writes too). At 30k events/s of 1 KB a broker outage fills ~120 GB an hour.
     */
    maxSpillBytes?: number;
  };
  batch?: {
    maxEvents?: number;
    /** Kept below the broker's message.max.bytes (1 MiB by default), which bounds one partition's batch. */
    maxBytes?: number;
  };
  /**
   * Larger encoded events are refused as invalid (default 262144, 256 KiB). Must not exceed the
   * gate policy's limits.max_event_bytes (262144 in infra/policies/default.yaml): a larger event
   * would be sent, counted as sent and then dead-lettered by the gate.
   */
  maxEventBytes?: number;
  compression?: 'none' | 'gzip';
  /**
   * The Kafka client: `auto` (default) takes librdkafka (node-rdkafka) when it is installed (the
   * SDK then costs ~29 µs of CPU an event instead of ~40, bench:sdk), and kafkajs otherwise;
   * `native` insists on librdkafka.
   */
  kafkaClient?: KafkaClientKind;
  /** How long one send may take before the logger counts it as failed and retries; at most 300000. */
  requestTimeoutMs?: number;
  /** Called for every refused decision, every batch of drops and every failed send; never throws back. */
  onError?: (err: DecisionLoggerError) => void;
  /** A pino logger (or one with its child / info / warn / error / debug methods); console is not one. */
  log?: Logger;
  /** Replaces Kafka and the registry (tests). */
  transport?: Transport;
}

// The same rules decision.ts applies to every event: a logger-wide default that breaks them would
// otherwise be accepted here and then refuse every event in the background. decision.ts checks
// the strings a decision sets; the defaults' are checked here, once.
const loneSurrogate = 'holds a lone surrogate (half of a character, as slice() leaves when it cuts an emoji), which the gate refuses; fix it with toWellFormed()';
const text = z.string().refine(isWellFormed, loneSurrogate);
/**
 * A map whose keys the gate takes: no prototype key (decision.ts gateForbiddenKeys), no lone
 * surrogate. Checked on the raw object: z.record leaves an own `__proto__` out of what it parses,
 * and the logger uses the options as given.
 */
const gateKeys = z.unknown().superRefine((m, ctx) => {
  if (typeof m !== 'object' || m === null) return;
  for (const k of Object.keys(m)) {
    if (gateForbiddenKeys.has(k)) ctx.addIssue({ code: 'custom', path: [k], message: 'is a prototype key, which the gate refuses (forbidden_key); rename it' });
    else if (!isWellFormed(k)) ctx.addIssue({ code: 'custom', path: [k], message: `the key ${loneSurrogate}` });
  }
});
const gateMap = <T extends z.ZodType>(values: T) => gateKeys.pipe(z.record(z.string(), values));
const refSchema = z.object({ ref: text.min(1), digest: text.nullable().optional() }).strict();
const modelUriPattern = /^registry:\/\/models\/([^:\s]+):(\S+)$/;
const modelSchema = z.unknown().superRefine((m, ctx) => {
  const problem = modelProblem(m);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

/** Why a logger-wide model reference would refuse every event; undefined when it is fine. */
function modelProblem(m: unknown): string | undefined {
  const form = "a string registry://models/<name>:<version>, or { name, version, digest? }";
  if (typeof m === 'string') {
    if (!modelUriPattern.test(m)) return `${JSON.stringify(m)} is not registry://models/<name>:<version>; pass ${form}`;
    return isWellFormed(m) ? undefined : loneSurrogate;
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return `must be ${form}`;
  const o = m as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => k !== 'name' && k !== 'version' && k !== 'digest');
  if (unknown.length > 0) return `has unknown key(s) ${unknown.join(', ')}; it takes name, version and digest`;
  if (typeof o.name !== 'string' || o.name === '') return "needs a name (a non-empty string), e.g. { name: 'loan-approver', version: '2.4.1' }";
  if (typeof o.version !== 'string' || o.version === '') return `needs a version (a non-empty string): { name: ${JSON.stringify(o.name)}, version: '<the version deployed>' }`;
  if (o.digest !== undefined && o.digest !== null && typeof o.digest !== 'string') return 'digest must be a string or null';
  // registry://models/<name>:<version> would name another model; decision.ts refuses it too.
  if (o.name.includes(':')) return `name ${JSON.stringify(o.name)} cannot contain ':' (it separates name and version in registry://models/<name>:<version>)`;
  for (const v of [o.name, o.version, o.digest]) if (typeof v === 'string' && !isWellFormed(v)) return loneSurrogate;
  return undefined;
}

/** What the logger calls on `log`: pino's shape. */
const logMethods = ['child', 'info', 'warn', 'error', 'debug'] as const;
const logSchema = z.custom<Logger>(
  (v) => typeof v === 'object' && v !== null && logMethods.every((k) => typeof (v as Record<string, unknown>)[k] === 'function'),
  `must be a pino logger (or like one: ${logMethods.join(', ')} functions); console has no child(): pass pino(), or leave log out`,
);
const optionalNumber = z.number().nullable().optional();
const paramsSchema = z
  .object({
    temperature: optionalNumber,
    topP: optionalNumber,
    maxTokens: z.number().int().nullable().optional(),
    thresholds: gateMap(z.number()).optional(),
    extra: gateMap(text).optional(),
  })
  .strict();
/** Must not exceed the gate's default policy, limits.max_event_bytes in infra/policies/default.yaml. */
const defaultMaxEventBytes = 256 * 1024;
const defaultBatchBytes = 900 * 1024;
/** host:port, or [IPv6]:port (librdkafka's form for an IPv6 literal). */
const brokerPattern = /^(?:[^\s:[\]]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/;
/** Bounded so one hung send cannot hold a batch (and close()) for longer; also setTimeout's limit. */
const maxRequestTimeoutMs = 300_000;
/** setTimeout fires at once for anything longer (it overflows to 1 ms). */
const maxTimerMs = 2 ** 31 - 1;
const optionsSchema = z
  .object({
    service: text.min(1),
    brokers: z.array(z.string().regex(brokerPattern, 'must be host:port, or [IPv6 address]:port')).min(1).optional(),
    registryUrl: z.string().url().optional(),
    topic: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/).optional(),
    artifactTopic: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/).optional(),
    endpoint: text.min(1).optional(),
    decisionType: text.min(1).optional(),
    tenant: text.nullable().optional(),
    model: modelSchema.optional(),
    image: refSchema.nullable().optional(),
    config: z.object({ ref: text.min(1), params: paramsSchema.optional() }).strict().nullable().optional(),
    preprocessing: refSchema.nullable().optional(),
    attributes: gateMap(text).optional(),
    environment: z
      .object({ libraries: z.record(z.string(), z.string()).optional(), hardware: z.record(z.string(), z.string()).optional() })
      .strict()
      .optional(),
    buffer: z
      .object({
        maxEvents: z.number().int().positive().optional(),
        maxBytes: z.number().int().positive().optional(),
        policy: z.enum(['drop', 'spill']).optional(),
        spillDir: z.string().min(1).optional(),
        maxSpillBytes: z.number().int().min(1 << 20).optional(),
      })
      .strict()
      .refine((b) => b.policy !== 'spill' || b.spillDir !== undefined, { message: 'policy spill needs buffer.spillDir (a directory of its own for this process)', path: ['spillDir'] })
      .refine((b) => b.spillDir === undefined || b.policy === 'spill', { message: "is only used with policy 'spill': set buffer.policy to 'spill', or remove spillDir", path: ['spillDir'] })
      .optional(),
    batch: z.object({ maxEvents: z.number().int().positive().optional(), maxBytes: z.number().int().min(1024).optional() }).strict().optional(),
    maxEventBytes: z.number().int().min(1024).optional(),
    compression: z.enum(['none', 'gzip']).optional(),
    kafkaClient: z.enum(['auto', 'native', 'kafkajs']).optional(),
    requestTimeoutMs: z.number().int().positive().max(maxRequestTimeoutMs).optional(),
    onError: z.custom<(err: DecisionLoggerError) => void>((v) => typeof v === 'function', 'must be a function').optional(),
    log: logSchema.optional(),
    transport: z.unknown().optional(),
  })
  .strict()
  .refine((o) => o.transport !== undefined || (o.brokers !== undefined && o.registryUrl !== undefined), {
    message: 'brokers and registryUrl are required (or a transport)',
    path: ['brokers'],
  })
  .superRefine((o, ctx) => {
    // Past this bound an event is dropped (or spilled) whatever else is held: every event larger
    // than buffer.maxBytes would be, though maxEventBytes lets it through.
    const maxBytes = o.buffer?.maxBytes;
    const maxEvent = effectiveMaxEventBytes(o.maxEventBytes, o.batch?.maxBytes);
    if (maxBytes !== undefined && maxBytes < maxEvent) {
      ctx.addIssue({
        code: 'custom',
        path: ['buffer', 'maxBytes'],
        message: `${maxBytes} is smaller than maxEventBytes (${maxEvent}${o.maxEventBytes === undefined ? ', the default' : ''}): every event larger than buffer.maxBytes would be ${o.buffer?.policy === 'spill' ? 'spilled' : 'dropped'}; raise buffer.maxBytes to at least ${maxEvent}, or lower maxEventBytes`,
      });
    }
  });

/** maxEventBytes as the logger applies it: one event must also fit a batch. */
function effectiveMaxEventBytes(maxEventBytes: number | undefined, batchBytes: number | undefined): number {
  return Math.min(maxEventBytes ?? defaultMaxEventBytes, batchBytes ?? defaultBatchBytes);
}

export type DecisionLoggerErrorKind = 'invalid' | 'dropped' | 'send' | 'spill' | 'startup' | 'failed';

/** Everything the logger reports to the host. Never thrown: handed to onError. */
export class DecisionLoggerError extends Error {
  constructor(
    readonly kind: DecisionLoggerErrorKind,
    message: string,
    /** How many events this is about (0 for a startup or send problem that lost nothing). */
    readonly count: number,
    readonly eventId?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DecisionLoggerError';
  }
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export interface DecisionLoggerStats {
  /** Accepted by record(). */
  queued: number;
  /** Acknowledged by the broker. */
  sent: number;
  /** Discarded by the drop policy (or recorded after close). */
  dropped: number;
  /** Written to the spill file (each event once, however long it stays there). */
  spilled: number;
  /** Given up on: not sent at close under the drop policy, or lost to a spill write error. */
  failed: number;
  /** Refused: missing model reference, non-serialisable input, oversized. */
  invalid: number;
  /** Failed send attempts (batches); the same batch is retried. */
  sendErrors: number;
  /** Held now: waiting to be encoded, encoded in memory, and bytes in the spill file. */
  buffered: { pending: number; events: number; bytes: number; spillBytes: number };
  /** Time from a batch's send to its acknowledgement, ms, over the last 1024 batches. */
  sendLatencyMs: LatencySummary;
  environmentDigest: string;
  /** The contract is registered (events are being encoded) and the environment snapshot published. */
  ready: { contract: boolean; environment: boolean };
}

export interface FlushResult {
  /** True when everything recorded before the call was sent (or refused / dropped). */
  ok: boolean;
  /** Events still waiting when the bound was reached. */
  unsent: number;
}

export interface DecisionLogger {
  /**
   * Records one decision. Synchronous and cheap: it stamps an event id and a timestamp and
   * queues; validation, serialisation, hashing, encoding and sending happen in the background.
   * Never throws; returns the event id (usable as a parent_event_id).
   */
  record(decision: Decision): string;
  /** A trajectory: each record() is the next step, its parent the previous step. */
  trace(opts?: { traceId?: string }): DecisionTrace;
  /** Waits until everything recorded so far is acknowledged, at most timeoutMs (Infinity: no bound). Never rejects. */
  flush(timeoutMs?: number): Promise<FlushResult>;
  /**
   * Stops accepting, drains, spills what is left (spill policy), disconnects: all within timeoutMs
   * (Infinity: no bound). A batch whose send had not been answered is spilled flagged, and the next
   * process reads the topic back before sending it again.
   */
  close(timeoutMs?: number): Promise<DecisionLoggerStats>;
  stats(): DecisionLoggerStats;
  readonly environment: Environment;
}

export interface TraceStep extends Omit<Decision, 'trajectory'> {
  toolName?: string | null;
  toolArgs?: unknown;
  /** Defaults to the previous step's event id. */
  parentEventId?: string | null;
}

export interface DecisionTrace {
  readonly traceId: string;
  /** Records the next step; returns its event id. */
  record(step: TraceStep): string;
}

interface Pending {
  seq: number;
  id: string;
  ts: number;
  d: Decision;
  traj: TrajectoryContext | undefined;
}

const slabBytes = 1 << 20;
const pumpSlice = 2_000;
/** Longest a turn of the event loop spends encoding (see encodePending). */
const sliceBudgetMs = 4;
/** Encoded on the caller's path per record() past the spill policy's bound (~25 µs each). */
const inlineSlice = 256;
const latencyRing = 1_024;

const producerStateErrors = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);

/** The read-back before a resend failed (the broker may still be coming back). */
class WrittenCheckError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WrittenCheckError';
  }
}

/** kafkajs wraps the broker's error in "retries exceeded"; look through the chain. */
function lostProducerState(err: unknown): boolean {
  try {
    for (let e = err as { type?: string; originalError?: unknown; cause?: unknown } | undefined, i = 0; e && i < 5; i++) {
      if (e.type && producerStateErrors.has(e.type)) return true;
      // SessionLostError (librdkafka failed fatally), PartlyWrittenError (kafkajs).
      if ((e as { sessionLost?: unknown }).sessionLost === true) return true;
      e = (e.originalError ?? e.cause) as typeof e;
    }
  } catch {
    // Not an error of ours or of a Kafka client (a value whose reads throw): nothing lost.
  }
  return false;
}

/**
 * The schema id written into events encoded before the contract is registered (the registry
 * unreachable at start): negative, which no registry issues, and derived from the contract's text,
 * so a spill file left by an SDK with another contract is never stamped with this one's id. The
 * real id replaces it when the event is sent (see nextBatch).
 */
export function placeholderSchemaId(schemaText: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < schemaText.length; i++) h = Math.imul(h ^ schemaText.charCodeAt(i), 0x01000193);
  return -1 - ((h >>> 0) & 0x3fffffff);
}

/** Confluent wire format: magic byte 0, then the schema id as a big-endian int32. */
function frameHeader(buf: Buffer, pos: number, schemaId: number): void {
  buf[pos] = 0;
  buf.writeInt32BE(schemaId, pos + 1);
}

class DecisionLoggerImpl implements DecisionLogger {
  readonly environment: Environment;
  private readonly topic: string;
  private readonly artifactTopic: string;
  private readonly policy: BufferPolicy;
  private readonly maxEvents: number;
  private readonly maxBytes: number;
  private readonly maxSpillBytes: number;
  private readonly batchEvents: number;
  private readonly batchBytes: number;
  private readonly maxEventBytes: number;
  private readonly defaults: EventDefaults;
  private readonly transport: Transport;
  private readonly log: Logger;
  private readonly onError: ((err: DecisionLoggerError) => void) | undefined;
  private readonly type = avro.Type.forSchema(loadSchema('inference-event'));
  private readonly placeholderId = placeholderSchemaId(JSON.stringify(loadSchema('inference-event')));
  private readonly spill: SpillFile | undefined;

  private readonly counters = { queued: 0, sent: 0, dropped: 0, spilled: 0, failed: 0, invalid: 0, sendErrors: 0 };
  private readonly latencies = new Float64Array(latencyRing);
  private latencyCount = 0;

  private seq = 0;
  private pending: Pending[] = [];
  private pendingHead = 0;
  private pumpScheduled = false;

  private mem: Encoded[] = [];
  private memHead = 0;
  private memBytes = 0;
  /**
   * Of `mem`, the events read back from the spill file (at most a batch: they stay in the file
   * until acknowledged), not counted against the memory bound. Counted, they filled a small bound
   * on their own, so every new event was spilled again and the file never drained.
   */
  private readBackEvents = 0;
  private readBackBytes = 0;

  private slab = Buffer.allocUnsafe(slabBytes);
  private slabPos = 0;

  private schemaId: number | undefined;
  private closing = false;
  private stopping = false;
  private wakeSender: (() => void) | undefined;
  private readonly senderDone: Promise<void>;
  private flushWaiters: { target: number; resolve: () => void }[] = [];
  private closed: Promise<DecisionLoggerStats> | undefined;
  /** close() has taken the queue over: a send that settles later must not touch it. */
  private detached = false;
  /** The batch last handed to transport.send() and not yet acknowledged: its outcome is unknown. */
  private offered: readonly Encoded[] = [];

  constructor(opts: DecisionLoggerOptions) {
    const parsed = optionsSchema.safeParse(opts);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`Invalid decision logger option ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
    }
    this.log = (opts.log ?? createLogger({ name: 'dlog-sdk', level: 'warn' })).child({ component: 'dlog-sdk' });
    this.onError = opts.onError;
    this.topic = opts.topic ?? 'inference.raw';
    this.artifactTopic = opts.artifactTopic ?? 'registry.artifacts';
    this.policy = opts.buffer?.policy ?? 'drop';
    this.maxEvents = opts.buffer?.maxEvents ?? 100_000;
    this.maxBytes = opts.buffer?.maxBytes ?? 64 * 1024 * 1024;
    this.maxSpillBytes = opts.buffer?.maxSpillBytes ?? 4 * 1024 ** 3;
    this.batchEvents = opts.batch?.maxEvents ?? 5_000;
    this.batchBytes = opts.batch?.maxBytes ?? defaultBatchBytes;
    this.maxEventBytes = effectiveMaxEventBytes(opts.maxEventBytes, opts.batch?.maxBytes);
    this.environment = captureEnvironment(opts.environment);
    this.defaults = {
      service: opts.service,
      sdk: sdkName,
      host: os.hostname(),
      endpoint: opts.endpoint ?? opts.service,
      decisionType: opts.decisionType ?? 'decision',
      tenant: opts.tenant ?? null,
      model: opts.model,
      image: opts.image ?? null,
      config: opts.config ?? null,
      preprocessing: opts.preprocessing ?? null,
      attributes: opts.attributes ?? {},
      environmentDigest: this.environment.digest,
      maxEventBytes: this.maxEventBytes,
    };
    if (opts.transport) this.transport = opts.transport;
    else {
      const common = {
        brokers: opts.brokers!,
        registryUrl: opts.registryUrl!,
        clientId: `dlog-sdk-${opts.service}`.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100),
        log: this.log,
        compression: opts.compression ?? 'none',
        requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
      } as const;
      const kind = opts.kafkaClient ?? 'auto';
      if (kind === 'native' && !loadNativeKafka()) {
        throw new Error(`Invalid decision logger option kafkaClient: 'native' needs node-rdkafka, which does not load (${nativeKafkaLoadError()}); use 'auto' or 'kafkajs'`);
      }
      const native = pickNativeKafka(kind);
      // kafkajs splits a broker at its first ':' (connectionPoolBuilder.js): `[::1]:9092` would
      // become host '[' and never connect.
      const ipv6 = opts.brokers!.find((b) => b.startsWith('['));
      if (!native && ipv6 !== undefined) {
        throw new Error(`Invalid decision logger option brokers: ${ipv6} is an IPv6 address, which kafkajs cannot connect to; install node-rdkafka (kafkaClient 'auto' or 'native' then uses it), or name the broker by a host name`);
      }
      this.transport = native ? nativeTransport({ ...common, native }) : kafkaTransport(common);
    }
    if (this.policy === 'spill') {
      // At most one segment of what was sent stays on disk: a 16th of the bound, within limits.
      const segmentBytes = Math.min(64 * 1024 * 1024, Math.max(256 * 1024, Math.floor(this.maxSpillBytes / 16)));
      // Events left by an earlier process are unread: newer ones go behind them (encodePending).
      this.spill = new SpillFile(opts.buffer!.spillDir!, this.log, { segmentBytes });
    }
    this.senderDone = this.run().catch((err: unknown) => {
      // Never rejects: nothing awaits this before close(), so a rejection would reach the host.
      this.logCaught('error', err, 'decision logger stopped on an unexpected error');
      this.report(new DecisionLoggerError('startup', `Decision logger stopped: ${messageOf(err)}`, 0, undefined, { cause: err }));
    });
  }

  // ---- caller path: nothing here may throw, await or do work proportional to the event ----

  record(decision: Decision): string {
    return this.accept(decision, undefined);
  }

  trace(opts: { traceId?: string } = {}): DecisionTrace {
    // Never throws at the caller: `trace(null)` or a traceId getter that throws gets a new id,
    // and a traceId that is not a string is refused for a new one, reported.
    let given: unknown;
    try {
      given = opts?.traceId;
    } catch {
      given = undefined;
    }
    if (given !== undefined && (typeof given !== 'string' || given === '')) {
      this.report(new DecisionLoggerError('invalid', 'trace(): traceId must be a non-empty string; a new one was made', 0));
      given = undefined;
    }
    const traceId = (given as string | undefined) ?? uuidv7();
    let step = 0;
    let last: string | null = null;
    return {
      traceId,
      record: (s: TraceStep): string => {
        let traj: TrajectoryContext;
        try {
          traj = { traceId, step: step + 1, parentEventId: s.parentEventId === undefined ? last : s.parentEventId, toolName: s.toolName ?? null, toolArgs: s.toolArgs };
        } catch {
          // Not an object, or a getter that throws: refused like any invalid decision, and the
          // step number is not used up.
          return this.refuseNow('trace step is not an object, or reading one of its fields threw');
        }
        step++;
        const id = this.accept(s, traj);
        last = id;
        return id;
      },
    };
  }

  private accept(d: Decision, traj: TrajectoryContext | undefined): string {
    const ts = Date.now();
    const id = uuidv7(ts);
    try {
      if (this.closing) {
        this.counters.dropped++;
        this.report(new DecisionLoggerError('dropped', 'Decision recorded after close()', 1, id));
        return id;
      }
      let waiting = this.pending.length - this.pendingHead;
      if (this.policy === 'drop') {
        if (waiting + this.mem.length - this.memHead >= this.maxEvents) {
          this.counters.dropped++;
          this.reportDrop(id, 'buffer full (policy drop)');
          return id;
        }
      } else if (waiting >= this.maxEvents) {
        // Spill loses nothing, so a caller that records faster than the background can encode
        // pays for the encoding here rather than growing memory: a small slice per call past the
        // bound, so that no single call takes long (all of 100k pending took ~0.9 s). Before the
        // contract is registered too: events then carry a placeholder id until they are sent.
        this.encodePending(inlineSlice);
      }
      this.pending.push({ seq: ++this.seq, id, ts, d, traj });
      this.counters.queued++;
      if (!this.pumpScheduled) {
        this.pumpScheduled = true;
        setImmediate(this.pump);
      }
    } catch (err) {
      // Only reachable on a bug or out-of-memory; the caller must still not see it.
      this.counters.dropped++;
      this.logCaught('error', err, 'record() failed internally; decision dropped');
    }
    return id;
  }

  /** A call refused before it could be queued; never throws. */
  private refuseNow(reason: string): string {
    const id = uuidv7();
    try {
      this.invalid(id, reason);
    } catch (err) {
      this.logCaught('error', err, 'record() failed internally');
    }
    return id;
  }

  /**
   * Logs a caught value and never throws: pino's error serializer reads the value (its message,
   * its fields, its causes), and one the host threw can throw on every read.
   */
  private logCaught(level: 'warn' | 'error', err: unknown, msg: string, fields: Record<string, unknown> = {}): void {
    try {
      this.log[level]({ ...fields, err }, msg);
    } catch {
      try {
        this.log[level]({ ...fields, err: messageOf(err) }, msg);
      } catch {
        // Nothing is left to say it with.
      }
    }
  }

  private dropReportPending = 0;
  private readonly lastReported = new Map<DecisionLoggerErrorKind, number>();
  private readonly unreported = new Map<DecisionLoggerErrorKind, number>();
  private readonly reportTimers = new Map<DecisionLoggerErrorKind, NodeJS.Timeout>();
  private reportDrop(id: string | undefined, why: string): void {
    // One report per burst of drops, not one per event: a full buffer is exactly when the host
    // can least afford a callback per record().
    if (this.dropReportPending++ === 0) {
      setImmediate(() => {
        const n = this.dropReportPending;
        this.dropReportPending = 0;
        this.report(new DecisionLoggerError('dropped', `${n} decision(s) dropped: ${why}`, n, id));
      });
    }
  }

  private report(err: DecisionLoggerError): void {
    if (!this.onError) {
      // Without a callback, losses were silent: dropped, failed and refused decisions are logged,
      // each kind at most once per 10 s with the count since its last line. ('send' and
      // 'startup' problems are logged where they happen; they lose nothing by themselves.)
      if (err.count === 0) return;
      const kind = err.kind;
      const since = (this.unreported.get(kind) ?? 0) + err.count;
      const now = Date.now();
      const last = this.lastReported.get(kind) ?? 0;
      if (now - last < 10_000) {
        this.unreported.set(kind, since);
        // Said when the 10 s are up, not only at the next report (a burst then quiet, or a kill).
        if (!this.reportTimers.has(kind)) {
          const timer = setTimeout(() => {
            this.reportTimers.delete(kind);
            const n = this.unreported.get(kind) ?? 0;
            if (n === 0) return;
            this.unreported.set(kind, 0);
            this.lastReported.set(kind, Date.now());
            this.log.warn({ kind, decisions: n }, 'decisions not delivered since the last such line');
          }, last + 10_000 - now);
          timer.unref();
          this.reportTimers.set(kind, timer);
        }
        return;
      }
      this.lastReported.set(kind, now);
      this.unreported.set(kind, 0);
      this.log.warn({ kind, decisions: since, example: err.message }, 'decisions not delivered (set onError to handle each report; this line repeats at most every 10 s)');
      return;
    }
    try {
      this.onError(err);
    } catch (cbErr) {
      this.logCaught('warn', cbErr, 'onError callback threw');
    }
  }

  // ---- background: encode ----

  private readonly pump = (): void => {
    this.pumpScheduled = false;
    // Run from setImmediate: anything thrown here would be the host's uncaught exception.
    try {
      this.encodePending(pumpSlice);
    } catch (err) {
      this.logCaught('error', err, 'encoding decisions failed internally');
      if (this.pendingHead < this.pending.length && !this.pumpScheduled) {
        this.pumpScheduled = true;
        setImmediate(this.pump);
      }
    }
  };

  private encodePending(slice: number): void {
    const end = Math.min(this.pending.length, this.pendingHead + slice);
    const toSpill: Encoded[] = [];
    let dropped = 0;
    // A turn also ends after ~4 ms of encoding, whatever the count: 2,000 inputs of 200 KB held
    // the host's event loop for 2.3 s. The rest goes in the next turns.
    const started = performance.now();
    // Order is kept: while the spill file holds events not yet read back, newer ones go behind
    // them into the file; once all of it was read back, into memory behind what was read, so the
    // file drains (and is emptied) under steady traffic too.
    const fileFirst = this.spill !== undefined && this.spill.unreadBytes > 0;
    const first = this.pendingHead;
    let i = first;
    for (; i < end; i++) {
      if (i > first && performance.now() - started > sliceBudgetMs) break;
      const p = this.pending[i]!;
      this.pending[i] = undefined as unknown as Pending; // let the decision be collected
      // Taken: should anything below throw, the queue goes on after it (pump's guard).
      this.pendingHead = i + 1;
      const e = this.encode(p);
      if (e === undefined) continue;
      if (fileFirst || toSpill.length > 0) {
        toSpill.push(e);
      } else if (this.mem.length - this.memHead - this.readBackEvents >= this.maxEvents || this.memBytes - this.readBackBytes + e.value.length > this.maxBytes) {
        if (this.policy === 'drop') {
          dropped++;
        } else {
          toSpill.push(e);
        }
      } else {
        this.mem.push(e);
        this.memBytes += e.value.length;
      }
    }
    this.pendingHead = i;
    if (this.pendingHead === this.pending.length) {
      this.pending = [];
      this.pendingHead = 0;
    } else if (!this.pumpScheduled) {
      this.pumpScheduled = true;
      setImmediate(this.pump);
    }
    if (dropped > 0) {
      this.counters.dropped += dropped;
      this.report(new DecisionLoggerError('dropped', `${dropped} decision(s) dropped: buffer bytes full (policy drop)`, dropped));
    }
    if (toSpill.length > 0) this.writeSpill(toSpill);
    this.wakeSender?.();
    this.checkFlushed();
  }

  private writeSpill(all: Encoded[]): void {
    // What fits under maxSpillBytes is written; the newest events past it are dropped, counted.
    let room = this.maxSpillBytes - this.spill!.pendingBytes;
    let fit = 0;
    for (const e of all) {
      room -= spillFrameBytes(e);
      if (room < 0) break;
      fit++;
    }
    const events = fit === all.length ? all : all.slice(0, fit);
    if (fit < all.length) {
      const n = all.length - fit;
      this.counters.dropped += n;
      this.reportDrop(undefined, `the spill file holds buffer.maxSpillBytes (${this.maxSpillBytes} bytes) unsent`);
      if (n > 1) this.dropReportPending += n - 1;
    }
    if (events.length === 0) return;
    try {
      this.spill!.append(events);
      this.counters.spilled += events.length;
    } catch (err) {
      this.counters.failed += events.length;
      this.logCaught('error', err, 'spill write failed; events lost', { count: events.length });
      this.report(new DecisionLoggerError('spill', `Spill write failed, ${events.length} event(s) lost: ${messageOf(err)}`, events.length, undefined, { cause: err }));
    }
  }

  private encode(p: Pending): Encoded | undefined {
    let key: string;
    let record: Record<string, unknown>;
    try {
      const d = p.traj ? { ...p.d, trajectory: p.traj } : p.d;
      record = toInferenceEvent(p.id, p.ts, d, this.defaults);
      key = eventKey(p.id, d);
    } catch (err) {
      this.invalid(p.id, err instanceof InvalidDecisionError ? err.reason : messageOf(err));
      return undefined;
    }
    try {
      // Encode straight into a shared slab after a 5-byte header: no per-event allocation, and
      // the value handed to Kafka is a view of it.
      let start = this.slabPos;
      let end = this.type.encode(record, this.slab, start + 5);
      if (end < 0) {
        const needed = this.slab.length - start - end; // encode() returns minus the missing bytes
        if (needed > this.maxEventBytes) {
          this.invalid(p.id, `oversized: ${needed} bytes encoded, limit ${this.maxEventBytes}`);
          return undefined;
        }
        this.slab = Buffer.allocUnsafe(Math.max(slabBytes, needed));
        start = 0;
        end = this.type.encode(record, this.slab, 5);
        if (end < 0) throw new Error('encoding did not fit a fresh slab');
      }
      if (end - start > this.maxEventBytes) {
        this.invalid(p.id, `oversized: ${end - start} bytes encoded, limit ${this.maxEventBytes}`);
        return undefined;
      }
      frameHeader(this.slab, start, this.schemaId ?? this.placeholderId);
      this.slabPos = end;
      return { seq: p.seq, key, value: this.slab.subarray(start, end) };
    } catch (err) {
      // avsc's message quotes the offending value: the host's data stays out of the report.
      this.invalid(p.id, `cannot be encoded: a field does not match the inference-event contract (${errorName(err)})`);
      return undefined;
    }
  }

  private invalid(eventId: string, reason: string): void {
    this.counters.invalid++;
    this.report(new DecisionLoggerError('invalid', `Decision ${eventId} refused: ${reason}`, 1, eventId));
  }

  // ---- background: start, then send one batch at a time ----

  private async run(): Promise<void> {
    let attempt = 0;
    // The contract first: nothing can be encoded without its schema id.
    while (this.schemaId === undefined && !this.stopping) {
      try {
        this.schemaId = await this.transport.register(valueSubject(this.topic), loadSchema('inference-event'));
      } catch (err) {
        await this.failedAttempt('startup', `Registering the inference-event contract failed`, err, attempt++);
      }
    }
    // Past each await below, a close() may have begun: once it stops the sender (`stopping`), the
    // loop sends nothing more, since close() keeps what is left for the next process, which may
    // already be sending it (the same events went out twice, 1.6 s after close() had returned).
    if (this.stopping) return;
    this.pump();
    // The snapshot goes on its own schedule: a missing artifact topic must not hold up decisions.
    void this.publishEnvironmentUntilDone();
    attempt = 0;
    // After a new producer session, the batch in hand may already be (partly) in the topic from
    // the old one, and the broker cannot tell: check before resending (see `withoutWritten`). The
    // flag stays until a send succeeds: a failed send of the checked rest may have landed too.
    let firstTryAt = 0;
    let checkBeforeResend = false;
    let checkFailures = 0;
    let readFailures = 0;
    // Fixed until acknowledged: a retry must resend the same messages (the transports rely on
    // it), not take in what arrived during the backoff.
    let batch: Encoded[] = [];
    while (!this.stopping) {
      if (batch.length === 0) {
        try {
          batch = this.nextBatch();
          readFailures = 0;
        } catch (err) {
          // What was read of the spill file is forgotten and read again after the backoff.
          this.spill?.rewind();
          await this.failedAttempt('spill', 'Reading the spill file back failed; retrying', err, readFailures++);
          continue;
        }
        if (batch.length === 0) {
          if (this.closing) break;
          await new Promise<void>((resolve) => (this.wakeSender = resolve));
          this.wakeSender = undefined;
          continue;
        }
        attempt = 0;
        firstTryAt = Date.now();
        const since = this.unknownSince(batch);
        if (since !== undefined) {
          // Handed to a producer by an earlier process that never heard back.
          checkBeforeResend = true;
          checkFailures = 0;
          firstTryAt = Math.min(firstTryAt, since);
        }
      }
      const t0 = performance.now();
      try {
        let toSend = batch;
        if (checkBeforeResend) {
          toSend = await this.withoutWritten(batch, firstTryAt, checkFailures);
          if (this.stopping) return;
        }
        if (attempt === 0) this.flagSpilledBeforeSending(batch);
        this.offered = batch;
        if (toSend.length > 0) await this.transport.send(this.topic, toSend);
      } catch (err) {
        // A failure close() caused (disconnecting) is not news: close() keeps the batch.
        if (this.stopping) return;
        this.counters.sendErrors++;
        if (err instanceof WrittenCheckError) checkFailures++;
        await this.failedAttempt('send', `Sending ${batch.length} event(s) failed; the same batch is retried`, err, attempt++);
        if (this.stopping) return;
        // Only a broker that lost our producer state needs a new session; any other failure is
        // retried on the same one, because the broker drops a resent batch only for the session
        // that first wrote it (a new session after an outage would write it twice).
        if (lostProducerState(err)) {
          await this.transport.reset().catch(() => undefined);
          checkBeforeResend = true;
        } else if (err instanceof WrittenCheckError) {
          checkBeforeResend = true;
        }
        continue;
      }
      if (this.detached) return;
      checkBeforeResend = false;
      checkFailures = 0;
      if (attempt > 0) this.log.info({ attempts: attempt }, 'sending recovered');
      attempt = 0;
      this.latencies[this.latencyCount++ % latencyRing] = performance.now() - t0;
      this.offered = [];
      this.acknowledge(batch);
      batch = [];
    }
  }

  /**
   * Events read back from the spill file stay in it until acknowledged, so a process killed while
   * sending them (SIGKILL, a crash, a host going down) leaves them behind, possibly already in the
   * topic. They are flagged of unknown outcome in the file before their first send (one byte a
   * frame), so the next process reads the topic back before sending them again; close() flags
   * them too, but a killed process never gets there. Flagging costs disk writes only on the spill
   * path, when the broker has been out of reach. A failure to flag is logged, and the send goes
   * on (at worst, as before, those events may arrive twice).
   */
  private flagSpilledBeforeSending(batch: readonly Encoded[]): void {
    if (!this.spill || batch[0]?.spillBytes === undefined || batch.every((e) => e.unknown)) return;
    try {
      // The batch is the oldest unacknowledged frames of the file (all of it read back from
      // there), so its bytes start there.
      this.spill.markUnknown(batch.reduce((n, e) => n + (e.spillBytes ?? 0), 0));
    } catch (err) {
      this.logCaught('warn', err, 'flagging spilled events before sending them failed; if this process is killed meanwhile, the next may send some twice');
    }
  }

  /** When the oldest event of unknown outcome in `batch` was made (it was sent after that), if any. */
  private unknownSince(batch: readonly Encoded[]): number | undefined {
    let since: number | undefined;
    for (const e of batch) {
      if (!e.unknown) continue;
      const id = leadingString(e.value);
      const t = id === undefined ? Number.NaN : uuidv7Time(id);
      // An id that is not a UUIDv7 gives no bound: read back from the beginning of the topic.
      since = Math.min(since ?? Infinity, Number.isFinite(t) ? t : 0);
    }
    return since;
  }

  private async failedAttempt(kind: DecisionLoggerErrorKind, what: string, err: unknown, attempt: number): Promise<void> {
    if (attempt === 0) this.logCaught('warn', err, what);
    this.report(new DecisionLoggerError(kind, `${what}: ${messageOf(err)}`, 0, undefined, { cause: err }));
    const delay = backoffDelay(attempt, 100, 5_000);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delay);
      this.wakeSender = () => {
        if (this.stopping) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
    this.wakeSender = undefined;
  }

  private envPublished = false;

  private async publishEnvironmentUntilDone(): Promise<void> {
    for (let attempt = 0; !this.envPublished && !this.stopping; attempt++) {
      try {
        await this.publishEnvironment();
      } catch (err) {
        if (this.stopping) return;
        if (attempt === 0) this.logCaught('warn', err, 'registering the environment snapshot failed; retrying');
        this.report(new DecisionLoggerError('send', `Registering the environment snapshot failed: ${messageOf(err)}`, 0, undefined, { cause: err }));
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoffDelay(attempt, 500, 30_000));
          this.wakeEnv = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  }

  private wakeEnv: (() => void) | undefined;

  /** The snapshot's message, made once: a retry resends the same bytes (and joins them if still in flight). */
  private envMessage: OutMessage | undefined;

  private async publishEnvironment(): Promise<void> {
    this.envMessage ??= await this.environmentMessage();
    // Closed while registering (the registry slow): nothing is sent after close().
    if (this.stopping) return;
    await this.transport.send(this.artifactTopic, [this.envMessage]);
    this.envPublished = true;
  }

  private async environmentMessage(): Promise<OutMessage> {
    const schema = loadSchema('artifact-event');
    const id = await this.transport.register(valueSubject(this.artifactTopic), schema);
    const env = this.environment;
    const hex = env.digest.slice('sha256:'.length);
    const body = avro.Type.forSchema(schema).toBuffer({
      event_id: uuidv7(),
      kind: 'environment',
      ref: env.ref,
      name: 'runtime-environment',
      version: hex.slice(0, 12),
      digest: env.digest,
      uri: null,
      metadata: environmentMetadata(env),
      parents: [],
      registered_at: Date.now(),
      registered_by: `${this.defaults.service} via ${sdkName}`,
    });
    const value = Buffer.allocUnsafe(5 + body.length);
    frameHeader(value, 0, id);
    body.copy(value, 5);
    return { key: env.ref, value };
  }

  /**
   * The events of `batch` not yet in the topic. A batch whose outcome was unknown when the
   * producer session had to be replaced may have been written by the old session; resending it
   * under the new one would write it twice. The topic is read back from shortly before the batch
   * was first sent. A producer that may not read the topic (write-only ACLs) cannot check: after
   * a few failed checks the batch is resent whole, with a warning.
   */
  private async withoutWritten(batch: Encoded[], firstTryAt: number, failures: number): Promise<Encoded[]> {
    if (!this.transport.written) return batch;
    const idOf = batch.map((e) => leadingString(e.value));
    const ids = new Set<string>();
    for (const id of idOf) if (id !== undefined) ids.add(id);
    let present: Set<string>;
    try {
      // Producer clocks stamp the records: a margin covers a little skew.
      present = await this.transport.written(this.topic, firstTryAt - 10_000, ids);
    } catch (err) {
      if (failures >= 2) {
        this.logCaught('warn', err, 'cannot read the topic back to check a batch of unknown outcome; resending it whole (some events may arrive twice)');
        return batch;
      }
      throw new WrittenCheckError(`Checking which of ${batch.length} event(s) the broker already has failed: ${messageOf(err)}`, { cause: err });
    }
    if (present.size > 0) this.log.info({ alreadyWritten: present.size, batch: batch.length }, 'part of a batch of unknown outcome was already written; sending only the rest');
    return present.size === 0 ? batch : batch.filter((_, i) => !present.has(idOf[i] ?? ''));
  }

  /** The oldest events, up to the batch limits; they stay queued until acknowledged. */
  private nextBatch(): Encoded[] {
    if (this.memHead === this.mem.length && this.spill && this.spill.unreadBytes > 0) {
      this.mem = this.spill.readNext(this.batchEvents, this.batchBytes);
      this.memHead = 0;
      this.memBytes = this.mem.reduce((n, e) => n + e.value.length, 0);
      this.readBackEvents = this.mem.length;
      this.readBackBytes = this.memBytes;
    }
    const batch: Encoded[] = [];
    let bytes = 0;
    for (let i = this.memHead; i < this.mem.length && batch.length < this.batchEvents; i++) {
      const e = this.mem[i]!;
      const size = e.value.length + e.key.length + 32;
      if (batch.length > 0 && bytes + size > this.batchBytes) break;
      // Encoded before the contract was registered: stamped now (the sender runs only after).
      // Another contract's placeholder is left as it is: the gate dead-letters it, bytes kept.
      if (this.schemaId !== undefined && e.value.readInt32BE(1) === this.placeholderId) e.value.writeInt32BE(this.schemaId, 1);
      batch.push(e);
      bytes += size;
    }
    return batch;
  }

  private acknowledge(batch: Encoded[]): void {
    let spillBytes = 0;
    for (const e of batch) {
      this.memBytes -= e.value.length;
      if (e.spillBytes !== undefined) {
        spillBytes += e.spillBytes;
        this.readBackEvents--;
        this.readBackBytes -= e.value.length;
      }
    }
    this.memHead += batch.length;
    if (this.memHead === this.mem.length) {
      this.mem = [];
      this.memHead = 0;
    } else if (this.memHead > 65_536) {
      this.mem = this.mem.slice(this.memHead);
      this.memHead = 0;
    }
    this.counters.sent += batch.length;
    if (spillBytes > 0) {
      try {
        this.spill!.ack(spillBytes);
      } catch (err) {
        this.logCaught('error', err, 'recording spill progress failed; a restart may resend some events');
      }
    }
    this.checkFlushed();
  }

  // ---- flush and close ----

  /** Seq of the oldest event not yet settled; Infinity when none. Events are settled in order. */
  private oldestUnsettled(): number {
    if (this.memHead < this.mem.length) return this.mem[this.memHead]!.seq;
    if (this.spill && this.spill.pendingBytes > 0) return -1;
    if (this.pendingHead < this.pending.length) return this.pending[this.pendingHead]!.seq;
    return Infinity;
  }

  private checkFlushed(): void {
    if (this.flushWaiters.length === 0) return;
    const oldest = this.oldestUnsettled();
    this.flushWaiters = this.flushWaiters.filter((w) => {
      if (oldest <= w.target) return true;
      w.resolve();
      return false;
    });
  }

  private unsent(): number {
    return this.pending.length - this.pendingHead + this.mem.length - this.memHead;
  }

  async flush(timeoutMs = 10_000): Promise<FlushResult> {
    const target = this.seq;
    if (this.oldestUnsettled() > target) return { ok: true, unsent: 0 };
    const bound = boundMs(timeoutMs);
    let timer: NodeJS.Timeout | undefined;
    const ok = await new Promise<boolean>((resolve) => {
      const waiter = { target, resolve: () => resolve(true) };
      this.flushWaiters.push(waiter);
      if (bound === Infinity) return;
      timer = setTimeout(() => {
        this.flushWaiters = this.flushWaiters.filter((w) => w !== waiter);
        resolve(false);
      }, bound);
    });
    clearTimeout(timer);
    return { ok, unsent: ok ? 0 : this.unsent() + (this.spill?.pendingBytes ? 1 : 0) };
  }

  close(timeoutMs = 10_000): Promise<DecisionLoggerStats> {
    this.closed ??= this.shutdown(timeoutMs).catch((err: unknown) => {
      this.logCaught('error', err, 'decision logger close failed');
      return this.stats();
    });
    return this.closed;
  }

  /** In order: stop accepting, drain within the bound, stop sending, keep or count what is left, disconnect. */
  private async shutdown(timeoutMs: number): Promise<DecisionLoggerStats> {
    const deadline = Date.now() + boundMs(timeoutMs);
    const left = (): number => Math.max(0, deadline - Date.now());
    this.closing = true;
    // Encode everything accepted, so it is either sent or spilled below.
    while (this.pendingHead < this.pending.length) this.pump();
    this.wakeSender?.();
    await this.flush(left());

    this.stopping = true;
    this.wakeSender?.();
    this.wakeEnv?.();
    // A send still in flight settles within the request timeout; disconnecting makes it fail
    // sooner. All of it within the caller's bound: past it, the queue is taken over below and a
    // send that settles later is ignored by the loop (`detached`), its batch kept as of unknown
    // outcome.
    await within(this.senderDone, left());
    await within(
      this.transport.disconnect().catch((err: unknown) => this.logCaught('warn', err, 'disconnect failed')),
      left(),
    );
    await within(this.senderDone, left());
    this.detached = true;

    // Landed after all, though their send had given up (see Transport.delivered): a leading run
    // is acknowledged in order (spill progress included), later ones only kept from being
    // spilled again. One read back from the spill file behind an undelivered one stays in it.
    const delivered = this.transport.delivered?.bind(this.transport);
    if (delivered) {
      let k = this.memHead;
      while (k < this.mem.length && delivered(this.mem[k]!.value)) k++;
      if (k > this.memHead) this.acknowledge(this.mem.slice(this.memHead, k));
    }
    // What was handed to the producer and not acknowledged may still land: the next process
    // checks the topic for it before sending it again.
    const offered = new Set(this.offered);
    const memoryOnly = (events: readonly Encoded[]): Encoded[] => {
      let kept = events.filter((e) => e.spillBytes === undefined).map((e) => (offered.has(e) ? { ...e, unknown: true } : e));
      if (delivered) {
        const notLanded = kept.filter((e) => !delivered(e.value));
        this.counters.sent += kept.length - notLanded.length;
        kept = notLanded;
      }
      return kept;
    };
    // What only memory holds was either there before anything was spilled (older than all of the
    // file) or taken in once all of the file had been read back (behind what was read, ahead of
    // what was spilled since).
    const rest = this.mem.slice(this.memHead);
    const firstRead = rest.findIndex((e) => e.spillBytes !== undefined);
    const older = memoryOnly(firstRead < 0 ? rest : rest.slice(0, firstRead));
    const behind = firstRead < 0 ? [] : memoryOnly(rest.slice(firstRead));
    const inMemory = [...older, ...behind];
    let offeredSpillBytes = 0;
    for (let k = this.memHead; k < this.mem.length && offered.has(this.mem[k]!); k++) offeredSpillBytes += this.mem[k]!.spillBytes ?? 0;
    const notEncoded = this.pending.length - this.pendingHead;
    if (this.spill) {
      // Events read back from the spill file are still in it; what only memory holds goes where
      // it belongs in the file's order.
      try {
        if (offeredSpillBytes > 0) this.spill.markUnknown(offeredSpillBytes);
      } catch (err) {
        this.logCaught('error', err, 'flagging spilled events of unknown outcome failed; the next process may send some twice');
      }
      try {
        this.spill.keep(older, behind);
        this.counters.spilled += inMemory.length;
      } catch (err) {
        this.counters.failed += inMemory.length;
        this.report(new DecisionLoggerError('spill', `Spill write at close failed, ${inMemory.length} event(s) lost`, inMemory.length, undefined, { cause: err }));
      }
      this.spill.close();
    } else if (inMemory.length > 0) {
      this.counters.failed += inMemory.length;
      this.report(new DecisionLoggerError('failed', `${inMemory.length} event(s) not sent before close()`, inMemory.length));
    }
    if (notEncoded > 0) {
      this.counters.failed += notEncoded;
      this.report(new DecisionLoggerError('failed', `${notEncoded} event(s) never encoded (schema registry unreachable)`, notEncoded));
    }
    this.mem = [];
    this.memHead = 0;
    this.memBytes = 0;
    this.pending = [];
    this.pendingHead = 0;
    // What the 10-second limit held back is said before the logger goes.
    for (const t of this.reportTimers.values()) clearTimeout(t);
    this.reportTimers.clear();
    for (const [kind, n] of this.unreported) if (n > 0) this.log.warn({ kind, decisions: n }, 'decisions not delivered since the last such line');
    this.unreported.clear();
    return this.stats();
  }

  stats(): DecisionLoggerStats {
    const n = Math.min(this.latencyCount, latencyRing);
    const sorted = Array.from(this.latencies.subarray(0, n)).sort((a, b) => a - b);
    const at = (q: number) => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(q * n))]!);
    return {
      ...this.counters,
      buffered: {
        pending: this.pending.length - this.pendingHead,
        events: this.mem.length - this.memHead,
        bytes: this.memBytes,
        spillBytes: this.spill?.pendingBytes ?? 0,
      },
      sendLatencyMs: { count: this.latencyCount, p50: at(0.5), p99: at(0.99), max: n === 0 ? 0 : sorted[n - 1]! },
      environmentDigest: this.environment.digest,
      ready: { contract: this.schemaId !== undefined, environment: this.envPublished },
    };
  }
}

/** A timeout as setTimeout can take it: Infinity stays unbounded, the rest is clamped. */
function boundMs(ms: number): number {
  if (ms === Infinity) return Infinity;
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), maxTimerMs) : 0;
}

/** Waits for `p`, at most `ms` (Infinity: no bound). Never rejects. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = ms === Infinity ? [] : [new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.min(ms, maxTimerMs))))];
  try {
    await Promise.race([p.catch(() => undefined), ...bound]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A decision logger for one process. Creating it validates the options (and throws on bad ones:
 * that is start-up, not inference) and starts the background work: registering the contracts,
 * publishing the environment snapshot, then batching events to Kafka.
 */
export function createDecisionLogger(opts: DecisionLoggerOptions): DecisionLogger {
  return new DecisionLoggerImpl(opts);
}
