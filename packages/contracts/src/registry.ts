import { COMPATIBILITY, SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type { Schema } from 'avsc';

export type Compatibility = 'BACKWARD' | 'BACKWARD_TRANSITIVE' | 'FORWARD' | 'FORWARD_TRANSITIVE' | 'FULL' | 'FULL_TRANSITIVE' | 'NONE';

/**
 * The rule every contract is registered under: a new schema must read all data written before it,
 * and every earlier schema must read data written with it. The second half matters most on
 * `inference.raw`, where producers in any language register their own schemas and one gate, maybe
 * older, reads them all: under BACKWARD alone the registry took a producer schema without
 * `input_hash` or with a widened union, said nothing to that producer, and the gate dead-lettered
 * every event written with it. Our own contracts only ever add fields with defaults, which passes
 * both ways.
 */
export const defaultCompatibility: Compatibility = 'FULL_TRANSITIVE';

export class SchemaIncompatibleError extends Error {
  constructor(
    readonly subject: string,
    readonly detail: string,
  ) {
    super(`Schema change refused by the registry for subject ${subject}: ${detail}`);
    this.name = 'SchemaIncompatibleError';
  }
}

/** A registry URL without its `user:password@`, and the Basic authorization they stand for. */
export interface RegistryEndpoint {
  /** The URL to send requests to, without credentials or a trailing slash. */
  base: string;
  auth?: { username: string; password: string };
  /** Headers every request carries: the authorization, when there are credentials. */
  headers: Record<string, string>;
}

/**
 * Credentials ride in the URL through config and the SDK options (one value to pass around), and
 * are taken out here: Node's fetch refuses a URL holding them and would quote it, password and
 * all, in the error. They go as a Basic authorization header instead.
 */
export function registryEndpoint(url: string): RegistryEndpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { base: url.replace(/\/$/, ''), headers: {} };
  }
  if (parsed.username === '' && parsed.password === '') return { base: url.replace(/\/$/, ''), headers: {} };
  const username = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  parsed.username = '';
  parsed.password = '';
  return {
    base: parsed.toString().replace(/\/$/, ''),
    auth: { username, password },
    headers: { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` },
  };
}

export function createRegistry(url: string): SchemaRegistry {
  const { base, auth } = registryEndpoint(url);
  return new SchemaRegistry({ host: base, clientId: 'decision-log', ...(auth ? { auth } : {}) });
}

/**
 * Sets the subject's compatibility rule explicitly before registering: registries differ in what
 * they report for a subject without its own rule (Apicurio says NONE even under a global rule),
 * and the client refuses to register when the reported level differs from the one it expects.
 */
export async function setCompatibility(url: string, subject: string, level: Compatibility): Promise<void> {
  const { base, headers } = registryEndpoint(url);
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(`${base}/config/${encodeURIComponent(subject)}`, {
      method: 'PUT',
      headers: { ...headers, 'content-type': 'application/vnd.schemaregistry.v1+json' },
      body: JSON.stringify({ compatibility: level }),
      signal: AbortSignal.timeout(10_000),
    }).catch((err: unknown) => {
      // fetch says only "fetch failed": name the registry (without credentials) and what to do.
      const c = (err as { cause?: { code?: string; message?: string } }).cause;
      const cause = c?.code ?? c?.message ?? (err as Error).message;
      throw new Error(`The schema registry at ${base} did not answer (${cause}). Start the local stack (npm run dlog -- stack up), or set SCHEMA_REGISTRY_URL to yours.`, { cause: err });
    });
    if (res.ok) return;
    const body = await res.text();
    // Two processes setting a new subject's rule at once (two replicas starting on a fresh
    // cluster): Apicurio creates the rule for one and answers the other 409 "already exists".
    // Setting it again updates the rule that now exists.
    if (res.status === 409 && attempt < 5) {
      await new Promise((r) => setTimeout(r, 20 * attempt));
      continue;
    }
    throw new Error(`Setting compatibility ${level} on ${subject} failed: HTTP ${res.status} ${body}`);
  }
}

/** Registers an Avro schema under a subject with its rule; returns the schema id for encoding. */
export async function registerAvro(
  registry: SchemaRegistry,
  url: string,
  subject: string,
  schema: Schema,
  compatibility: Compatibility = defaultCompatibility,
  registerTimeoutMs = 30_000,
): Promise<number> {
  await setCompatibility(url, subject, compatibility);
  let timer: NodeJS.Timeout | undefined;
  try {
    // The client has no deadline of its own: a registry that takes the connection and never
    // answers held an SDK's first send (and so everything after it) for the life of the process.
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`The schema registry at ${registryEndpoint(url).base} did not answer registering ${subject} within ${registerTimeoutMs / 1000} s`)), registerTimeoutMs);
    });
    const { id } = await Promise.race([
      registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject, compatibility: COMPATIBILITY[compatibility] }),
      deadline,
    ]);
    return id;
  } catch (err) {
    const status = (err as { status?: number }).status;
    if (status === 409) throw new SchemaIncompatibleError(subject, (err as Error).message);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}


/** Subject for a topic's values (Confluent TopicNameStrategy). */
export function valueSubject(topic: string): string {
  return `${topic}-value`;
}
