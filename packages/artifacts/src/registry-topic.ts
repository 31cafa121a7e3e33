import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import type { Logger } from 'pino';
import {
  avroType,
  createRegistry,
  AvroDecoder,
  encodeFramed,
  loadSchema,
  registerAvro,
  registryFetcher,
  valueSubject,
} from '@dlog/contracts';
import { ArtifactState, registrationDifferences, registrationKey, type ArtifactEventRecord } from './artifact-state.js';

export interface RegistryFollower {
  readonly state: ArtifactState;
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
}): Promise<RegistryFollower> {
  const state = new ArtifactState();
  const decoder = new AvroDecoder<ArtifactEventRecord>(artifactType, registryFetcher(opts.schemaRegistryUrl));
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
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      await decoder.prepare(batch.messages.map((m) => m.value));
      for (const m of batch.messages) {
        const decoded = decoder.decode(m.value);
        if (!decoded.ok) {
          opts.log.warn({ topic: opts.topic, partition: batch.partition, offset: m.offset, reason: decoded.reason }, 'unreadable registration skipped');
          continue;
        }
        const event = decoded.value;
        const outcome = state.apply(event);
        if (outcome === 'conflict') opts.log.warn({ ref: event.ref, digest: event.digest }, 'conflicting registration ignored: versions are immutable');
        opts.onEvent?.(event, outcome);
      }
      const last = batch.messages.length ? BigInt(batch.lastOffset()) : -1n;
      if (pending.has(batch.partition) && last >= (targets.get(batch.partition) ?? 0n)) {
        pending.delete(batch.partition);
        if (pending.size === 0) caughtUp();
      }
    },
  });
  const timeout = opts.timeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ready,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Artifact registry ${opts.topic} not read to its end within ${timeout} ms`)), timeout);
      }),
    ]);
  } catch (err) {
    await consumer.disconnect();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (!opts.follow) {
    await consumer.disconnect();
    return { state, stop: async () => {} };
  }
  return { state, stop: () => consumer.disconnect() };
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
}): Promise<RegisterResult> {
  const { state } = await loadArtifactState({ kafka: opts.kafka, topic: opts.topic, schemaRegistryUrl: opts.schemaRegistryUrl, log: opts.log });
  const conflicts = opts.events.filter((e) => state.check(e) === 'conflict').map((e) => conflictWith(state.get(e.ref)!, e));
  if (conflicts.length > 0) throw new RegistrationConflictError(conflicts);
  const fresh = opts.events.filter((e) => state.check(e) === 'added');
  const inManifest = new Set(opts.events.map((e) => e.ref));
  // Only of what this run writes: an unchanged registration was warned of when it was written.
  const unknownParents = fresh.flatMap((e) => e.parents.filter((p) => !inManifest.has(p) && !state.get(p)).map((parent) => ({ ref: e.ref, parent })));
  const result = { added: fresh.map((e) => e.ref), unchanged: opts.events.filter((e) => state.check(e) === 'unchanged').map((e) => e.ref), unknownParents };
  if (fresh.length === 0) return result;
  const registry = createRegistry(opts.schemaRegistryUrl);
  const id = await registerAvro(registry, opts.schemaRegistryUrl, valueSubject(opts.topic), loadSchema('artifact-event'));
  const producer = opts.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    await producer.send({
      topic: opts.topic,
      acks: -1,
      messages: fresh.map((e) => ({ key: registrationKey(e), value: encodeFramed(artifactType, id, e) })),
    });
  } finally {
    await producer.disconnect();
  }
  const { state: after } = await loadArtifactState({ kafka: opts.kafka, topic: opts.topic, schemaRegistryUrl: opts.schemaRegistryUrl, log: opts.log });
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

function conflictWith(kept: ArtifactEventRecord, refused: ArtifactEventRecord): RegistrationConflict {
  if (kept.digest !== refused.digest) return { ref: refused.ref, registered: kept.digest, given: refused.digest };
  return { ref: refused.ref, registered: kept.digest, given: refused.digest, fields: registrationDifferences(kept, refused) };
}
