import { createKafka } from '@dlog/kafka';
import { startService } from '@dlog/runtime';
import { createEnricher } from './create-enricher.js';

const service = startService('enricher');
const { config, log, shutdown } = service;
const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-enricher`, log });
const enricher = await createEnricher({ kafka, config, log });
// Stop fetching and commit or abort the batch in hand, then stop following the registry.
shutdown.add('stop the enricher', () => enricher.stop());
shutdown.add('final stats', () => log.info({ stats: enricher.stats }, 'enricher stopped'));
await enricher.start();
service.ready();
