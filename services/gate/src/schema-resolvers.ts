import avro, { type Type } from 'avsc';
import type { SchemaResolvers } from './decode.js';

type Entry = { resolver: unknown } | { error: 'unknown_schema_id' | 'incompatible_schema'; message: string };

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
            message: `schema id ${id} cannot be read as an inference event: ${(err as Error).message}`,
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
