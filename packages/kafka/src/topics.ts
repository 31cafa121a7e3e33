import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import kafkajs, { type Admin, type Kafka } from 'kafkajs';

// kafkajs is CommonJS: its enums come through the default export.
const { ConfigResourceTypes } = kafkajs;
import { parse } from 'yaml';
import { z } from 'zod';

const topicSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/),
    partitions: z.number().int().positive().max(1000),
    doc: z.string(),
    config: z.record(z.string(), z.string()).default({}),
  })
  .strict();

const fileSchema = z.object({ topics: z.array(topicSchema).min(1) }).strict();

export type TopicDefinition = z.infer<typeof topicSchema>;

export const defaultTopicsFile = fileURLToPath(new URL('../../../infra/kafka/topics.yaml', import.meta.url));

export function loadTopicDefinitions(file = defaultTopicsFile): TopicDefinition[] {
  const parsed = fileSchema.safeParse(parse(readFileSync(file, 'utf8')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`Invalid topic definitions in ${file} at ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data.topics;
}

/** The same definitions under a prefix (DLOG_TOPIC_PREFIX): several pipelines on one cluster. */
export function withPrefix(topics: TopicDefinition[], prefix: string): TopicDefinition[] {
  return prefix ? topics.map((t) => ({ ...t, name: prefix + t.name })) : topics;
}

/**
 * Creates the topics that are missing; existing ones are left as they are (their data is the
 * audit trail). Returns the names it created. `replicationFactor` -1 (the default) takes the
 * broker's `default.replication.factor`: a cluster of three keeps three copies where its operator
 * said so, a single local broker one. It was 1, whatever the cluster.
 */
export async function ensureTopics(admin: TopicAdmin, topics: TopicDefinition[], replicationFactor = -1, opts: { attempts?: number; delayMs?: number } = {}): Promise<string[]> {
  const attempts = opts.attempts ?? 8;
  const created: string[] = [];
  // Found missing on any attempt: a create whose answer was lost still needs its leaders.
  const waitFor = new Set<string>();
  for (let attempt = 1; ; attempt++) {
    try {
      const existing = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !existing.has(t.name));
      for (const t of missing) waitFor.add(t.name);
      if (missing.length > 0) {
        // false when another process created them first: theirs are ours too.
        await admin.createTopics({
          waitForLeaders: false,
          topics: missing.map((t) => ({
            topic: t.name,
            numPartitions: t.partitions,
            replicationFactor,
            configEntries: Object.entries(t.config).map(([name, value]) => ({ name, value })),
          })),
        });
        created.push(...missing.map((t) => t.name));
      }
      await repairShortfalls(admin, topics.filter((t) => existing.has(t.name))).catch((err: unknown) => {
        // Best effort: a principal without DescribeConfigs or AlterConfigs, or another process
        // repairing the same topic, must not stop a worker whose topics may be fine.
        process.emitWarning(`could not check or repair existing topics against their definitions: ${(err as Error).message}`, { code: 'DLOG_TOPIC_REPAIR' });
      });
      if (waitFor.size === 0) return [];
      // Until every partition of what was created has a leader. A broker that has just started
      // (KRaft) answers UNKNOWN_TOPIC_OR_PARTITION for a moment after creating a topic, and
      // kafkajs's own wait gave up on that at once: a worker starting with its broker failed.
      const meta = await admin.fetchTopicMetadata({ topics: [...waitFor] });
      const leaderless = meta.topics.flatMap((t) => t.partitions.filter((p) => p.leader < 0).map((p) => `${t.name}:${p.partitionId}`));
      if (leaderless.length > 0) throw Object.assign(new Error(`partitions without a leader yet: ${leaderless.join(', ')}`), { retriable: true });
      // The metadata names a leader a moment before that broker acts as one: its offsets were
      // then refused with NOT_LEADER_FOR_PARTITION, which kafkajs's fetchTopicOffsets does not
      // retry, and a worker reading them at start (the alerter's replay) failed its start.
      for (const name of waitFor) {
        try {
          await admin.fetchTopicOffsets(name);
        } catch (err) {
          const type = (err as { type?: string }).type;
          // (kafkajs retries UNKNOWN_TOPIC_OR_PARTITION itself; these two it gives up on at once.)
          if (type === 'NOT_LEADER_FOR_PARTITION' || type === 'LEADER_NOT_AVAILABLE') {
            throw Object.assign(new Error(`${name} has no leader answering yet (${type})`, { cause: err }), { retriable: true });
          }
          throw err;
        }
      }
      return [...new Set(created)];
    } catch (err) {
      if (attempt >= attempts || (err as { retriable?: unknown }).retriable !== true) throw err;
      await new Promise((r) => setTimeout(r, (opts.delayMs ?? 250) * attempt));
    }
  }
}

/** The admin calls ensureTopics makes (kafkajs's Admin has them). */
export type TopicAdmin = Pick<Admin, 'listTopics' | 'createTopics' | 'fetchTopicMetadata' | 'fetchTopicOffsets' | 'createPartitions' | 'describeConfigs' | 'alterConfigs'>;

/**
 * Topics that exist but fall short of their definition, made right where that loses nothing. A
 * broker with auto-creation on (the local stack's is) makes a topic some client names before the
 * workers define it: one partition, and the broker's delete policy. Such a topic grows to its
 * partitions (they only ever grow; a topic defined smaller than it is stays as it is), and one
 * defined as compacted that is not is given its definition's config: as it was, the registry's
 * registrations would have been deleted after the broker's retention.
 */
/** Kafka's DescribeConfigs source of a setting made on the topic itself (DYNAMIC_TOPIC_CONFIG). */
const topicOverride = 1;

async function repairShortfalls(admin: TopicAdmin, existing: TopicDefinition[]): Promise<void> {
  if (existing.length === 0) return;
  const meta = await admin.fetchTopicMetadata({ topics: existing.map((t) => t.name) });
  const counts = new Map(meta.topics.map((t) => [t.name, t.partitions.length]));
  const grow = existing.filter((t) => (counts.get(t.name) ?? t.partitions) < t.partitions);
  if (grow.length > 0) {
    await admin.createPartitions({ topicPartitions: grow.map((t) => ({ topic: t.name, count: t.partitions })) }).catch(async (err: unknown) => {
      // Two workers starting together both grow it; the second is told the count is invalid.
      const now = await admin.fetchTopicMetadata({ topics: grow.map((t) => t.name) });
      const short = now.topics.filter((t) => t.partitions.length < (grow.find((g) => g.name === t.name)?.partitions ?? 0));
      if (short.length > 0) throw err;
    });
  }
  // A topic defined with one partition is read in log order (the registry: the first
  // registration of a version wins); made with more (a broker whose num.partitions is above 1
  // auto-created it), that order is gone, and partitions never shrink: say so.
  for (const t of existing) {
    const n = counts.get(t.name) ?? t.partitions;
    if (t.partitions === 1 && n > 1) process.emitWarning(`${t.name} has ${n} partitions but is defined with 1: readers that rely on its log order (first registration wins) may disagree; recreate it with one`, { code: 'DLOG_TOPIC_PARTITIONS' });
  }
  const compacted = existing.filter((t) => t.config['cleanup.policy'] === 'compact');
  if (compacted.length === 0) return;
  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: compacted.map((t) => ({ type: ConfigResourceTypes.TOPIC, name: t.name })),
  });
  const byTopic = new Map(described.resources.map((r) => [r.resourceName, r.configEntries]));
  const wrong = compacted.filter((t) => !((byTopic.get(t.name) ?? []).find((e) => e.configName === 'cleanup.policy')?.configValue ?? '').split(',').includes('compact'));
  if (wrong.length === 0) return;
  // alterConfigs sets a topic's overrides as a whole: its own overrides are kept (an operator's
  // retention, say), the definition's laid over them.
  await admin.alterConfigs({
    validateOnly: false,
    resources: wrong.map((t) => {
      const own = (byTopic.get(t.name) ?? []).filter((e) => (e as { configSource?: number }).configSource === topicOverride && !e.isDefault && !e.isSensitive);
      const merged = new Map(own.map((e) => [e.configName, e.configValue]));
      for (const [name, value] of Object.entries(t.config)) merged.set(name, value);
      return { type: ConfigResourceTypes.TOPIC, name: t.name, configEntries: [...merged].map(([name, value]) => ({ name, value })) };
    }),
  });
}

/**
 * Ensures the pipeline's topics under a prefix: all of them, or only those named (without the
 * prefix). Returns the full names it created.
 */
export async function ensurePipelineTopics(kafka: Kafka, prefix: string, names?: string[]): Promise<string[]> {
  const wanted = names ? new Set(names) : undefined;
  const defs = loadTopicDefinitions().filter((t) => !wanted || wanted.has(t.name));
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await ensureTopics(admin, withPrefix(defs, prefix));
  } finally {
    await admin.disconnect();
  }
}

/**
 * Creates a worker's topics under the names it actually uses: each role's topic from the
 * definition of its default name (partitions, compaction, retention), whatever it is called.
 * Overridden names (tests, a second pipeline) would otherwise be left to the broker's
 * auto-creation, with its default settings, or to nobody.
 */
export async function ensureWorkerTopics<T extends { [K in keyof T]: string }>(kafka: Kafka, defaults: T, actual: T): Promise<string[]> {
  const defs = new Map(loadTopicDefinitions().map((d) => [d.name, d]));
  const wanted: TopicDefinition[] = [];
  for (const role of Object.keys(defaults) as (keyof T)[]) {
    const def = defs.get(defaults[role]);
    if (def) wanted.push({ ...def, name: actual[role] });
  }
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await ensureTopics(admin, wanted);
  } finally {
    await admin.disconnect();
  }
}

