import avro, { type Type } from 'avsc';

type Entry = { resolver: unknown } | { error: 'unknown_schema_id' | 'incompatible_schema'; message: string };

/** Resolves writer schema ids to resolvers into a reader schema; `undefined`: not prepared yet. */
export interface SchemaResolvers {
  get(id: number): Entry | undefined;
}

/** Confluent wire format: magic byte 0, the schema id as a big-endian int32, then the Avro body. */
export function encodeFramed(type: Type, id: number, value: unknown): Buffer {
  const body = type.toBuffer(value);
  const out = Buffer.allocUnsafe(body.length + 5);
  out[0] = 0;
  out.writeInt32BE(id, 1);
  body.copy(out, 5);
  return out;
}

/**
 * Decodes a framed value with the resolver prepared for its schema id. Throws when the id was
 * not prepared or is unknown: callers that must not throw check `get` first.
 */
export function decodeFramed<T>(type: Type, resolvers: SchemaResolvers, value: Buffer): T {
  if (value.length < 5 || value[0] !== 0) throw new Error('not Confluent-framed Avro');
  const entry = resolvers.get(value.readInt32BE(1));
  if (!entry || 'error' in entry) throw new Error(entry && 'error' in entry ? entry.message : `schema id ${value.readInt32BE(1)} not prepared`);
  return type.fromBuffer(value.subarray(5), entry.resolver as never) as T;
}

/**
 * Writer schema id → resolver into our reader type, fetched from the registry once per id. The
 * batch loop asks `prepare` for the ids a batch uses before it decodes, so decoding stays
 * synchronous; an id the registry does not know is remembered as unknown for a while only, so a
 * producer registering late is not dead-lettered forever.
 */
export class RegistrySchemaResolvers implements SchemaResolvers {
  private readonly entries = new Map<number, Entry & { at: number }>();

  constructor(
    private readonly reader: Type,
    private readonly fetchSchema: (id: number) => Promise<string | undefined>,
    private readonly unknownTtlMs = 30_000,
  ) {}

  get(id: number): Entry | undefined {
    return this.entries.get(id);
  }

  async prepare(ids: Iterable<number>): Promise<void> {
    const now = Date.now();
    const missing = [...new Set(ids)].filter((id) => {
      const e = this.entries.get(id);
      return !e || ('error' in e && e.error === 'unknown_schema_id' && now - e.at > this.unknownTtlMs);
    });
    await Promise.all(
      missing.map(async (id) => {
        const text = await this.fetchSchema(id);
        if (text === undefined) {
          this.entries.set(id, { error: 'unknown_schema_id', message: `schema id ${id} is not in the registry`, at: now });
          return;
        }
        try {
          const writer = avro.Type.forSchema(JSON.parse(text) as avro.Schema);
          this.entries.set(id, { resolver: this.reader.createResolver(writer), at: now });
        } catch (err) {
          this.entries.set(id, {
            error: 'incompatible_schema',
            message: `schema id ${id} cannot be read with the reader schema: ${(err as Error).message}`,
            at: now,
          });
        }
      }),
    );
  }
}

/** Fetches a schema's text by id from a Confluent-compatible registry; undefined on 404. */
export function registryFetcher(baseUrl: string): (id: number) => Promise<string | undefined> {
  return async (id) => {
    const res = await fetch(`${baseUrl.replace(/\/$/, '')}/schemas/ids/${id}`, { signal: AbortSignal.timeout(10_000) });
    if (res.status === 404) return undefined;
    if (!res.ok) throw new Error(`Schema registry answered HTTP ${res.status} for schema id ${id}`);
    return ((await res.json()) as { schema: string }).schema;
  };
}

/** Schema ids framed in a batch's Avro messages. */
export function framedIds(values: (Buffer | null)[]): number[] {
  const ids: number[] = [];
  for (const v of values) if (v && v.length >= 5 && v[0] === 0) ids.push(v.readInt32BE(1));
  return ids;
}
