export {
  ArtifactState,
  modelRef,
  environmentRef,
  registrationKey,
  registrationDifferences,
  type ArtifactEventRecord,
  type ArtifactKind,
  type Ancestor,
  type ApplyOutcome,
} from './artifact-state.js';
export { parseManifest, readManifest, ManifestError } from './manifest.js';
export { loadArtifactState, registerArtifacts, RegistrationConflictError, type RegistrationConflict, type RegistryFollower, type RegisterResult } from './registry-topic.js';
