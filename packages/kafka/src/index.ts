export { createKafka, type KafkaClientOptions } from './client.js';
export { ensureTopics, ensurePipelineTopics, ensureWorkerTopics, withPrefix, loadTopicDefinitions, defaultTopicsFile, type TopicDefinition } from './topics.js';
export {
  createTransactionalProcessor,
  chunkMessages,
  type TransactionalProcessor,
  type TransactionalProcessorOptions,
  type OutputRecord,
  type BatchContext,
} from './transactional-processor.js';
export { deadLetterMessage, ENCODED_HEADERS, originalHeaders, prefixedTopics, MAX_RECORD_BYTES, recordBytes, type DeadLetterFailure } from './dead-letter.js';
export { packMessages, unpackMessages, transferables, type PackedMessages } from './thread-wire.js';
export { loadNativeKafka, pickNativeKafka, nativeClientFor, nativeKafkaLoadError, type NativeKafka, type KafkaClientKind } from './native.js';
export { byPartition, clientErrorLog, createNativeProcessor, RebalanceBarrier, fromNative, nativeCall, nativeConsumerSettings, metadataRefreshMs, pollMessages, workUnits } from './native-processor.js';
export { replayDeadLetters, type ReplayOptions, type ReplayReport } from './dead-letter-replay.js';
