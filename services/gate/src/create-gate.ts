import path from 'node:path';
import type { Kafka } from 'kafkajs';
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
import { createTransactionalProcessor, ensurePipelineTopics, prefixedTopics, type TransactionalProcessor } from '@dlog/kafka';
import { processBatch, type GateStats, type GateTopics } from './gate.js';
import { localKeyRing, parseKeyRing, type KeyRing } from './keys.js';
import { loadPolicy } from './policy.js';
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
  readonly policyId: string;
}

function keyRing(config: Config, log: Logger): KeyRing {
  if (config.piiKeys) return parseKeyRing(config.piiKeys);
  const file = path.resolve(config.clickhouseDataDir, '..', 'pii-keys');
  const { ring, created } = localKeyRing(file);
  log.warn({ file, keyId: ring.active.id, created }, 'no DLOG_PII_KEYS configured: using a local HMAC key (set DLOG_PII_KEYS_FILE in production)');
  return ring;
}

/**
 * Wires the gate: policy and keys are loaded (and refused) before anything connects, output
 * contracts are registered, then batches flow through `processBatch` inside Kafka transactions.
 */
export async function createGate(opts: GateOptions): Promise<Gate> {
  const { config, log } = opts;
  const p = config.topicPrefix;
  const topics = prefixedTopics(defaultGateTopics, p, opts.topics);
  const policy = loadPolicy(config.policyFile);
  const protector = createProtector(policy.doc.pii, keyRing(config, log));
  await ensurePipelineTopics(opts.kafka, p, Object.values(defaultGateTopics));
  const registry = createRegistry(config.schemaRegistryUrl);
  const url = config.schemaRegistryUrl;
  const [decisionId, countsId] = await Promise.all([
    registerAvro(registry, url, valueSubject(topics.decisions), loadSchema('decision-record')),
    registerAvro(registry, url, valueSubject(topics.counts), loadSchema('decision-counts')),
  ]);
  // The input contract is registered too, so producers in any language find it by subject.
  await registerAvro(registry, url, valueSubject(topics.input), loadSchema('inference-event'));
  const inputType = avroType('inference-event');
  const schemas = new AvroDecoder<unknown>(inputType, registryFetcher(url));
  const deps = {
    policy,
    protector,
    inputType,
    schemas,
    decisionType: { type: avroType('decision-record'), id: decisionId },
    countsType: { type: avroType('decision-counts'), id: countsId },
    topics,
  };
  const stats: GateStats = { kept: 0, dropped: 0, deadLettered: 0, byReason: {} };
  log.info({ policy: policy.id, topics }, 'gate configured');

  let processor: TransactionalProcessor | undefined;
  return {
    stats,
    policyId: policy.id,
    async start() {
      processor = createTransactionalProcessor({
        kafka: opts.kafka,
        log,
        groupId: opts.groupId ?? `${p}dlog-gate`,
        topics: [topics.input],
        transactionalId: `${p}dlog-gate-${config.instanceId}`,
        process: async (messages, ctx) => {
          await schemas.prepare(messages.map((m) => m.value));
          return processBatch(messages, ctx, deps, stats);
        },
        onCommitted: (info) => log.debug(info, 'batch committed'),
      });
      await processor.start();
    },
    async stop() {
      await processor?.stop();
    },
  };
}
