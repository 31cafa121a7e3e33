export { createPipeline, type Pipeline } from './create-pipeline.js';
