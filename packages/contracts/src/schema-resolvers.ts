import avro, { type Type } from 'avsc';
import './avro-limits.js';
import { registryEndpoint } from './registry.js';

/**
 * Confluent-framed Avro → record, in our reader schema. Writer schemas are fetched from the
 * registry once per id (`prepare`, before a batch is decoded, so decoding itself is
 * synchronous) and resolved into the reader, so records from older producers get the reader's
 * defaults. Decoding never throws: bad bytes are a result the caller dead-letters.
 */

export type DecodeFailure = 'empty_message' | 'wrong_magic_byte' | 'unknown_schema_id' | 'incompatible_schema' | 'invalid_avro';

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; reason: DecodeFailure; message: string };

type Entry = { resolver: avro.Resolver; sameAsReader?: boolean } | { error: 'unknown_schema_id' | 'incompatible_schema'; message: string };

export type SchemaFetcher = (id: number) => Promise<string | undefined>;

/** What a decoder knows about a writer schema id; `undefined`: not prepared. */
export interface SchemaResolvers {
  get(id: number): Entry | undefined;
}

/** Confluent wire format: magic byte 0, the schema id as a big-endian int32, then the Avro body. */
let scratch = Buffer.allocUnsafe(256 * 1024);

export function encodeFramed(type: Type, id: number, value: unknown): Buffer {
  // Encoded straight behind the header in a reused buffer, then copied out once.
  for (;;) {
    const end = type.encode(value, scratch, 5);
    if (end >= 0) {
      scratch[0] = 0;
      scratch.writeInt32BE(id, 1);
      return Buffer.from(scratch.subarray(0, end));
    }
    // A negative result is how much was missing.
    scratch = Buffer.allocUnsafe(Math.max(scratch.length * 2, scratch.length - end + 5));
  }
}

export class AvroDecoder<T> implements SchemaResolvers {
  private readonly entries = new Map<number, Entry & { at: number }>();

  constructor(
    private readonly reader: Type,
    private readonly fetchSchema: SchemaFetcher,
    /** An unknown id is asked again after this long: a producer may register late. */
    private readonly unknownTtlMs = 30_000,
  ) {}

  get(id: number): Entry | undefined {
    return this.entries.get(id);
  }

  /** Fetches the writer schemas a batch of values uses. Registry outages throw (retriable). */
  async prepare(values: Iterable<Buffer | null>): Promise<void> {
    const now = Date.now();
    const missing = new Set<number>();
    for (const v of values) {
      if (!v || v.length < 5 || v[0] !== 0) continue;
      const id = v.readInt32BE(1);
      const e = this.entries.get(id);
      if (!e || ('error' in e && e.error === 'unknown_schema_id' && now - e.at > this.unknownTtlMs)) missing.add(id);
    }
    await Promise.all(
      [...missing].map(async (id) => {
        const text = await this.fetchSchema(id);
        if (text === undefined) {
          this.entries.set(id, { error: 'unknown_schema_id', message: `schema id ${id} is not in the registry`, at: now });
          return;
        }
        try {
          const writer = avro.Type.forSchema(JSON.parse(text) as avro.Schema);
          // Names match without their namespace, as Avro's own compatibility check has it: a
          // producer's copy of the contract under its own namespace was refused record by record.
          this.entries.set(id, { resolver: this.reader.createResolver(writer, { ignoreNamespaces: true }), sameAsReader: writer.equals(this.reader), at: now });
        } catch (err) {
          this.entries.set(id, {
            error: 'incompatible_schema',
            message: `schema id ${id} cannot be read as ${this.reader.name ?? 'the contract'}: ${(err as Error).message}`,
            at: now,
          });
        }
      }),
    );
  }

  /**
   * True when the value is framed with a prepared schema id whose schema is the reader's own
   * (same canonical form): its body can be read by anything that knows the contract.
   */
  writtenAsReader(value: Buffer | null): boolean {
    if (!value || value.length < 5 || value[0] !== 0) return false;
    const entry = this.entries.get(value.readInt32BE(1));
    return entry !== undefined && 'resolver' in entry && entry.sameAsReader === true;
  }

  decode(value: Buffer | null): DecodeResult<T> {
    if (!value || value.length === 0) return { ok: false, reason: 'empty_message', message: 'message has no value' };
    if (value.length < 5 || value[0] !== 0) {
      return { ok: false, reason: 'wrong_magic_byte', message: 'not Confluent-framed Avro (magic byte 0 and a 4-byte schema id)' };
    }
    const id = value.readInt32BE(1);
    const entry = this.entries.get(id);
    if (!entry) return { ok: false, reason: 'unknown_schema_id', message: `schema id ${id} was not prepared` };
    if ('error' in entry) return { ok: false, reason: entry.error, message: entry.message };
    try {
      const { value: decoded, offset } = this.reader.decode(value, 5, entry.resolver);
      if (offset !== value.length) {
        return { ok: false, reason: 'invalid_avro', message: `Avro body is truncated or has ${value.length - offset} trailing bytes` };
      }
      return { ok: true, value: decoded as T };
    } catch (err) {
      return { ok: false, reason: 'invalid_avro', message: (err as Error).message };
    }
  }
}

/** Fetches a schema's text by id from a Confluent-compatible registry; undefined on 404. */
export function registryFetcher(baseUrl: string): SchemaFetcher {
  const { base, headers } = registryEndpoint(baseUrl);
  return async (id) => {
    const res = await fetch(`${base}/schemas/ids/${id}`, { headers, signal: AbortSignal.timeout(10_000) });
    if (res.status === 404) return undefined;
    if (!res.ok) throw new Error(`Schema registry answered HTTP ${res.status} for schema id ${id}`);
    return ((await res.json()) as { schema: string }).schema;
  };
}

