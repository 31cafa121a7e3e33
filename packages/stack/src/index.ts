export {
  stackUp,
  stackDown,
  stackStatus,
  stackEndpoints,
  stackComponents,
  StackError,
  type ComponentStatus,
  type ComponentState,
  type StackConfig,
} from './stack.js';
export { kafkaVersion } from './kafka.js';
export { apicurioVersion } from './registry.js';
export { portIsFree } from './processes.js';
