import { createKafka } from '@dlog/kafka';
import { startService } from '@dlog/runtime';
import { createGate } from './create-gate.js';

const service = startService('gate');
const { config, log, shutdown } = service;
const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-gate`, log });
const gate = await createGate({ kafka, config, log });
// Stop fetching and finish (commit or abort) the batch in hand, then report what was done.
shutdown.add('stop the gate', () => gate.stop());
shutdown.add('final stats', () => log.info({ stats: gate.stats }, 'gate stopped'));
await gate.start();
service.ready({ policy: gate.policyId });
