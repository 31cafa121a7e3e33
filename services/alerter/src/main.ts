import { createKafka } from '@dlog/kafka';
import { startService } from '@dlog/runtime';
import { createAlerter } from './create-alerter.js';
import { loadRules, RulesError } from './rules.js';

const service = startService('alerter');
const { config, log, shutdown } = service;
// Rules are validated before anything connects: a wrong rule file ends the start, naming the path.
let rules;
try {
  rules = loadRules(config.alerterRulesFile);
} catch (err) {
  if (!(err instanceof RulesError)) throw err;
  process.stderr.write(`alerter: ${err.message}\n`);
  process.exit(2);
}
const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-alerter`, log });
const alerter = await createAlerter({ kafka, config, log, rules });
// Stop fetching and commit or abort the batch in hand (its alerts go out with its offsets).
shutdown.add('stop the alerter', () => alerter.stop());
shutdown.add('final stats', () => log.info({ stats: { ...alerter.stats } }, 'alerter stopped'));
await alerter.start();
service.ready({ rules: config.alerterRulesFile, rulesCount: rules.rules.length });
