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

/** One event of an endpoint's deployment history in one environment, oldest first. */
export interface DeploymentHistoryEvent {
  action: string;
  model_ref: string;
  traffic_share: number;
  /** Epoch milliseconds. */
  ts: number;
  model_digest: string | null;
  image_ref: string | null;
  config_ref: string | null;
}

export interface ServingNow {
  /** Model ref → share of the traffic; a version left at share 0 (by a canary at share 1) serves nothing and is not listed. */
  serving: Map<string, number>;
  /** Every model ref the history names, first seen first. */
  history: string[];
  /** The refs that once took all of the traffic: the versions a rollback can return to, unlike a canary that never did. */
  servedWhole: Set<string>;
  events: DeploymentHistoryEvent[];
}

/** '' is how ClickHouse stores a null string of the contract. */
const optional = (v: unknown): string | null => (v === null || v === undefined || v === '' ? null : String(v));

/**
 * What serves an endpoint in an environment now, by replaying its deployment events: model ref →
 * share. Another environment's endpoint of the same name is another history: a staging deploy
 * once made a prod rollback's "previous" the staging version. Events that named no environment
 * (recorded before environments were given) belong to every environment's history.
 */
export async function servingNow(q: AuditQuery, endpoint: string, environment = ''): Promise<ServingNow> {
  const rows = await q(
    `SELECT toString(action) AS action, model_ref, traffic_share, toUnixTimestamp64Milli(ts) AS ts_ms, model_digest, image_ref, config_ref
     FROM v_deployments WHERE endpoint = {endpoint:String} AND environment IN ({environment:String}, '') ORDER BY ts, event_id`,
    { endpoint, environment },
  );
  const events: DeploymentHistoryEvent[] = rows.map((r) => ({
    action: String(r.action),
    model_ref: String(r.model_ref),
    traffic_share: num(r.traffic_share),
    ts: num(r.ts_ms),
    model_digest: optional(r.model_digest),
    image_ref: optional(r.image_ref),
    config_ref: optional(r.config_ref),
  }));
  let serving = new Map<string, number>();
  const servedWhole = new Set<string>();
  for (const { action, model_ref: ref, traffic_share: share } of events) {
    if (action === 'canary') {
      const rest = Math.max(0, 1 - share);
      const others = [...serving].filter(([k]) => k !== ref);
      const total = others.reduce((s, [, v]) => s + v, 0);
      serving = new Map(others.map(([k, v]) => [k, total > 0 ? (v / total) * rest : 0]));
      serving.set(ref, share);
    } else {
      serving = share >= 1 || action === 'rollback' ? new Map([[ref, 1]]) : new Map([...serving, [ref, share]]);
    }
    for (const [k, v] of serving) if (!(v > 0)) serving.delete(k);
    if (serving.get(ref) === 1) servedWhole.add(ref);
  }
  return { serving, history: [...new Set(events.map((e) => e.model_ref))], servedWhole, events };
}

/**
 * The time of a new event after `events`. Readers order an endpoint's history by ts, and ts is the
 * clock of whoever runs dlog: with a clock 2 minutes fast, one operator's canary stayed after a
 * rollback someone else recorded a minute later. So a new event is never stamped before the last
 * one it follows (1 ms after it when this clock is behind). A clock far ahead still moves the
 * events after its own later, by as much as it was ahead; ordering by the broker's time instead
 * would need the sink to store it (a migration).
 */
function nextTs(events: DeploymentHistoryEvent[], now = Date.now()): number {
  const last = events.at(-1)?.ts;
  return last !== undefined && Number.isFinite(last) ? Math.max(now, last + 1) : now;
}

/** A word as a POSIX shell reads it back unchanged, so a suggested command can be typed as printed. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

const label = (ref: string) => ref.replace('registry://models/', '');

/** The deploy `o` asked for, in `environment`: what a refusal tells the person to type instead. */
function deployCommand(o: DeployOptions, environment: string): string {
  const words = ['dlog', 'deploy', '--endpoint', o.endpoint, ...(environment ? ['--environment', environment] : []), '--model', modelLabel(o.model)];
  if (o.canary) words.push('--canary');
  if (o.share !== undefined) words.push('--share', String(o.share));
  if (o.image !== undefined) words.push('--image', o.image);
  if (o.configRef !== undefined) words.push('--config', o.configRef);
  if (o.reason !== undefined) words.push('--reason', o.reason);
  return words.map(shellWord).join(' ');
}

