import { startService } from '@dlog/runtime';
import { createPipeline } from './create-pipeline.js';

const service = startService('pipeline');
const { config, log, shutdown } = service;
const pipeline = await createPipeline({ config, log, workers: 'processes' });
shutdown.add('stop the pipeline (gate, enricher, sink, store)', () => pipeline.stop());
void pipeline.failed.then((err) => {
  log.fatal({ err }, 'a worker failed');
  void shutdown.run(1);
});
service.ready({ store: pipeline.store.mode, queryPort: pipeline.queryPort });
