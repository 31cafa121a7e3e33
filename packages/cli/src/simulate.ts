import { createHash, randomBytes, randomInt, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import { registerArtifacts, type ArtifactEventRecord } from '@dlog/artifacts';
import type { DeploymentEventRecord } from '@dlog/contracts';
import { createKafka, ensurePipelineTopics } from '@dlog/kafka';
import { createDecisionLogger, type Decision, type DecisionLogger, type TraceStep } from '@dlog/sdk';
import { publishEvents } from './audit-events.js';
import { libraryLogOf } from './context.js';

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
  /** Events to send, malformed ones included; never more. */
  events: number;
  /** Events per second; 0: as fast as the SDK takes them. */
  rate: number;
  /** The share of the events sent that are malformed, drawn apart from the mix of good ones. */
  badShare: number;
  /** Applicants repeat, so both loan versions see the same inputs (for `dlog diff`). */
  applicants: number;
  /** Seeds the traffic's random draws: a seed sends the same traffic again (under this run's ids). Random when unset. */
  seed?: number;
}

export interface SimulateSummary {
  /** In every request id of this run, so `dlog trace <request id>` finds this run's decision alone. */
  runId: string;
  seed: number;
  recorded: Record<string, number>;
  bad: number;
  traces: number;
  sdk: ReturnType<DecisionLogger['stats']>;
}

const label = (m: { name: string; version: string }) => `${m.name}:${m.version}`;

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

/** One item of simulated traffic: a decision, an agent's trajectory (one event per step), or a malformed event; `label` is the model version. */
export type SimulatedEvent =
  | { kind: 'decision'; decision: Decision; label: string }
  | { kind: 'trajectory'; steps: TraceStep[]; label: string }
  | { kind: 'malformed'; key: string; value: Buffer };

/** The events an item of traffic sends. */
export function eventsOf(item: SimulatedEvent): number {
  return item.kind === 'trajectory' ? item.steps.length : 1;
}

/**
 * The traffic simulate() sends, without Kafka: exactly `events` events, of which the malformed are
 * `badShare` of them (rounded), spread through the run by a draw of their own, so the good mix
 * keeps its proportions (loans 60%, recommendations 25%, agent trajectories 15% of the draws)
 * whatever the share. Before, the malformed share was cut from the loans' end of the one roll
 * (0.6 left no loans), trajectories counted one event of several, and the last one ran past -n.
 */
export function* simulatedTraffic(opts: Pick<SimulateOptions, 'events' | 'badShare' | 'applicants'> & { seed: number; runId: string }): Generator<SimulatedEvent> {
  const random = rng(opts.seed);
  // Its own stream, so the share of malformed events changes which events are malformed, not the good traffic's draws.
  const badRandom = rng(opts.seed ^ 0x5bd1e995);
  const run = opts.runId;
  let badLeft = Math.round(opts.events * opts.badShare);
  let sent = 0;
  while (sent < opts.events) {
    const i = sent;
    // Each of the events left is malformed with the chance that leaves exactly badLeft of them.
    if (badRandom() < badLeft / (opts.events - sent)) {
      badLeft--;
      sent++;
      const value =
        i % 3 === 0 ? Buffer.from('{"event_id": "broken') : i % 3 === 1 ? Buffer.from([0, 0, 0, 0x7f, 0x7f, 1, 2]) : Buffer.from(JSON.stringify({ event_id: `bad-${run}-${i}`, ts: 'yesterday' }));
      yield { kind: 'malformed', key: `bad-${run}-${i}`, value };
      continue;
    }
    const roll = random();
    if (roll < 0.6) {
      const a = Math.floor(random() * opts.applicants);
      const canary = random() < canaryShare;
      const model = canary ? simulatedModels.canary : simulatedModels.stable;
      const income = 20_000 + ((a * 7919) % 120_000);
      const score = Math.min(0.99, Math.max(0.01, income / 140_000 + (((a * 31) % 17) - 8) / 100));
      // The canary is worse: less sure of itself and declines more of the same applicants.
      const approve = canary ? score > 0.55 : score > 0.4;
      const confidence = canary ? 0.55 + random() * 0.2 : 0.8 + random() * 0.18;
      sent++;
      yield {
        kind: 'decision',
        label: label(model),
        decision: {
          requestId: `loan-${run}-${i}`,
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
        },
      };
    } else if (roll < 0.85) {
      const user = Math.floor(random() * 5_000);
      sent++;
      yield {
        kind: 'decision',
        label: label(simulatedModels.recommender),
        decision: {
          requestId: `rec-${run}-${i}`,
          model: simulatedModels.recommender,
          endpoint: 'recommendations',
          decisionType: 'recommendation',
          input: { user_id: `u-${user}`, context: { page: 'home', device: random() < 0.5 ? 'mobile' : 'web' } },
          output: { decision: `item-${Math.floor(random() * 200)}`, confidence: 0.3 + random() * 0.6 },
        },
      };
    } else {
      // Cut short rather than past -n when the good events left are fewer (a last step answers).
      const steps = Math.min(2 + Math.floor(random() * 4), opts.events - sent - badLeft);
      const tools = ['search_orders', 'lookup_customer', 'refund', 'send_email'];
      const trajectory: TraceStep[] = [];
      for (let s = 0; s < steps; s++) {
        const tool = s === steps - 1 ? null : tools[Math.floor(random() * tools.length)]!;
        trajectory.push({
          model: simulatedModels.agent,
          endpoint: 'support-chat',
          decisionType: 'agent_step',
          toolName: tool,
          toolArgs: tool ? { customer: `c-${i}`, note: `contact me at customer${i}@example.com` } : undefined,
          input: { message: s === 0 ? `My order is late, I'm at customer${i}@example.com or +1 415 555 ${String(i % 10_000).padStart(4, '0')}` : `tool result ${s}` },
          output: { decision: tool ? `call:${tool}` : 'answer', confidence: 0.7 + random() * 0.3, detail: { text: tool ? `calling ${tool}` : 'Your refund is on its way.' } },
        });
      }
      sent += steps;
      yield { kind: 'trajectory', steps: trajectory, label: label(simulatedModels.agent) };
    }
  }
}

