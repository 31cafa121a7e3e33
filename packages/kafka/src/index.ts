export { createKafka, type KafkaClientOptions } from './client.js';
export { ensureTopics, loadTopicDefinitions, defaultTopicsFile, type TopicDefinition } from './topics.js';
