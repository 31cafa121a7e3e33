export {
  ArtifactState,
  modelRef,
  environmentRef,
  registrationKey,
  registrationDifferences,
  MAX_LINEAGE_DEPTH,
  MAX_LINEAGE_POINTERS,
  type ArtifactEventRecord,
  type ArtifactKind,
  type Ancestor,
  type Lineage,
  type ApplyOutcome,
} from './artifact-state.js';
export { parseManifest, readManifest, ManifestError } from './manifest.js';
export {
  loadArtifactState,
  registerArtifacts,
  RegistrationConflictError,
  type RegistrationConflict,
  type RegistryFollower,
  type RegistryFollowerStats,
  type RegisterResult,
} from './registry-topic.js';
