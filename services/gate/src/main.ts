import { createKafka } from '@dlog/kafka';
import { PrivateFileError, startService } from '@dlog/runtime';
import { createGate } from './create-gate.js';
import { KeyError } from './keys.js';
import { PolicyError } from './policy.js';

const service = startService('gate');
const { config, log, shutdown } = service;
const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-gate`, log });
let gate;
try {
  gate = await createGate({ kafka, config, log });
} catch (err) {
  // A policy, key or key-file mistake is the operator's to fix: one line naming it, not a stack.
  if (!(err instanceof PolicyError || err instanceof KeyError || err instanceof PrivateFileError)) throw err;
  process.stderr.write(`gate: ${err.message}\n`);
  process.exit(2);
}
// Stop fetching and finish (commit or abort) the batch in hand, then report what was done.
shutdown.add('stop the gate', () => gate.stop());
shutdown.add('final stats', () => log.info({ stats: gate.stats }, 'gate stopped'));
await gate.start();
service.ready({ policy: gate.policyId });