export async function simulate(config: Config, log: Logger, opts: SimulateOptions, progress: (msg: string) => void = () => {}): Promise<SimulateSummary> {
  // kafkajs logs "not the leader" at error level while new topics settle, and retries them.
  const kafka = createKafka({ brokers: config.kafkaBrokers, clientId: `${config.kafkaClientId}-simulate`, log: libraryLogOf(log) });
  // Idempotent: the pipeline may not have run yet under this prefix.
  await ensurePipelineTopics(kafka, config.topicPrefix);
  const reg = await registerArtifacts({ kafka, topic: `${config.topicPrefix}registry.artifacts`, schemaRegistryUrl: config.schemaRegistryUrl, log, events: simulatedArtifacts() });
  progress(`artifacts: ${reg.added.length} registered, ${reg.unchanged.length} already known`);
  const start = Date.now();
  await publishEvents(config, log, 'deployments.v1', 'deployment-event', deployments(start).map((e) => ({ key: e.endpoint, value: e })));
  progress(`deployments: loan-api 2.4.1 (100%), canary 2.5.0 (${canaryShare * 100}%) from ${new Date(start).toISOString()}`);

  // A fixed seed sent the same request ids every run, so `dlog trace loan-1436` found the decisions
  // of every run so far; the run id keeps them apart, even for runs of one seed.
  const runId = randomBytes(4).toString('hex');
  const seed = opts.seed ?? randomInt(0, 2 ** 32);
  progress(`run ${runId} (--seed ${seed}): request ids look like loan-${runId}-<n>`);
  const logger = createDecisionLogger({
    service: 'simulated-services',
    brokers: config.kafkaBrokers,
    registryUrl: config.schemaRegistryUrl,
    topic: `${config.topicPrefix}inference.raw`,
    artifactTopic: `${config.topicPrefix}registry.artifacts`,
    buffer: { maxEvents: 200_000, maxBytes: 256 * 1024 * 1024, policy: 'drop' },
  });
  const recorded: Record<string, number> = {};
  const count = (k: string) => (recorded[k] = (recorded[k] ?? 0) + 1);
  let traces = 0;
  const badValues: { key: string; value: Buffer }[] = [];
  const t0 = Date.now();
  let sent = 0;
  for (const item of simulatedTraffic({ ...opts, seed, runId })) {
    if (opts.rate > 0) {
      const due = t0 + (sent / opts.rate) * 1000;
      if (due > Date.now() + 5) await new Promise((r) => setTimeout(r, due - Date.now()));
    } else if (sent % 2000 === 0) {
      await new Promise((r) => setImmediate(r));
    }
    if (item.kind === 'malformed') {
      badValues.push({ key: item.key, value: item.value });
    } else if (item.kind === 'decision') {
      logger.record(item.decision);
      count(item.label);
    } else {
      const trace = logger.trace();
      traces++;
      for (const step of item.steps) {
        trace.record(step);
        count(item.label);
      }
    }
    const before = sent;
    sent += eventsOf(item);
    if (Math.floor(sent / 10_000) > Math.floor(before / 10_000)) progress(`${sent} events sent`);
  }
  // Bad input goes straight to the topic, as a broken producer would send it.
  if (badValues.length > 0) {
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: `${config.topicPrefix}inference.raw`, messages: badValues });
    await producer.disconnect();
  }
  await logger.flush(60_000);
  const sdk = await logger.close(30_000);
  return { runId, seed, recorded, bad: badValues.length, traces, sdk };
}
