export { createGate, defaultGateTopics, type Gate, type GateOptions } from './create-gate.js';
export { processBatch, toDecisionRecord, type GateDeps, type GateStats, type GateTopics } from './gate.js';
export { decodeEvent, type DecodedEvent } from './decode.js';
export { loadPolicy, parsePolicy, PolicyError, type Policy } from './policy.js';
export { createProtector, type Protector } from './protect.js';
export { parseKeyRing, localKeyRing, type KeyRing } from './keys.js';
export { keep, hash32, sampleKey } from './sample.js';
export type { ReasonCode } from './results.js';
