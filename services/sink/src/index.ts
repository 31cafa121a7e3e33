export { createSink, validateSinkConfig, type Sink, type SinkOptions } from './create-sink.js';
export { sinkNativeClient } from './source.js';
export { sinkTables, deadLetterTopic, type TableSpec } from './tables.js';
export { toDecisionRow, toCountsRow, toArtifactRow, toDeploymentRow, toAlertRow, countsRowKey, type Row } from './to-rows.js';
export { TableWriter, type WriterStats, type WriterLimits, type WriterIo, type DeadLetter, type SourceMessage } from './table-writer.js';
export type { EnrichedDecisionRecord, ArtifactEventRecord, DeploymentEventRecord, AlertRecord } from './records.js';
export * from './sample-records.js';
