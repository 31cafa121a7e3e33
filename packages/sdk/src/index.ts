export {
  createDecisionLogger,
  DecisionLoggerError,
  sdkName,
  type BufferPolicy,
  type DecisionLogger,
  type DecisionLoggerErrorKind,
  type DecisionLoggerOptions,
  type DecisionLoggerStats,
  type DecisionTrace,
  type FlushResult,
  type LatencySummary,
  type TraceStep,
} from './decision-logger.js';
export type {
  ConfigRef,
  Decision,
  DecisionOutput,
  ImageRef,
  InferenceParams,
  ModelRef,
  PreprocessingRef,
  TrajectoryContext,
} from './decision.js';
export { captureEnvironment, environmentMetadata, type Environment, type EnvironmentOptions, type EnvironmentSnapshot } from './environment.js';
export type { OutMessage, Transport } from './transport.js';
export { uuidv7, uuidv7Time } from './uuid-v7.js';
