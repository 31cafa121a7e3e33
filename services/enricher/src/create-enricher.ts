import type { Kafka, KafkaMessage, Message } from 'kafkajs';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import { loadArtifactState, type RegistryFollower } from '@dlog/artifacts';
import {
  avroType,
  createRegistry,
  AvroDecoder,
  encodeFramed,
  loadSchema,
  registerAvro,
  registryFetcher,
  valueSubject,
  type DecisionRecordRecord,
} from '@dlog/contracts';
import { createTransactionalProcessor, nativeClientFor, deadLetterMessage, ensurePipelineTopics, prefixedTopics, MAX_RECORD_BYTES, recordBytes, type BatchContext, type TransactionalProcessor } from '@dlog/kafka';
import { enrich } from './enrich.js';
import { EnrichmentSplicer } from './splice.js';

export const defaultEnricherTopics = {
  input: 'decisions.v1',
  output: 'decisions.enriched.v1',
  registry: 'registry.artifacts',
  deadLetters: 'decisions.dlq',
};

export interface EnricherStats {
  enriched: number;
  unresolved: number;
  digestMismatches: number;
  deadLettered: number;
}

export interface Enricher {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly stats: EnricherStats;
}

export async function createEnricher(opts: {
  kafka: Kafka;
  config: Config;
  log: Logger;
  topics?: Partial<typeof defaultEnricherTopics>;
  groupId?: string;
}): Promise<Enricher> {
  const { config, log, kafka } = opts;
  const p = config.topicPrefix;
  const topics = prefixedTopics(defaultEnricherTopics, p, opts.topics);
  await ensurePipelineTopics(kafka, p, Object.values(defaultEnricherTopics));
  const url = config.schemaRegistryUrl;
  const outputId = await registerAvro(createRegistry(url), url, valueSubject(topics.output), loadSchema('enriched-decision'));
  const outputType = avroType('enriched-decision');
  const inputType = avroType('decision-record');
  const decoder = new AvroDecoder<DecisionRecordRecord>(inputType, registryFetcher(url));
  const stats: EnricherStats = { enriched: 0, unresolved: 0, digestMismatches: 0, deadLettered: 0 };
  const splicer = EnrichmentSplicer.forContracts();
  if (typeof splicer === 'string') log.warn({ reason: splicer }, 'enriching by decode and re-encode: the contracts do not allow splicing');
  let registry: RegistryFollower | undefined;
  /**
   * An enriched record Kafka would refuse fails the whole transaction, again at every retry: the
   * decision goes to the dead-letter topic instead (without its bytes if those are too large too).
   */
  const tooLarge = (m: KafkaMessage, value: Buffer, ctx: BatchContext, now: number, dead: Message[]): boolean => {
    const bytes = recordBytes({ key: m.key, value });
    if (bytes <= MAX_RECORD_BYTES) return false;
    const message = `the enriched record would be ${bytes} bytes; a Kafka record holds at most ${MAX_RECORD_BYTES}`;
    dead.push(deadLetterMessage(m, ctx, { reason: 'record_too_large', message, step: 'enrich' }, 'enricher', now));
    stats.deadLettered++;
    return true;
  };
  let processor: TransactionalProcessor | undefined;

  return {
    stats,
    async start() {
      registry = await loadArtifactState({ kafka, topic: topics.registry, schemaRegistryUrl: url, log, follow: true });
      log.info({ artifacts: registry.state.size }, 'artifact registry loaded');
      const state = registry.state;
      processor = createTransactionalProcessor({
        kafka,
        log,
        groupId: opts.groupId ?? `${p}dlog-enricher`,
        topics: [topics.input],
        transactionalId: `${p}dlog-enricher-${config.instanceId}`,
        native: nativeClientFor(config.kafkaClient, config.kafkaBrokers, `${config.kafkaClientId}-enricher`, log),
        // Stateless per batch: on librdkafka, one transaction then covers a whole poll.
        concurrency: 2,
        process: async (messages, ctx) => {
          await decoder.prepare(messages.map((m) => m.value));
          const now = Date.now();
          const out: Message[] = [];
          const dead: Message[] = [];
          for (const m of messages) {
            if (typeof splicer !== 'string' && decoder.writtenAsReader(m.value)) {
              // The contract's own schema: the decision body goes through as it is.
              const r = splicer.splice(m.value!.subarray(5), outputId, state, now);
              if ('error' in r) {
                dead.push(deadLetterMessage(m, ctx, { reason: 'invalid_avro', message: r.error, step: 'enrich' }, 'enricher', now));
                stats.deadLettered++;
                continue;
              }
              if (tooLarge(m, r.value, ctx, now, dead)) continue;
              if (r.unresolved) stats.unresolved++;
              if (r.mismatch) stats.digestMismatches++;
              stats.enriched++;
              out.push({ key: m.key, value: r.value });
              continue;
            }
            const decoded = decoder.decode(m.value);
            if (!decoded.ok) {
              dead.push(deadLetterMessage(m, ctx, { reason: decoded.reason, message: decoded.message, step: 'enrich' }, 'enricher', now));
              stats.deadLettered++;
              continue;
            }
            const e = enrich(decoded.value, state, now);
            const value = encodeFramed(outputType, outputId, e);
            if (tooLarge(m, value, ctx, now, dead)) continue;
            if (e.unresolved_refs.length > 0) stats.unresolved++;
            if (e.digest_mismatches.length > 0) stats.digestMismatches++;
            stats.enriched++;
            out.push({ key: m.key, value });
          }
          return [
            { topic: topics.output, messages: out },
            { topic: topics.deadLetters, messages: dead },
          ];
        },
      });
      await processor.start();
    },
    async stop() {
      await processor?.stop();
      await registry?.stop();
    },
  };
}
