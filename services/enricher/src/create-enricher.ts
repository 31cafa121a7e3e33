import type { Kafka, KafkaMessage, Message } from 'kafkajs';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import { loadArtifactState, MAX_LINEAGE_POINTERS, type RegistryFollower } from '@dlog/artifacts';
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
import { MAX_LINEAGE_BYTES, resolveEnrichment } from './enrich.js';
import { fitLineage } from './fit-lineage.js';
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
  /** Decisions with a ref in `digest_mismatches`: another digest, or another kind, than registered. */
  digestMismatches: number;
  /** Of those, decisions naming an artifact in a role its registered kind does not fill. */
  kindMismatches: number;
  /** Decisions whose record carries only the nearest part of their lineage (its limits). */
  lineageCut: number;
  deadLettered: number;
  /** Registrations the registry follower could not read and skipped (see its log). */
  readonly registrationsSkipped: number;
}

/** At most one warning a minute of lineage cut: a model with a wide lineage cuts every decision. */
const CUT_WARNING_INTERVAL_MS = 60_000;

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
  let registry: RegistryFollower | undefined;
  const stats: EnricherStats = {
    enriched: 0,
    unresolved: 0,
    digestMismatches: 0,
    kindMismatches: 0,
    lineageCut: 0,
    deadLettered: 0,
    get registrationsSkipped() {
      return registry?.stats.skipped ?? 0;
    },
  };
  const splicer = EnrichmentSplicer.forContracts();
  if (typeof splicer === 'string') log.warn({ reason: splicer }, 'enriching by decode and re-encode: the contracts do not allow splicing');
  /** Bytes an enriched record is over what a Kafka record holds; 0 or less when it fits. */
  const overBy = (m: KafkaMessage, value: Buffer): number => recordBytes({ key: m.key, value }) - MAX_RECORD_BYTES;
  let lastCutWarning = -Infinity;
  /**
   * The record schema has no field saying its lineage is cut (adding one is a contract change),
   * so it is counted and logged; `dlog lineage` shows the whole of it.
   */
  // Fields, not a spread of the splice's result: this runs for every decision.
  const counted = (f: { unresolved: boolean; mismatch: boolean; kindMismatch: boolean; lineageCutVia: string[] }, kept: number, now: number) => {
    if (f.unresolved) stats.unresolved++;
    if (f.mismatch) stats.digestMismatches++;
    if (f.kindMismatch) stats.kindMismatches++;
    stats.enriched++;
    if (f.lineageCutVia.length === 0) return;
    stats.lineageCut++;
    if (now - lastCutWarning < CUT_WARNING_INTERVAL_MS) return;
    lastCutWarning = now;
    log.warn(
      { via: f.lineageCutVia, kept, maxPointers: MAX_LINEAGE_POINTERS, maxBytes: MAX_LINEAGE_BYTES, lineageCut: stats.lineageCut },
      'lineage cut: decisions carry only the nearest ancestors of these artifacts; dlog lineage <ref> shows all of them',
    );
  };
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
              const body = m.value!.subarray(5);
              const r = fitLineage((lineageBytes) => splicer.splice(body, outputId, state, now, lineageBytes), (value) => overBy(m, value));
              if ('error' in r) {
                dead.push(deadLetterMessage(m, ctx, { reason: 'invalid_avro', message: r.error, step: 'enrich' }, 'enricher', now));
                stats.deadLettered++;
                continue;
              }
              if (tooLarge(m, r.value, ctx, now, dead)) continue;
              counted(r, r.lineageKept, now);
              out.push({ key: m.key, value: r.value });
              continue;
            }
            const decoded = decoder.decode(m.value);
            if (!decoded.ok) {
              dead.push(deadLetterMessage(m, ctx, { reason: decoded.reason, message: decoded.message, step: 'enrich' }, 'enricher', now));
              stats.deadLettered++;
              continue;
            }
            const decision = decoded.value;
            const { value, resolved } = fitLineage(
              (lineageBytes) => {
                const resolved = resolveEnrichment(decision, state, lineageBytes);
                const value = encodeFramed(outputType, outputId, { ...decision, ...resolved.enrichment, enriched_at: now });
                return { value, lineageBytes: resolved.lineageBytes, resolved };
              },
              (value) => overBy(m, value),
            );
            if (tooLarge(m, value, ctx, now, dead)) continue;
            const e = resolved.enrichment;
            counted(
              {
                unresolved: e.unresolved_refs.length > 0,
                mismatch: e.digest_mismatches.length > 0,
                kindMismatch: resolved.kindMismatches.length > 0,
                lineageCutVia: resolved.lineageCutVia,
              },
              e.lineage.length,
              now,
            );
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
