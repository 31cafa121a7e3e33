import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import { createAlerter, type Alerter } from '@dlog/alerter';
import { createEnricher, type Enricher } from '@dlog/enricher';
import { createGate, type Gate } from '@dlog/gate';
import { createKafka, ensurePipelineTopics } from '@dlog/kafka';
import { createSink, type Sink } from '@dlog/sink';
import { storeFromConfig, migrate, startQueryServer, type Store } from '@dlog/store';

export interface Pipeline {
  readonly store: Store;
  readonly gate: Gate;
  readonly enricher: Enricher;
  readonly sink: Sink;
  readonly alerter: Alerter;
  readonly queryPort: number | undefined;
  /** Resolves if a worker fails for good; the host should then stop and exit non-zero. */
  readonly failed: Promise<Error>;
  stop(): Promise<void>;
}

/**
 * Gate, enricher, alerter and sink in one process with the store it owns. In embedded mode this is the
 * only process that may open the data directory, so it also answers `dlog query` on loopback.
 * With CLICKHOUSE_URL set the same composition runs against a server (each worker can also run
 * alone from its own main.ts).
 */
export async function createPipeline(opts: { config: Config; log: Logger; queryServer?: boolean }): Promise<Pipeline> {
  const { config, log } = opts;
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-pipeline`, log });
  await ensurePipelineTopics(kafka, config.topicPrefix);
  const store = await storeFromConfig(config, { createDatabase: true, log });
  const applied = await migrate(store, { log });
  log.info({ migrations: applied }, 'schema current');
  const gate = await createGate({ kafka, config, log: log.child({ worker: 'gate' }) });
  const enricher = await createEnricher({ kafka, config, log: log.child({ worker: 'enricher' }) });
  const alerter = await createAlerter({ kafka, config, log: log.child({ worker: 'alerter' }) });
  const sink = createSink({ kafka, store, log: log.child({ worker: 'sink' }), config });
  await sink.start();
  await alerter.start();
  await enricher.start();
  await gate.start();
  const query = opts.queryServer !== false && store.mode === 'embedded'
    ? await startQueryServer({ store, port: config.queryPort, dataDir: config.clickhouseDataDir, log })
    : undefined;
  return {
    store,
    gate,
    enricher,
    sink,
    alerter,
    queryPort: query?.port,
    failed: sink.failed,
    async stop() {
      // Upstream first, so each stage drains what the one before it committed: stop taking raw
      // events, then enrichment, then flush the sink and commit, then close the store.
      await gate.stop();
      await enricher.stop();
      await alerter.stop();
      await sink.stop();
      await query?.close();
      await store.close();
    },
  };
}
