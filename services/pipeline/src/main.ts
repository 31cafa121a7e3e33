import { PrivateFileError, startService } from '@dlog/runtime';
import { createPipeline } from './create-pipeline.js';

const service = startService('pipeline');
const { config, log, shutdown } = service;
let pipeline;
try {
  pipeline = await createPipeline({ config, log, workers: 'processes' });
} catch (err) {
  // The query endpoint's token file refused (see privateFile): the operator's to fix.
  if (!(err instanceof PrivateFileError)) throw err;
  process.stderr.write(`pipeline: ${err.message}\n`);
  process.exit(2);
}
shutdown.add('stop the pipeline (gate, enricher, sink, store)', () => pipeline.stop());
void pipeline.failed.then((err) => {
  log.fatal({ err }, 'a worker failed');
  void shutdown.run(1);
});
service.ready({ store: pipeline.store.mode, queryPort: pipeline.queryPort });
