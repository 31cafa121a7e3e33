import { randomUUID } from 'node:crypto';
import { avroType, createRegistry, loadSchema, registerAvro, valueSubject, type DecisionCountsRecord, type SchemaName } from '@dlog/contracts';
import type { Kafka } from 'kafkajs';
import type { AlertRecord, ArtifactEventRecord, DeploymentEventRecord, EnrichedDecisionRecord } from './records.js';

/**
 * Realistic records for the sink's tests and benchmark (not used by the running sink). Sizes and
 * shapes follow what the gate and enricher emit: refs, digests, params, scores, lineage.
 */

const hex = (n: number, seed: number) => {
  let s = '';
  let x = seed >>> 0 || 1;
  while (s.length < n) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    s += x.toString(16).padStart(8, '0');
  }
  return s.slice(0, n);
};

const models = [
  { name: 'loan-approver', version: '2.4.0' },
  { name: 'loan-approver', version: '2.4.1' },
  { name: 'scan-classifier', version: '1.9.3' },
  { name: 'support-agent', version: '0.7.0' },
];

export function sampleEnrichedDecision(i: number, opts: { ts?: number; eventId?: string; runId?: string } = {}): EnrichedDecisionRecord {
  const m = models[i % models.length]!;
  const ts = opts.ts ?? Date.now() - (i % 1000);
  const agent = m.name === 'support-agent';
  const modelRef = `registry://models/${m.name}:${m.version}`;
  const tier = (['standard', 'standard', 'full', 'minimal'] as const)[i % 4]!;
  return {
    event_id: opts.eventId ?? `${opts.runId ?? 'ev'}-${i}-${randomUUID()}`,
    request_id: `req-${i}-${hex(12, i)}`,
    ts,
    endpoint: `/v1/${m.name}`,
    decision_type: agent ? 'agent_step' : m.name === 'scan-classifier' ? 'classification' : 'loan_approval',
    tenant: i % 3 === 0 ? 'acme' : null,
    model: { name: m.name, version: m.version, digest: `sha256:${hex(64, i % 7)}` },
    image: { ref: `registry.example/inference-${m.name}:${m.version}`, digest: `sha256:${hex(64, 11)}` },
    config: {
      ref: `configs/prod/${m.name}:v3`,
      params: { temperature: agent ? 0.2 : null, top_p: agent ? 0.9 : null, max_tokens: agent ? 512 : null, thresholds: { approve: 0.72 }, extra: {} },
    },
    preprocessing: { ref: `registry://preprocessing/${m.name}-features:v7`, digest: `sha256:${hex(64, 13)}` },
    environment_digest: `sha256:${hex(64, 17)}`,
    input_hash: `sha256-${hex(64, i)}`,
    input_json: tier === 'full' ? JSON.stringify({ income: 52000 + i, term: 36, email: '[redacted:email]' }) : null,
    input_fields: tier === 'minimal' ? {} : { '/applicant/id': `hmac-${hex(32, i * 3)}` },
    output: {
      decision: i % 5 === 0 ? 'deny' : 'approve',
      confidence: (i % 100) / 100,
      scores: { approve: (i % 100) / 100, deny: 1 - (i % 100) / 100 },
      token_logprobs: null,
      output_json: null,
    },
    trajectory: agent ? { trace_id: `tr-${Math.floor(i / 4)}`, step: i % 4, parent_event_id: null, tool_name: 'search', tool_args_hash: `sha256-${hex(64, i * 5)}` } : null,
    producer: { service: `${m.name}-svc`, sdk: 'dlog-sdk@0.1.0', host: `node-${i % 8}` },
    attributes: { region: i % 2 ? 'eu-west-1' : 'us-east-1' },
    tier,
    sample_rate: tier === 'minimal' ? 0.1 : 1,
    policy_version: 'policy-2026.11.1',
    policy_rule: `${tier}-default`,
    pii_key_id: 'k2026a',
    source: { partition: i % 6, offset: i, gate_ts: ts + 3 },
    resolved: true,
    unresolved_refs: [],
    digest_mismatches: [],
    artifacts: [
      { role: 'model', ref: modelRef, kind: 'model', version: m.version, digest: `sha256:${hex(64, i % 7)}`, registered_at: ts - 86_400_000 },
      { role: 'image', ref: `registry.example/inference-${m.name}:${m.version}`, kind: 'image', version: m.version, digest: `sha256:${hex(64, 11)}`, registered_at: ts - 86_400_000 },
    ],
    lineage: [
      { ref: `registry://datasets/${m.name}-train:2026-10`, kind: 'dataset', via: modelRef, depth: 1 },
      { ref: `git://github.com/example/${m.name}@${hex(40, 19)}`, kind: 'code', via: modelRef, depth: 1 },
    ],
    enriched_at: ts + 5,
  };
}

export function sampleCounts(i: number, opts: { minute?: number; batchId?: string } = {}): DecisionCountsRecord {
  const m = models[i % models.length]!;
  const minute = opts.minute ?? Math.floor(Date.now() / 60_000) * 60_000;
  return {
    minute,
    model_name: m.name,
    model_version: m.version,
    endpoint: `/v1/${m.name}`,
    decision_type: 'loan_approval',
    tier: 'standard',
    decision: i % 2 ? 'approve' : 'deny',
    policy_version: 'policy-2026.11.1',
    kept: 10 + (i % 7),
    dropped: 90 + (i % 11),
    batch_id: opts.batchId ?? `p0-${i}`,
  };
}

