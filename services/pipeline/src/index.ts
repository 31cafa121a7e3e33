export { createPipeline, type Pipeline } from './create-pipeline.js';
export { startWorkerProcess, type WorkerProcess } from './worker-process.js';
