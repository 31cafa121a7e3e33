import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import { registerArtifacts, type ArtifactEventRecord } from '@dlog/artifacts';
import type { DeploymentEventRecord } from '@dlog/contracts';
import { createKafka, ensurePipelineTopics } from '@dlog/kafka';
import { createDecisionLogger, type DecisionLogger } from '@dlog/sdk';
import { publishEvents } from './audit-events.js';

/**
 * Realistic traffic for the local pipeline: a loan model with a stable version and a worse
 * canary on the same endpoint (lower confidence, more declines), a recommender, support agents
 * whose trajectories call tools, personal data in the inputs, and a little bad input. Artifacts
 * and deployments are registered first, so decisions resolve and scopes know their windows.
 */

const digest = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

export const simulatedModels = {
  stable: { name: 'loan-approver', version: '2.4.1' },
  canary: { name: 'loan-approver', version: '2.5.0' },
  recommender: { name: 'item-recommender', version: '7.1.0' },
  agent: { name: 'support-agent', version: '1.3.0' },
} as const;

export const canaryShare = 0.2;

function artifact(kind: ArtifactEventRecord['kind'], ref: string, name: string, version: string, parents: string[] = [], metadata: Record<string, string> = {}): ArtifactEventRecord {
  return { event_id: randomUUID(), kind, ref, name, version, digest: digest(ref), uri: null, metadata, parents, registered_at: Date.now(), registered_by: 'dlog simulate' };
}

export function simulatedArtifacts(): ArtifactEventRecord[] {
  const ds = 'registry://datasets/loan-applications:v5';
  const ds6 = 'registry://datasets/loan-applications:v6';
  const code = 'git://example.com/acme/loan-model@3f2a1c9';
  const code2 = 'git://example.com/acme/loan-model@8d41e07';
  const m = (x: { name: string; version: string }) => `registry://models/${x.name}:${x.version}`;
  return [
    artifact('dataset', ds, 'loan-applications', 'v5', [], { rows: '1200000' }),
    artifact('dataset', ds6, 'loan-applications', 'v6', [ds], { rows: '1350000' }),
    artifact('code', code, 'loan-model', '3f2a1c9'),
    artifact('code', code2, 'loan-model', '8d41e07'),
    artifact('model', m(simulatedModels.stable), 'loan-approver', '2.4.1', [ds, code], { framework: 'xgboost-2.1' }),
    artifact('model', m(simulatedModels.canary), 'loan-approver', '2.5.0', [ds6, code2], { framework: 'xgboost-2.1' }),
    artifact('model', m(simulatedModels.recommender), 'item-recommender', '7.1.0', ['registry://datasets/clicks:2026-11']),
    artifact('dataset', 'registry://datasets/clicks:2026-11', 'clicks', '2026-11'),
    artifact('model', m(simulatedModels.agent), 'support-agent', '1.3.0'),
    artifact('image', 'registry.example/inference-loan:2.4.1', 'inference-loan', '2.4.1', [m(simulatedModels.stable)]),
    artifact('image', 'registry.example/inference-loan:2.5.0', 'inference-loan', '2.5.0', [m(simulatedModels.canary)]),
    artifact('config', 'configs/prod/loan-params:v3', 'loan-params', 'v3', [], { temperature: '0.1' }),
    artifact('preprocessing', 'registry://preprocessing/loan-features:v7', 'loan-features', 'v7', [code]),
  ];
}

export interface SimulateOptions {
  events: number;
  /** Decisions per second; 0: as fast as the SDK takes them. */
  rate: number;
  badShare: number;
  /** Applicants repeat, so both loan versions see the same inputs (for `dlog diff`). */
  applicants: number;
}

