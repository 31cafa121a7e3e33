import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '@dlog/config';
import {
  avroType,
  createRegistry,
  encodeFramed,
  loadSchema,
  registerAvro,
  valueSubject,
  type DeploymentEventRecord,
  type RemediationEventRecord,
  type SchemaName,
} from '@dlog/contracts';
import { chunkMessages } from '@dlog/kafka';
import { cliKafka, libraryLogOf } from './context.js';
import { AuditInputError, assertKnownModel, modelLabel, modelRef, num, type AuditQuery, type ModelId } from './audit-query.js';
import type { ScopeResult } from './scope.js';

/**
 * The events the audit commands append: deployments (deploy, canary, rollback) on
 * deployments.v1 and remediations on remediations.v1. Both are facts about decisions, never
 * edits of them; the sink lands them in ClickHouse like every other topic.
 */

export type DeploymentEvent = DeploymentEventRecord;
export type RemediationEvent = RemediationEventRecord;

/** Appends events of one contract to a pipeline topic (registered schema, Confluent framing). */
export async function publishEvents(config: Config, log: Logger, topicName: string, schema: SchemaName, events: { key: string; value: unknown }[]): Promise<void> {
  const topic = `${config.topicPrefix}${topicName}`;
  const url = config.schemaRegistryUrl;
  const id = await registerAvro(createRegistry(url), url, valueSubject(topic), loadSchema(schema));
  const type = avroType(schema);
  const kafka = cliKafka({ config, libraryLog: libraryLogOf(log) });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (const part of chunkMessages(events.map((e) => ({ key: e.key, value: encodeFramed(type, id, e.value) })))) {
      await producer.send({ topic, acks: -1, messages: part });
    }
  } finally {
    await producer.disconnect();
  }
}

/**
 * What serves an endpoint in an environment now, by replaying its deployment events: model ref →
 * share. Another environment's endpoint of the same name is another history: a staging deploy
 * once made a prod rollback's "previous" the staging version. Events that named no environment
 * (recorded before environments were given) belong to every environment's history.
 */
export async function servingNow(q: AuditQuery, endpoint: string, environment = ''): Promise<{ serving: Map<string, number>; history: string[] }> {
  const rows = await q(
    "SELECT toString(action) AS action, model_ref, traffic_share FROM v_deployments WHERE endpoint = {endpoint:String} AND environment IN ({environment:String}, '') ORDER BY ts, event_id",
    { endpoint, environment },
  );
  let serving = new Map<string, number>();
  for (const r of rows) {
    const ref = String(r.model_ref);
    const share = num(r.traffic_share);
    if (r.action === 'canary') {
      const rest = Math.max(0, 1 - share);
      const others = [...serving].filter(([k]) => k !== ref);
      const total = others.reduce((s, [, v]) => s + v, 0);
      serving = new Map(others.map(([k, v]) => [k, total > 0 ? (v / total) * rest : 0]));
      serving.set(ref, share);
    } else {
      serving = share >= 1 || r.action === 'rollback' ? new Map([[ref, 1]]) : new Map([...serving, [ref, share]]);
    }
  }
  return { serving, history: [...new Set(rows.map((r) => String(r.model_ref)))] };
}

/**
 * The environment a deploy or rollback is about: the one given; else the endpoint's only named
 * one; else none (''), when its deployments never named one. An endpoint deployed in several
 * named environments must be told which.
 */
async function environmentOf(q: AuditQuery, endpoint: string, given: string | undefined, command: string): Promise<string> {
  if (given !== undefined) return given;
  const envs = (await q("SELECT DISTINCT environment FROM v_deployments WHERE endpoint = {endpoint:String} AND environment != '' ORDER BY environment", { endpoint })).map((e) => String(e.environment));
  if (envs.length <= 1) return envs[0] ?? '';
  throw new AuditInputError(
    `${endpoint} has deployments in several environments (${envs.join(', ')}), each with its own history: say which.` +
      `\nType e.g. dlog ${command} --endpoint ${endpoint} --environment ${envs[0]} ...`,
  );
}

export interface DeployOptions {
  endpoint: string;
  model: ModelId;
  share?: number | undefined;
  canary?: boolean | undefined;
  environment?: string | undefined;
  image?: string | undefined;
  configRef?: string | undefined;
  reason?: string | undefined;
  actor: string;
}

