import path from 'node:path';
import type { Kafka, KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import {
  avroType,
  createRegistry,
  AvroDecoder,
  loadSchema,
  registerAvro,
  registryFetcher,
  valueSubject,
} from '@dlog/contracts';
import {
  createTransactionalProcessor, nativeClientFor,
  ensureWorkerTopics,
  prefixedTopics,
  type BatchContext,
  type OutputRecord,
  type TransactionalProcessor,
} from '@dlog/kafka';
import { processBatch, type GateDeps, type GateStats, type GateTopics } from './gate.js';
import { GateThreads } from './gate-threads.js';
import { warmUp } from './warm-up.js';
import { KeyError, localKeyRing, parseKeyRing, type KeyRing } from './keys.js';
import { parsePolicy, readPolicyText } from './policy.js';
import { createProtector } from './protect.js';

export const defaultGateTopics: GateTopics & { input: string } = {
  input: 'inference.raw',
  decisions: 'decisions.v1',
  counts: 'decision.counts.v1',
  deadLetters: 'inference.dlq',
};

export interface GateOptions {
  kafka: Kafka;
  config: Config;
  log: Logger;
  topics?: Partial<typeof defaultGateTopics>;
  groupId?: string;
}

export interface Gate {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly stats: GateStats;
  /** Input events whose outputs and offsets are committed (stats count them when processed). */
  readonly committed: number;
  readonly policyId: string;
}

function keyRing(config: Config, log: Logger, announce = true): KeyRing {
  return parseKeyRing(keySpec(config, log, announce));
}

/** The key ring as configured (DLOG_PII_KEYS), or this machine's local key. */
function keySpec(config: Config, log: Logger, announce = true): string {
  if (config.piiKeys) return config.piiKeys;
  // Against a ClickHouse server the gate is a deployment, perhaps of several replicas: each would
  // make its own local key, and their tokens for one customer would never join.
  if (config.clickhouseUrl) {
    throw new KeyError('DLOG_PII_KEYS (or DLOG_PII_KEYS_FILE) must be set when CLICKHOUSE_URL is: a local key is for one machine\'s development pipeline, and replicas would each make their own, so their tokens would not join');
  }
  const file = path.resolve(config.clickhouseDataDir, '..', 'pii-keys');
  const { ring, created, spec } = localKeyRing(file);
  if (announce) log.warn({ file, keyId: ring.active.id, created }, 'no DLOG_PII_KEYS configured: using a local HMAC key (set DLOG_PII_KEYS_FILE in production)');
  return spec;
}

export interface GateWiring {
  /** With the key ring the gate started with in piiKeys (see createGate). */
  config: Config;
  /** The policy file's text as read at start (see createGate). */
  policyText: string;
  topics: GateTopics;
  decisionId: number;
  countsId: number;
}

/** Everything `processBatch` needs; built the same way on the main thread and in gate threads. */
export function gateDeps(w: GateWiring, log: Logger): GateDeps & { schemas: AvroDecoder<unknown> } {
  const policy = parsePolicy(w.policyText, w.config.policyFile);
  const protector = createProtector(policy.doc.pii, keyRing(w.config, log, false));
  const inputType = avroType('inference-event');
  return {
    policy,
    protector,
    inputType,
    schemas: new AvroDecoder<unknown>(inputType, registryFetcher(w.config.schemaRegistryUrl)),
    decisionType: { type: avroType('decision-record'), id: w.decisionId },
    countsType: { type: avroType('decision-counts'), id: w.countsId },
    topics: w.topics,
  };
}

/**
 * Wires the gate: policy and keys are loaded (and refused) before anything connects, output
 * contracts are registered, then batches flow through `processBatch` inside Kafka transactions.
 * With DLOG_GATE_THREADS > 0 the batches are processed in worker threads while the main thread
 * fetches, produces and commits; several partitions' batches are in flight so both keep busy.
 */
export async function createGate(opts: GateOptions): Promise<Gate> {
  const { config, log } = opts;
  const p = config.topicPrefix;
  const topics = prefixedTopics(defaultGateTopics, p, opts.topics);
  // Policy and keys are read and checked here, before anything connects, and handed to every
  // thread as read: a thread started later (replacing one that crashed or hung) re-read the file,
  // so one process could run a policy edited on disk since start, beside the old one, or stop
  // when the edit was invalid; and it could make itself a new local key were the file gone.
  const policyText = readPolicyText(config.policyFile);
  const policy = parsePolicy(policyText, config.policyFile);
  const piiKeys = keySpec(config, log);
  await ensureWorkerTopics(opts.kafka, defaultGateTopics, topics);
  const registry = createRegistry(config.schemaRegistryUrl);
  const url = config.schemaRegistryUrl;
  const [decisionId, countsId] = await Promise.all([
    registerAvro(registry, url, valueSubject(topics.decisions), loadSchema('decision-record')),
    registerAvro(registry, url, valueSubject(topics.counts), loadSchema('decision-counts')),
  ]);
  // The input contract is registered too, so producers in any language find it by subject.
  await registerAvro(registry, url, valueSubject(topics.input), loadSchema('inference-event'));
  const wiring: GateWiring = { config: { ...config, piiKeys }, policyText, topics: { decisions: topics.decisions, counts: topics.counts, deadLetters: topics.deadLetters }, decisionId, countsId };
  const stats: GateStats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} };
  log.info({ policy: policy.id, topics, threads: config.gateThreads }, 'gate configured');

  let process: (messages: KafkaMessage[], ctx: BatchContext) => Promise<OutputRecord[]>;
  let threads: GateThreads | undefined;
  if (config.gateThreads > 0) {
    threads = new GateThreads(config.gateThreads, wiring, stats, log);
    try {
      await threads.ready();
    } catch (err) {
      await threads.close();
      throw err;
    }
    process = (messages, ctx) => threads!.process(messages, ctx);
  } else {
    const deps = gateDeps(wiring, log);
    await warmUp(deps);
    process = async (messages, ctx) => {
      await deps.schemas.prepare(messages.map((m) => m.value));
      return processBatch(messages, ctx, deps, stats);
    };
  }

  let processor: TransactionalProcessor | undefined;
  let committed = 0;
  return {
    stats,
    get committed() {
      return committed;
    },
    policyId: policy.id,
    async start() {
      processor = createTransactionalProcessor({
        kafka: opts.kafka,
        log,
        groupId: opts.groupId ?? `${p}dlog-gate`,
        topics: [topics.input],
        transactionalId: `${p}dlog-gate-${config.instanceId}`,
        native: nativeClientFor(config.kafkaClient, config.kafkaBrokers, `${config.kafkaClientId}-gate`, log),
        // Threaded: one batch per thread being processed plus one committing keeps both busy.
        concurrency: threads ? config.gateThreads + 1 : 1,
        process,
        onCommitted: (info) => {
          committed += info.count;
          log.debug(info, 'batch committed');
        },
      });
      await processor.start();
    },
    async stop() {
      await processor?.stop();
      await threads?.close();
    },
  };
}
