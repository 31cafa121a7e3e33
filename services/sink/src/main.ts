import { createKafka } from '@dlog/kafka';
import { startService } from '@dlog/runtime';
import { loadMigrations, migrate, pendingMigrations, readAppliedMigrations, storeFromConfig } from '@dlog/store';
import { createSink } from './create-sink.js';
import { sinkNativeClient } from './source.js';

// Wiring only: the work is in createSink and the functions it calls.
const service = startService('sink');
const { config, log, shutdown } = service;

const store = await storeFromConfig(config, { createDatabase: !config.clickhouseUrl, log });
// Embedded: this process owns the store, so it brings the schema up to date itself. A server's
// schema is applied by `dlog migrate` (with a user allowed to change it).
if (store.mode === 'embedded') await migrate(store, { log });
else {
  // A sink older or newer than the schema writes rows the tables read wrongly: into a table
  // without a column it writes, a server drops the field in silence (a registration's log
  // position, by which readers pick the registration that counts). It waits for `dlog migrate`.
  const pending = pendingMigrations(loadMigrations(), await readAppliedMigrations(store));
  if (pending.length > 0) {
    log.fatal({ pending: pending.map((m) => m.file) }, 'the store is missing schema migrations');
    process.stderr.write(`sink: the store at ${store.location} is missing ${pending.length} schema migration(s) (${pending.map((m) => m.file).join(', ')}). Run: npm run dlog -- migrate\n`);
    await store.close();
    process.exit(2);
  }
}

const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-sink`, log });
const native = sinkNativeClient(config.kafkaClient, config.kafkaBrokers, `${config.kafkaClientId}-sink`, log);
const sink = createSink({ kafka, store, log, config, native });

// Shutdown order: the sink stops fetching, writes and commits what it holds, flushes its
// dead-letter producer and leaves the group; then the store closes.
shutdown.add('sink', () => sink.stop());
shutdown.add('clickhouse', () => store.close());

void sink.failed.then((err) => {
  log.fatal({ err }, 'sink failed');
  void shutdown.run(1);
});

await sink.start();
service.ready({ topics: sink.topics, store: store.mode });