/** A rollback of `o`'s endpoint to `toLabel` (name:version) in `environment`, with `o`'s reason. */
function rollbackCommand(o: RollbackOptions, environment: string, toLabel: string): string {
  return ['dlog', 'rollback', '--endpoint', o.endpoint, ...(environment ? ['--environment', environment] : []), '--to', toLabel, '--reason', o.reason].map(shellWord).join(' ');
}

/** The environments an endpoint's deployments were recorded in, sorted; '' stands for those recorded without one. */
async function environmentsOf(q: AuditQuery, endpoint: string): Promise<string[]> {
  return (await q('SELECT DISTINCT environment FROM v_deployments WHERE endpoint = {endpoint:String} ORDER BY environment', { endpoint })).map((e) => String(e.environment));
}

/**
 * The environment a deploy or rollback is about: the one given; else the endpoint's only named
 * one, when every deployment named it; else none (''), when none ever named one. Otherwise the
 * person must say which: prod's history recorded without --environment next to one staging deploy
 * once had the next prod rollback filed under staging, rolling back "from" staging's version.
 * `retype` is the command to suggest, in a given environment.
 */
async function environmentOf(q: AuditQuery, endpoint: string, given: string | undefined, command: string, retype: (environment: string) => string): Promise<string> {
  if (given !== undefined) return given;
  const all = await environmentsOf(q, endpoint);
  const named = all.filter((e) => e !== '');
  const unnamed = all.includes('');
  if (named.length === 0) return '';
  if (named.length === 1 && !unnamed) return named[0]!;
  // Events without an environment are part of every environment's history, so naming theirs
  // (prod, most often) goes on with it; prod is offered unless it is listed already.
  const choices = unnamed && !named.includes('prod') ? [...named, 'prod'] : named;
  throw new AuditInputError(
    `${endpoint} has deployments in several environments (${named.join(', ')}${unnamed ? ', and some recorded without --environment' : ''}), each with its own history: say which this ${command} is about.` +
      (unnamed ? ` Those recorded without --environment count in every environment's history; give the environment they were in to go on with it.` : '') +
      `\nType one of:\n${choices.map((e) => `  ${retype(e)}`).join('\n')}`,
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
  const environment = await environmentOf(q, o.endpoint, o.environment, 'deploy', (env) => deployCommand(o, env));
  const { serving, events } = await servingNow(q, o.endpoint, environment);
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
    ts: nextTs(events),
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
  const environment = await environmentOf(q, o.endpoint, o.environment, 'rollback', (env) => rollbackCommand(o, env, modelLabel(o.to)));
  const { serving, history, servedWhole, events } = await servingNow(q, o.endpoint, environment);
  const where = environment ? `${o.endpoint} in ${environment}` : o.endpoint;
  if (history.length === 0) {
    // A mistyped --environment (prd for prod) finds no history; naming the endpoint's
    // environments says what to type, where listing endpoints named this very one.
    const envs = environment ? (await environmentsOf(q, o.endpoint)).filter((e) => e !== '') : [];
    if (envs.length > 0) {
      throw new AuditInputError(
        `No deployment was recorded for endpoint ${JSON.stringify(o.endpoint)} in environment ${JSON.stringify(environment)}; its deployments are in ${envs.join(', ')}.` +
          `\nType ${envs.length > 1 ? 'one of' : 'instead'}:\n${envs.map((e) => `  ${rollbackCommand(o, e, modelLabel(o.to))}`).join('\n')}`,
      );
    }
    const eps = await q('SELECT endpoint, count() AS events FROM v_deployments GROUP BY endpoint ORDER BY endpoint');
    throw new AuditInputError(
      `No deployment was recorded for endpoint ${JSON.stringify(o.endpoint)}.` +
        (eps.length ? ` Endpoints with deployments: ${eps.map((e) => String(e.endpoint)).join(', ')}.` : ' Record one with dlog deploy --endpoint <e> --model <name:version>.'),
    );
  }
  if (!history.includes(ref)) {
    throw new AuditInputError(
      `${modelLabel(o.to)} never served ${where}; a rollback returns to a version that did. Versions that served it:\n` +
        history.map((h) => `  ${label(h)}`).join('\n') +
        `\nType e.g. ${rollbackCommand(o, environment, label(history[0]!))}`,
    );
  }
  const share = serving.get(ref);
  if (share !== undefined && share < 1 && !servedWhole.has(ref)) {
    // "Rolling back" to the canary would record it taking all of the traffic: a promotion filed
    // as a rollback, with the stable version as what failed.
    const stable = [...serving.entries()].filter(([k]) => k !== ref).sort((a, b) => Number(servedWhole.has(b[0])) - Number(servedWhole.has(a[0])) || b[1] - a[1])[0]?.[0];
    throw new AuditInputError(
      `${modelLabel(o.to)} is the canary on ${where} (${(share * 100).toFixed(1)}% of its traffic), not a version it can return to.` +
        `\nTo promote the canary to all of the traffic, type:\n  ${deployCommand({ endpoint: o.endpoint, model: o.to, actor: o.actor }, environment)}` +
        (stable ? `\nTo roll the canary back, type:\n  ${rollbackCommand(o, environment, label(stable))}` : ''),
    );
  }
  const bad = [...serving.entries()].filter(([k]) => k !== ref).sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
  if (!bad && share === 1) throw new AuditInputError(`${modelLabel(o.to)} already serves all of ${o.endpoint}: nothing to roll back.`);
  // The record is immutable and read on its own (scopes, lineage): it carries what the version
  // returned to was deployed with, from its last deploy or canary in this history.
  const deployed = events.filter((e) => e.model_ref === ref && e.action !== 'rollback').at(-1);
  return {
    event_id: randomUUID(),
    action: 'rollback',
    endpoint: o.endpoint,
    environment: environment || null,
    model_ref: ref,
    model_digest: deployed?.model_digest ?? null,
    previous_model_ref: bad,
    image_ref: deployed?.image_ref ?? null,
    config_ref: deployed?.config_ref ?? null,
    traffic_share: 1,
    ts: nextTs(events),
    actor: o.actor,
    reason: o.reason,
  };
}

export function publishDeployment(config: Config, log: Logger, e: DeploymentEvent): Promise<void> {
  return publishEvents(config, log, 'deployments.v1', 'deployment-event', [{ key: e.endpoint, value: e }]);
}

/** Ids per message at most: about 200 KB of ids as the SDK makes them (UUIDs). */
export const idsPerPart = 5_000;
/**
 * Bytes of ids per message at most, well below Kafka's default 1 MB message limit with room for
 * the reason, filter and scope. Event ids are the producer's and may be long: cut by count
 * alone, 5,000 ids of 300 characters made a record the broker refused, and nothing was recorded.
 */
export const idBytesPerPart = 600_000;

/** The ids in parts of at most idsPerPart ids and idBytesPerPart bytes (each part holds one id at least). */
export function idParts(ids: readonly string[], maxIds = idsPerPart, maxBytes = idBytesPerPart): string[][] {
  const parts: string[][] = [];
  let part: string[] = [];
  let bytes = 0;
  for (const id of ids) {
    // Avro writes a string as its UTF-8 bytes after a length of up to 5 bytes.
    const size = Buffer.byteLength(id) + 5;
    if (part.length > 0 && (part.length >= maxIds || bytes + size > maxBytes)) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(id);
    bytes += size;
  }
  if (part.length > 0 || parts.length === 0) parts.push(part);
  return parts;
}

export interface RemediationPlan {
  remediation_id: string;
  scope: ScopeResult;
  events: RemediationEvent[];
}

export function publishRemediation(config: Config, log: Logger, plan: RemediationPlan): Promise<void> {
  return publishEvents(config, log, 'remediations.v1', 'remediation-event', plan.events.map((e) => ({ key: e.remediation_id, value: e })));
}
