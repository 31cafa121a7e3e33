export { createAlerter, defaultAlerterTopics, type Alerter, type AlerterStats } from './create-alerter.js';
export { createEngine, type Engine, type AlerterState } from './engine.js';
export { evaluateRule, pickBaseline, scopeCommand, alertId, type Subject } from './evaluate.js';
export { loadRules, parseRules, parseDuration, RulesError, type Rule, type RulesDocument } from './rules.js';
export { psi, type PsiResult } from './psi.js';
export type { DecisionObservation, DeadLetterObservation } from './aggregate.js';
