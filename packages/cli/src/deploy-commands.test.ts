import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DeploymentEvent } from './audit-events.js';
import { describeDeployment } from './deploy-commands.js';

const event: DeploymentEvent = {
  event_id: 'e1', action: 'rollback', endpoint: 'loan-api', environment: 'prod', model_ref: 'registry://models/loan-approver:2.4.1', model_digest: null,
  previous_model_ref: 'registry://models/loan-approver:2.5.0', image_ref: null, config_ref: null, traffic_share: 1, ts: Date.UTC(2026, 10, 27, 6), actor: 't', reason: 'x',
};

describe('what dlog deploy and dlog rollback print', () => {
  // The environment may have been inferred: the person sees where the event was filed.
  it('names the environment the event was recorded in, or that it has none', () => {
    assert.match(describeDeployment(event), /^rolled loan-api in prod back to loan-approver:2\.4\.1 \(from loan-approver:2\.5\.0\)\n/);
    assert.match(describeDeployment({ ...event, action: 'canary', environment: null, traffic_share: 0.2 }), /^canary loan-approver:2\.4\.1 on loan-api \(no environment\) at 20\.0%/);
    assert.match(describeDeployment({ ...event, action: 'deploy', environment: 'staging' }), /^deployed loan-approver:2\.4\.1 on loan-api in staging at 100\.0%/);
  });
});