export function sampleArtifact(i: number, opts: { runId?: string } = {}): ArtifactEventRecord {
  const m = models[i % models.length]!;
  const run = opts.runId ?? 'run';
  return {
    event_id: `${run}-art-${i}-${randomUUID()}`,
    kind: 'model',
    ref: `registry://models/${m.name}-${run}-${i}:${m.version}`,
    name: `${m.name}-${run}-${i}`,
    version: m.version,
    digest: `sha256:${hex(64, i)}`,
    uri: `s3://models/${m.name}/${m.version}`,
    metadata: { framework: 'xgboost', auc: '0.91' },
    parents: [`registry://datasets/${m.name}-train:2026-10`, `git://github.com/example/${m.name}@${hex(40, 19)}`],
    registered_at: Date.now() - 3_600_000,
    registered_by: 'ci@example',
  };
}

export function sampleDeployment(i: number, opts: { runId?: string } = {}): DeploymentEventRecord {
  const m = models[i % models.length]!;
  return {
    event_id: `${opts.runId ?? 'run'}-dep-${i}-${randomUUID()}`,
    action: i % 3 === 1 ? 'canary' : 'deploy',
    endpoint: `/v1/${m.name}`,
    environment: 'prod',
    model_ref: `registry://models/${m.name}:${m.version}`,
    model_digest: `sha256:${hex(64, i % 7)}`,
    previous_model_ref: null,
    image_ref: `registry.example/inference-${m.name}:${m.version}`,
    config_ref: `configs/prod/${m.name}:v3`,
    traffic_share: i % 3 === 1 ? 0.1 : 1,
    ts: Date.now() - 60_000 + i,
    actor: 'deploy-bot',
    reason: `CHG-${1000 + i}`,
  };
}

export function sampleAlert(i: number, opts: { runId?: string } = {}): AlertRecord {
  const now = Date.now();
  return {
    alert_id: `${opts.runId ?? 'run'}-alert-${i}`,
    rule: 'decision_rate_shift',
    severity: 'warning',
    endpoint: '/v1/loan-approver',
    model_name: 'loan-approver',
    model_version: '2.4.1',
    window_start: now - 300_000,
    window_end: now,
    summary: 'deny rate 31% vs 18% baseline',
    evidence: { observed: '0.31', baseline: '0.18' },
    evidence_json: null,
    scope_command: 'dlog scope --model loan-approver:2.4.1',
    ts: now,
  };
}

/** Confluent framing: magic byte 0, the schema id (int32 big-endian), then the Avro body. */
export function frame(schemaId: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = 0;
  out.writeInt32BE(schemaId, 1);
  body.copy(out, 5);
  return out;
}

/**
 * Registers a contract for a topic (TopicNameStrategy) and produces records to it, framed as the
 * pipeline's producers frame them. For tests and the benchmark.
 */
/**
 * Decisions with the shapes that are easy to get wrong between two ways of writing a row: absent
 * records and digests, empty and odd maps, non-ASCII and escape characters, 2^53-1 offsets,
 * floats that do not round-trip through short decimals, step 0 next to a null step.
 */
export function sampleEdgeDecision(i: number, opts: { runId?: string } = {}): EnrichedDecisionRecord {
  const r = sampleEnrichedDecision(i, opts);
  switch (i % 7) {
    case 0:
      r.image = null;
      r.config = null;
      r.preprocessing = null;
      r.environment_digest = null;
      r.model.digest = null;
      r.producer.host = null;
      r.pii_key_id = null;
      r.tenant = null;
      break;
    case 1:
      r.output.token_logprobs = [-0.125, -1.5e-7, -3.3333333333333335];
      r.unresolved_refs = ['registry://models/x:1'];
      r.digest_mismatches = ['a', 'b'];
      r.resolved = false;
      r.output.confidence = null;
      r.output.output_json = '{"k":"v\\n\\u00e9"}';
      break;
    case 2:
      r.attributes = { 'quote"key': 'tab\tval', 'ünï': 'コード', empty: '', "it's": 'back\\slash' };
      r.input_fields = {};
      r.output.scores = {};
      r.artifacts = [];
      r.lineage = [];
      break;
    case 3:
      if (r.config) r.config.params = { ...r.config.params, extra: { seed: '42', stop: '</s>' }, thresholds: {}, max_tokens: 2147483647 };
      r.input_json = '{"text":"line1\\nline2 \\"quoted\\" ✓"}';
      break;
    case 4:
      r.sample_rate = 1 / 3;
      r.source.offset = 2 ** 53 - 1 - i;
      r.output.confidence = 0.1 + 0.2;
      break;
    case 5:
      r.trajectory = { trace_id: `tr-edge-${i}`, step: 0, parent_event_id: 'ev-parent', tool_name: null, tool_args_hash: null };
      break;
    default:
      r.tier = 'minimal';
  }
  return r;
}

export async function produceSamples(
  kafka: Kafka,
  registryUrl: string,
  topic: string,
  schema: SchemaName,
  records: readonly object[],
  key: (r: any) => string,
  opts: { chunk?: number } = {},
): Promise<void> {
  const id = await registerAvro(createRegistry(registryUrl), registryUrl, valueSubject(topic), loadSchema(schema));
  const type = avroType(schema);
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  try {
    // A send is one record batch per partition, and brokers refuse batches over 1 MiB by default.
    const chunk = opts.chunk ?? 500;
    for (let i = 0; i < records.length; i += chunk) {
      const messages = records.slice(i, i + chunk).map((r) => ({ key: key(r), value: frame(id, type.toBuffer(r)) }));
      await producer.send({ topic, acks: -1, messages });
    }
  } finally {
    await producer.disconnect();
  }
}
