export { createEnricher, defaultEnricherTopics, type Enricher, type EnricherStats } from './create-enricher.js';
export { enrich, decisionRefs, type EnrichedDecisionRecord, type ResolvedArtifact, type LineagePointer } from './enrich.js';
