import { randomUUID } from 'node:crypto';
import type { Kafka, Message, Producer } from 'kafkajs';
import type { Logger } from 'pino';
import {
  avroType,
  createRegistry,
  registryEndpoint,
  AvroDecoder,
  encodeFramed,
  loadSchema,
  registerAvro,
  registryFetcher,
  valueSubject,
  type DecodeFailure,
} from '@dlog/contracts';
import { chunkMessages } from '@dlog/kafka';
import { ArtifactState, registrationDifferences, registrationKey, type ArtifactEventRecord } from './artifact-state.js';

export interface RegistryFollowerStats {
  /** Registrations read (each time read: a restarted follower reads them again). */
  read: number;
  /** Registrations that cannot be read, ever, and were skipped: by reason. */
  skipped: number;
  skippedBy: Partial<Record<DecodeFailure, number>>;
  /** Batches given back to be read again: their schema not (yet) served, or the registry not answering. */
  retried: number;
  /** Registrations ignored because an earlier one holds their version (refused when written). */
  conflicts: number;
  /** Where the first registrations skipped as `unknown_schema_id` are, with their Kafka key (which names their ref). */
  unserved: { partition: number; offset: string; key: string }[];
}

export interface RegistryFollower {
  readonly state: ArtifactState;
  readonly stats: RegistryFollowerStats;
  stop(): Promise<void>;
}

const artifactType = avroType('artifact-event');


/**
 * Rebuilds the registry from the compacted topic and resolves once it has read up to the end
 * offsets taken at start; with `follow`, it keeps applying new registrations afterwards. Reads
 * with a throwaway group and never commits: every start replays the whole (compacted) history.
 */