export interface SimulateSummary {
  recorded: Record<string, number>;
  bad: number;
  traces: number;
  sdk: ReturnType<DecisionLogger['stats']>;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function deployments(since: number): DeploymentEventRecord[] {
  const base = { environment: 'prod', image_ref: null, config_ref: 'configs/prod/loan-params:v3', actor: 'dlog simulate', reason: null, model_digest: null };
  return [
    { ...base, event_id: randomUUID(), action: 'deploy', endpoint: 'loan-api', model_ref: 'registry://models/loan-approver:2.4.1', previous_model_ref: null, traffic_share: 1, ts: since - 3_600_000 },
    { ...base, event_id: randomUUID(), action: 'canary', endpoint: 'loan-api', model_ref: 'registry://models/loan-approver:2.5.0', previous_model_ref: 'registry://models/loan-approver:2.4.1', traffic_share: canaryShare, ts: since },
    { ...base, event_id: randomUUID(), action: 'deploy', endpoint: 'recommendations', model_ref: 'registry://models/item-recommender:7.1.0', previous_model_ref: null, traffic_share: 1, ts: since - 86_400_000 },
  ];
}

export async function simulate(config: Config, log: Logger, opts: SimulateOptions, progress: (msg: string) => void = () => {}): Promise<SimulateSummary> {
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-simulate`, log });
  // Idempotent: the pipeline may not have run yet under this prefix.
  await ensurePipelineTopics(kafka, config.topicPrefix);
  const reg = await registerArtifacts({ kafka, topic: `${config.topicPrefix}registry.artifacts`, schemaRegistryUrl: config.schemaRegistryUrl, log, events: simulatedArtifacts() });
  progress(`artifacts: ${reg.added.length} registered, ${reg.unchanged.length} already known`);
  const start = Date.now();
  await publishEvents(config, log, 'deployments.v1', 'deployment-event', deployments(start).map((e) => ({ key: e.endpoint, value: e })));
  progress(`deployments: loan-api 2.4.1 (100%), canary 2.5.0 (${canaryShare * 100}%) from ${new Date(start).toISOString()}`);

  const logger = createDecisionLogger({
    service: 'simulated-services',
    brokers: config.kafkaBrokers,
    registryUrl: config.schemaRegistryUrl,
    topic: `${config.topicPrefix}inference.raw`,
    artifactTopic: `${config.topicPrefix}registry.artifacts`,
    buffer: { maxEvents: 200_000, maxBytes: 256 * 1024 * 1024, policy: 'drop' },
  });
  const random = rng(42);
  const recorded: Record<string, number> = {};
  const count = (k: string) => (recorded[k] = (recorded[k] ?? 0) + 1);
  let traces = 0;
  const badValues: Buffer[] = [];
  const t0 = Date.now();
  for (let i = 0; i < opts.events; i++) {
    if (opts.rate > 0) {
      const due = t0 + (i / opts.rate) * 1000;
      if (due > Date.now() + 5) await new Promise((r) => setTimeout(r, due - Date.now()));
    } else if (i % 2000 === 0) {
      await new Promise((r) => setImmediate(r));
    }
    const roll = random();
    if (roll < opts.badShare) {
      badValues.push(i % 3 === 0 ? Buffer.from('{"event_id": "broken') : i % 3 === 1 ? Buffer.from([0, 0, 0, 0x7f, 0x7f, 1, 2]) : Buffer.from(JSON.stringify({ event_id: `bad-${i}`, ts: 'yesterday' })));
      continue;
    }
    if (roll < 0.6) {
      const a = Math.floor(random() * opts.applicants);
      const canary = random() < canaryShare;
      const model = canary ? simulatedModels.canary : simulatedModels.stable;
      const income = 20_000 + ((a * 7919) % 120_000);
      const score = Math.min(0.99, Math.max(0.01, income / 140_000 + (((a * 31) % 17) - 8) / 100));
      // The canary is worse: less sure of itself and declines more of the same applicants.
      const approve = canary ? score > 0.55 : score > 0.4;
      const confidence = canary ? 0.55 + random() * 0.2 : 0.8 + random() * 0.18;
      logger.record({
        requestId: `loan-${i}`,
        model,
        endpoint: 'loan-api',
        decisionType: 'loan_approval',
        image: { ref: `registry.example/inference-loan:${model.version}`, digest: digest(`registry.example/inference-loan:${model.version}`) },
        config: { ref: 'configs/prod/loan-params:v3', params: { temperature: 0.1, thresholds: { approve: canary ? 0.55 : 0.4 } } },
        preprocessing: { ref: 'registry://preprocessing/loan-features:v7' },
        input: {
          applicant: { customer_id: `c-${a}`, email: `applicant${a}@example.com`, name: `Applicant ${a}`, phone: `+44 20 7946 ${String(a % 10_000).padStart(4, '0')}`, ssn: `219-09-${String(1000 + (a % 9000))}` },
          application: { amount: 1_000 + (a % 50) * 500, income, term_months: 12 + (a % 4) * 12 },
        },
        output: { decision: approve ? 'approved' : 'declined', confidence, scores: { approved: score, declined: 1 - score } },
      });
      count(`${model.name}:${model.version}`);
    } else if (roll < 0.85) {
      const user = Math.floor(random() * 5_000);
      logger.record({
        requestId: `rec-${i}`,
        model: simulatedModels.recommender,
        endpoint: 'recommendations',
        decisionType: 'recommendation',
        input: { user_id: `u-${user}`, context: { page: 'home', device: random() < 0.5 ? 'mobile' : 'web' } },
        output: { decision: `item-${Math.floor(random() * 200)}`, confidence: 0.3 + random() * 0.6 },
      });
      count(`${simulatedModels.recommender.name}:${simulatedModels.recommender.version}`);
    } else {
      const trace = logger.trace();
      traces++;
      const steps = 2 + Math.floor(random() * 4);
      const tools = ['search_orders', 'lookup_customer', 'refund', 'send_email'];
      for (let s = 0; s < steps; s++) {
        const tool = s === steps - 1 ? null : tools[Math.floor(random() * tools.length)]!;
        trace.record({
          model: simulatedModels.agent,
          endpoint: 'support-chat',
          decisionType: 'agent_step',
          toolName: tool,
          toolArgs: tool ? { customer: `c-${i}`, note: `contact me at customer${i}@example.com` } : undefined,
          input: { message: s === 0 ? `My order is late, I'm at customer${i}@example.com or +1 415 555 ${String(i % 10_000).padStart(4, '0')}` : `tool result ${s}` },
          output: { decision: tool ? `call:${tool}` : 'answer', confidence: 0.7 + random() * 0.3, detail: { text: tool ? `calling ${tool}` : 'Your refund is on its way.' } },
        });
        count(`${simulatedModels.agent.name}:${simulatedModels.agent.version}`);
      }
      i += steps - 1;
    }
    if (i > 0 && i % 10_000 === 0) progress(`${i} decisions recorded`);
  }
  // Bad input goes straight to the topic, as a broken producer would send it.
  if (badValues.length > 0) {
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: `${config.topicPrefix}inference.raw`, messages: badValues.map((value, i) => ({ key: `bad-${i}`, value })) });
    await producer.disconnect();
  }
  await logger.flush(60_000);
  const sdk = await logger.close(30_000);
  return { recorded, bad: badValues.length, traces, sdk };
}