/** Builds (and checks) a deploy or canary event; `publishDeployment` sends it. */
export async function planDeploy(q: AuditQuery, o: DeployOptions): Promise<DeploymentEvent> {
  if (!o.endpoint.trim()) throw new AuditInputError('--endpoint names the serving endpoint, e.g. --endpoint loan-api');
  const share = o.share ?? (o.canary ? 0.1 : 1);
  if (!(share > 0 && share <= 1)) throw new AuditInputError(`--share is the model's share of the endpoint's traffic, above 0 and at most 1 (got ${o.share}); e.g. --share 0.1 for a 10% canary.`);
  await assertKnownModel(q, o.model, 'deploy', { registered: true });
  const ref = modelRef(o.model);
  // The deployment record is immutable: it must carry the digest every reader keeps for the
  // version (v_artifacts: its first registration in the log), never a refused one.
  const digest = await q("SELECT digest FROM v_artifacts WHERE kind = 'model' AND ref = {ref:String}", { ref });
  const environment = await environmentOf(q, o.endpoint, o.environment, 'deploy');
  const { serving } = await servingNow(q, o.endpoint, environment);
  const previous = [...serving.entries()].filter(([k]) => k !== ref).sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
  return {
    event_id: randomUUID(),
    action: o.canary || share < 1 ? 'canary' : 'deploy',
    endpoint: o.endpoint,
    environment: environment || null,
    model_ref: ref,
    model_digest: digest[0] ? String(digest[0].digest) : null,
    previous_model_ref: previous,
    image_ref: o.image ?? null,
    config_ref: o.configRef ?? null,
    traffic_share: share,
    ts: Date.now(),
    actor: o.actor,
    reason: o.reason ?? null,
  };
}

export interface RollbackOptions {
  endpoint: string;
  to: ModelId;
  reason: string;
  actor: string;
  environment?: string | undefined;
}

export async function planRollback(q: AuditQuery, o: RollbackOptions): Promise<DeploymentEvent> {
  if (!o.reason.trim()) throw new AuditInputError('--reason is required for a rollback: the incident, alert id or ticket.');
  const ref = modelRef(o.to);
  const environment = await environmentOf(q, o.endpoint, o.environment, 'rollback');
  const { serving, history } = await servingNow(q, o.endpoint, environment);
  if (history.length === 0) {
    const eps = await q('SELECT endpoint, count() AS events FROM v_deployments GROUP BY endpoint ORDER BY endpoint');
    throw new AuditInputError(
      `No deployment was recorded for endpoint ${JSON.stringify(o.endpoint)}.` +
        (eps.length ? ` Endpoints with deployments: ${eps.map((e) => String(e.endpoint)).join(', ')}.` : ' Record one with dlog deploy --endpoint <e> --model <name:version>.'),
    );
  }
  if (!history.includes(ref)) {
    throw new AuditInputError(
      `${modelLabel(o.to)} never served ${o.endpoint}; a rollback returns to a version that did. Versions that served it:\n` +
        history.map((h) => `  ${h.replace('registry://models/', '')}`).join('\n') +
        `\nType e.g. dlog rollback --endpoint ${o.endpoint} --to ${history[0]!.replace('registry://models/', '')} --reason "..."`,
    );
  }
  const bad = [...serving.entries()].filter(([k]) => k !== ref).sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
  if (!bad && serving.get(ref) === 1) throw new AuditInputError(`${modelLabel(o.to)} already serves all of ${o.endpoint}: nothing to roll back.`);
  return {
    event_id: randomUUID(),
    action: 'rollback',
    endpoint: o.endpoint,
    environment: environment || null,
    model_ref: ref,
    model_digest: null,
    previous_model_ref: bad,
    image_ref: null,
    config_ref: null,
    traffic_share: 1,
    ts: Date.now(),
    actor: o.actor,
    reason: o.reason,
  };
}

export function publishDeployment(config: Config, log: Logger, e: DeploymentEvent): Promise<void> {
  return publishEvents(config, log, 'deployments.v1', 'deployment-event', [{ key: e.endpoint, value: e }]);
}

/** Ids per message: a part stays around 200 KB, far below Kafka's default 1 MB message limit. */
export const idsPerPart = 5_000;

export interface RemediationPlan {
  remediation_id: string;
  scope: ScopeResult;
  events: RemediationEvent[];
}

export function publishRemediation(config: Config, log: Logger, plan: RemediationPlan): Promise<void> {
  return publishEvents(config, log, 'remediations.v1', 'remediation-event', plan.events.map((e) => ({ key: e.remediation_id, value: e })));
}
