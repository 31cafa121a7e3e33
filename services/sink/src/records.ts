/** The wire shapes the sink reads live in @dlog/contracts, next to the schemas. */
export type {
  AlertRecord,
  ArtifactEventRecord,
  DeploymentEventRecord,
  EnrichedDecisionRecord,
  LineagePointerRecord,
  ResolvedArtifactRecord,
} from '@dlog/contracts';