export async function loadArtifactState(opts: {
  kafka: Kafka;
  topic: string;
  schemaRegistryUrl: string;
  log: Logger;
  follow?: boolean;
  timeoutMs?: number;
  onEvent?: (event: ArtifactEventRecord, outcome: string) => void;
  /** How long a registration whose schema the registry does not serve is waited for before it is skipped. */
  unknownSchemaGraceMs?: number;
}): Promise<RegistryFollower> {
  const state = new ArtifactState();
  const stats: RegistryFollowerStats = { read: 0, skipped: 0, skippedBy: {}, retried: 0, conflicts: 0, unserved: [] };
  // Conflicts in the history are old news, refused when they were written: one line for them once
  // caught up, not a warning each at every start (and in every `dlog register` run's output).
  let live = false;
  const graceMs = opts.unknownSchemaGraceMs ?? 30_000;
  // An unknown id is asked again at every attempt (TTL 0): the wait between attempts paces it.
  const decoder = new AvroDecoder<ArtifactEventRecord>(artifactType, registryFetcher(opts.schemaRegistryUrl), 0);
  const registryBase = registryEndpoint(opts.schemaRegistryUrl).base;
  const admin = opts.kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(opts.topic);
  await admin.disconnect();
  const pending = new Set(ends.filter((p) => BigInt(p.high) > BigInt(p.low)).map((p) => p.partition));
  const targets = new Map(ends.map((p) => [p.partition, BigInt(p.high) - 1n]));

  const consumer = opts.kafka.consumer({ groupId: `dlog-artifacts-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic: opts.topic, fromBeginning: true });
  let caughtUp!: () => void;
  const ready = new Promise<void>((resolve) => (caughtUp = resolve));
  if (pending.size === 0) caughtUp();
  /** Why each partition's last batch was given back: what a load that runs out of time failed on. */
  const failures = new Map<number, string>();
  let stopping = false;
  /** Schema id → when a registration written with it was first found unserved: its grace runs once, not per batch. */
  const unservedSince = new Map<number, number>();
  const unservedReported = new Set<number>();
  /** Offset of the last record each partition's reading went past, for a load that runs out of time. */
  const reached = new Map<number, bigint>();
  const passed = (partition: number, last: bigint) => {
    reached.set(partition, last);
    if (pending.has(partition) && last >= (targets.get(partition) ?? 0n)) {
      pending.delete(partition);
      if (pending.size === 0) caughtUp();
    }
  };
  // A fetch that holds only an aborted transaction and its marker (a transactional writer that
  // gave up: `dlog dlq replay` aborts on any failure) reaches no eachBatch: kafkajs filters it out,
  // moves on and reports the batch only as an event. Without this, an aborted transaction at the
  // end of the topic left every start waiting for a record it would never be handed.
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    if (payload.topic === opts.topic && payload.batchSize === 0) passed(payload.partition, BigInt(payload.lastOffset));
  });
  await consumer.run({
    autoCommit: false,
    // The batch is retried here, with heartbeats, not thrown back to kafkajs: after its retries
    // kafkajs restarts the consumer, which (this group commits nothing) reads the whole topic
    // again, every ten seconds while the cause lasts; and a connection error it does not retry at
    // all, leaving the follower stopped with no word.
    eachBatch: async ({ batch, heartbeat, isRunning, isStale }) => {
      const values = batch.messages.map((m) => m.value);
      let decoded: { m: (typeof batch.messages)[number]; d: ReturnType<typeof decoder.decode> }[] = [];
      for (let attempt = 0; ; attempt++) {
        if (stopping || !isRunning() || isStale()) return;
        let why: string;
        try {
          await decoder.prepare(values);
          decoded = batch.messages.map((m) => ({ m, d: decoder.decode(m.value) }));
          // Before any of the batch is applied, so waiting for it applies nothing twice.
          // Registrations whose schema is not served and still within its grace. A registry replica
          // lagging has caught up by then; one that never will would hold every registration
          // behind it, and every start, for good: past its grace an id's registrations are skipped
          // and counted, in this batch and every later one.
          const now = Date.now();
          let waiting: (typeof decoded)[number] | undefined;
          for (const x of decoded) {
            if (x.d.ok || x.d.reason !== 'unknown_schema_id' || !x.m.value) continue;
            const id = x.m.value.readInt32BE(1);
            const since = unservedSince.get(id) ?? now;
            unservedSince.set(id, since);
            if (now - since < graceMs) {
              waiting = x;
              break;
            }
          }
          if (!waiting) {
            for (const { m, d } of decoded) {
              if (d.ok || d.reason !== 'unknown_schema_id' || !m.value || unservedReported.has(m.value.readInt32BE(1))) continue;
              // Once an id: every later registration written with it is skipped too (and counted).
              unservedReported.add(m.value.readInt32BE(1));
              opts.log.error({ topic: opts.topic, partition: batch.partition, offset: m.offset, graceMs }, `registration skipped: ${d.message} at ${registryBase}; point SCHEMA_REGISTRY_URL at the registry its writer registered the schema in`);
            }
            break;
          }
          why = `${!waiting.d.ok ? waiting.d.message : ''} at ${registryBase}, so the registration at partition ${batch.partition} offset ${waiting.m.offset} cannot be read; point SCHEMA_REGISTRY_URL at the registry its writer registered the schema in`;
        } catch (err) {
          why = `the schema registry at ${registryBase} failed: ${(err as Error).message}`;
        }
        stats.retried++;
        failures.set(batch.partition, why);
        if (attempt % 10 === 0) opts.log.warn({ topic: opts.topic, partition: batch.partition, attempt }, `registrations not read yet, reading them again: ${why}`);
        await new Promise((r) => setTimeout(r, Math.min(5_000, 200 * 2 ** Math.min(attempt, 5))));
        await heartbeat();
      }
      for (const { m, d } of decoded) {
        stats.read++;
        if (!d.ok) {
          // Not a framed registration, or one no schema can turn into this contract's: reading it
          // again would read the same.
          stats.skipped++;
          stats.skippedBy[d.reason] = (stats.skippedBy[d.reason] ?? 0) + 1;
          if (d.reason === 'unknown_schema_id' && stats.unserved.length < 1_000) stats.unserved.push({ partition: batch.partition, offset: m.offset, key: m.key?.toString() ?? '' });
          opts.log.warn({ topic: opts.topic, partition: batch.partition, offset: m.offset, reason: d.reason, error: d.message }, 'unreadable registration skipped');
          continue;
        }
        const event = d.value;
        const outcome = state.apply(event);
        if (outcome === 'conflict') {
          stats.conflicts++;
          if (live) opts.log.warn({ ref: event.ref, digest: event.digest }, 'conflicting registration ignored: versions are immutable');
        }
        opts.onEvent?.(event, outcome);
      }
      failures.delete(batch.partition);
      if (batch.messages.length) passed(batch.partition, BigInt(batch.lastOffset()));
    },
  });
  const timeout = opts.timeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ready,
      new Promise((_, reject) => {
        timer = setTimeout(() => {
          const why = [...failures.values()];
          // No failure to name: say how far each partition got, against the end it must reach.
          const where = [...pending].map((p) => `partition ${p} read to offset ${reached.get(p) ?? 'none'} of ${targets.get(p)}`).join(', ');
          reject(new Error(`Artifact registry ${opts.topic} not read to its end within ${timeout} ms${why.length ? `: ${why.join('; ')}` : where ? ` (${where}; is the broker reachable?)` : ''}`));
        }, timeout);
      }),
    ]);
  } catch (err) {
    // kafkajs stops a consumer between two attempts at a batch, and it may be waiting out a
    // backoff of up to 10 s: the error is not held that long, the stop goes on behind it.
    stopping = true;
    const stopped = consumer.disconnect().catch((e: unknown) => opts.log.warn({ err: (e as Error).message }, 'registry reader did not stop cleanly'));
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 1_000).unref())]);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  live = true;
  if (stats.conflicts > 0) {
    opts.log.info({ topic: opts.topic, conflicts: stats.conflicts }, 'registrations in the history that an earlier one of their version overrules, ignored as when they were written (v_artifact_registrations lists them)');
  }
  if (!opts.follow) {
    stopping = true;
    await consumer.disconnect();
    return { state, stats, stop: async () => {} };
  }
  return {
    state,
    stats,
    stop: () => {
      stopping = true;
      return consumer.disconnect();
    },
  };
}

export interface RegistrationConflict {
  ref: string;
  /** Digest of the registration every reader keeps. */
  registered: string;
  /** Digest of the one refused. */
  given: string;
  /** With the same digest: what differs (parents, metadata, kind, uri ...). */
  fields?: string[];
}

export class RegistrationConflictError extends Error {
  constructor(
    readonly conflicts: RegistrationConflict[],
    /** Refused after it was written: another registration of the version came first in the log. */
    readonly lostRace = false,
    /**
     * After a lost race: the manifest's other artifacts, which were written with the refused ones
     * and are registered (every reader keeps them). Writing a manifest is not atomic across refs.
     */
    readonly written: string[] = [],
  ) {
    super(
      [
        ...conflicts.map((c) => {
          const what = c.fields?.length
            ? `digest ${c.registered} and other ${c.fields.join(', ')}`
            : `digest ${c.registered}`;
          const refused = c.fields?.length ? 'this registration' : c.given;
          return lostRace
            ? `${c.ref} was registered with ${what} by someone else at the same moment; it came first, so ${refused} is refused (every reader ignores it). Register it as a new version instead.`
            : `${c.ref} is already registered with ${what}; versions are immutable, so ${refused} is refused. Register a new version instead.`;
        }),
        ...(written.length ? [`Registered from the same manifest (written before the refusal, kept): ${written.join(', ')}`] : []),
      ].join('\n'),
    );
    this.name = 'RegistrationConflictError';
  }
}

export interface RegisterResult {
  added: string[];
  unchanged: string[];
  /**
   * Parents named by the registrations written (`added`) that neither the manifest nor the
   * registry holds: lineage shows them as `unknown` until they are registered (a typo never
   * resolves). Not refused, as a parent may be registered after its children.
   */
  unknownParents: { ref: string; parent: string }[];
}

/**
 * A registration the registry could not read (its schema not served here) may be the first of a
 * version this manifest registers: checking against the rest would let another digest through,
 * which every reader that can read the first then ignores, after `dlog register` said
 * "registered". Its Kafka key names its ref (`<ref>@...`, or the ref alone for the SDK's
 * environments), so only unread registrations of the manifest's refs stop it; one of another
 * version (an old record whose schema a registry lost) does not block every registration for good.
 */
function refuseUnread(stats: RegistryFollowerStats, refs: ReadonlySet<string>, topic: string, schemaRegistryUrl: string, outcome: string): void {
  // A ref may hold '@' itself (git://host/repo@commit): the key is tried against each ref whole.
  const mine = stats.unserved.filter((u) => refs.has(u.key) || [...refs].some((r) => u.key.startsWith(`${r}@`)));
  if (mine.length === 0) return;
  const where = mine.slice(0, 5).map((u) => `${u.key} at partition ${u.partition} offset ${u.offset}`).join('; ');
  throw new Error(
    `${mine.length} registration(s) of this manifest's versions on ${topic} were written with a schema the registry at ${registryEndpoint(schemaRegistryUrl).base} does not serve (${where}), ` +
      `so what they register is unknown and immutability cannot be checked: ${outcome}. ` +
      'Point SCHEMA_REGISTRY_URL at the registry their writer registered the schema in (or wait for a lagging replica), then run dlog register again.',
  );
}

/**
 * A registration that would make a version its own ancestor, as the path from it back to itself.
 * Causally impossible (an ancestor exists before what is made from it), so a typo; and since
 * versions never change, one written could never be undone.
 */
export function ancestryCycle(ref: string, parentsOf: (ref: string) => readonly string[] | undefined): string[] | undefined {
  // Iterative, each ancestor visited once, remembering only whom it was reached from: a lineage
  // thousands of generations deep (a dataset snapshotted hourly) overflowed a recursive walk.
  const from = new Map<string, string>();
  const stack = [ref];
  while (stack.length > 0) {
    const at = stack.pop()!;
    for (const parent of parentsOf(at) ?? []) {
      if (parent === ref) {
        const path = [parent];
        for (let x: string | undefined = at; x !== undefined; x = x === ref ? undefined : from.get(x)) path.push(x);
        return path.reverse();
      }
      if (from.has(parent)) continue;
      from.set(parent, at);
      stack.push(parent);
    }
  }
  return undefined;
}

/**
 * Registers artifacts: the same version registered again identically is a no-op; with another
 * digest, or the same digest and other parents, metadata, kind or uri, it is refused and nothing
 * of the manifest is written. Two registrations of one version
 * at the same moment both pass the check; the first in the log is the registration every reader
 * keeps, so the registry is read again after writing, and the other is refused then.
 */
export async function registerArtifacts(opts: {
  kafka: Kafka;
  topic: string;
  schemaRegistryUrl: string;
  log: Logger;
  events: ArtifactEventRecord[];
  /** How long a registration whose schema the registry does not serve is waited for (30 s). */
  unknownSchemaGraceMs?: number;
}): Promise<RegisterResult> {
  const grace = opts.unknownSchemaGraceMs;
  const { state, stats } = await loadArtifactState({ kafka: opts.kafka, topic: opts.topic, schemaRegistryUrl: opts.schemaRegistryUrl, log: opts.log, unknownSchemaGraceMs: grace });
  const refs = new Set(opts.events.map((e) => e.ref));
  refuseUnread(stats, refs, opts.topic, opts.schemaRegistryUrl, 'nothing was written');
  const conflicts = opts.events.filter((e) => state.check(e) === 'conflict').map((e) => conflictWith(state.get(e.ref)!, e));
  if (conflicts.length > 0) throw new RegistrationConflictError(conflicts);
  const fresh = opts.events.filter((e) => state.check(e) === 'added');
  const inManifest = new Set(opts.events.map((e) => e.ref));
  const manifestParents = new Map(opts.events.map((e) => [e.ref, e.parents]));
  for (const e of fresh) {
    const cycle = ancestryCycle(e.ref, (ref) => state.get(ref)?.parents ?? manifestParents.get(ref));
    if (cycle) {
      throw new Error(`${e.ref} would be its own ancestor (${cycle.join(' → ')}): nothing was written. Versions never change, so a cycle could never be undone; fix the parents in the manifest.`);
    }
  }
  // Only of what this run writes: an unchanged registration was warned of when it was written.
  const unknownParents = fresh.flatMap((e) => e.parents.filter((p) => !inManifest.has(p) && !state.get(p)).map((parent) => ({ ref: e.ref, parent })));
  const result = { added: fresh.map((e) => e.ref), unchanged: opts.events.filter((e) => state.check(e) === 'unchanged').map((e) => e.ref), unknownParents };
  if (fresh.length === 0) return result;
  const registry = createRegistry(opts.schemaRegistryUrl);
  const id = await registerAvro(registry, opts.schemaRegistryUrl, valueSubject(opts.topic), loadSchema('artifact-event'));
  const producer = opts.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    await writeRegistrations(producer, opts.topic, fresh.map((e) => ({ key: registrationKey(e), value: encodeFramed(artifactType, id, e) })));
  } finally {
    await producer.disconnect();
  }
  const { state: after, stats: afterStats } = await loadArtifactState({ kafka: opts.kafka, topic: opts.topic, schemaRegistryUrl: opts.schemaRegistryUrl, log: opts.log, unknownSchemaGraceMs: grace });
  refuseUnread(afterStats, refs, opts.topic, opts.schemaRegistryUrl, `${fresh.map((e) => e.ref).join(', ')} written, but whether it is the registration readers keep is not known`);
  // Kept is ours, or one identical to it written at the same moment: either way what we meant.
  const lost = fresh.filter((e) => {
    const kept = after.get(e.ref);
    return !kept || (kept.event_id !== e.event_id && after.check(e) !== 'unchanged');
  });
  if (lost.length > 0) {
    const lostRefs = new Set(lost.map((e) => e.ref));
    throw new RegistrationConflictError(
      lost.map((e) => (after.get(e.ref) ? conflictWith(after.get(e.ref)!, e) : { ref: e.ref, registered: '(none)', given: e.digest })),
      true,
      fresh.filter((e) => !lostRefs.has(e.ref)).map((e) => e.ref),
    );
  }
  return result;
}

/**
 * Writes registrations in sends the broker takes whatever their number (one send of 2,200 was
 * past its default 1 MiB). Sends are not atomic together; a failure says how many were written,
 * and registering the manifest again writes only the rest, as those are no-ops then.
 */
export async function writeRegistrations(producer: Pick<Producer, 'send'>, topic: string, messages: Message[]): Promise<void> {
  let written = 0;
  for (const part of chunkMessages(messages)) {
    try {
      await producer.send({ topic, acks: -1, messages: part });
    } catch (err) {
      throw new Error(
        `Writing registrations to ${topic} failed after ${written} of ${messages.length} were written (${(err as Error).message}). Register the manifest again: those written are no-ops, the rest is written.`,
        { cause: err },
      );
    }
    written += part.length;
  }
}

function conflictWith(kept: ArtifactEventRecord, refused: ArtifactEventRecord): RegistrationConflict {
  if (kept.digest !== refused.digest) return { ref: refused.ref, registered: kept.digest, given: refused.digest };
  return { ref: refused.ref, registered: kept.digest, given: refused.digest, fields: registrationDifferences(kept, refused) };
}
