import avro from 'avsc';
import { avroType, AvroDecoder, loadSchema, type DecodeResult, type SchemaFetcher } from '@dlog/contracts';
import type { ArtifactEventRecord } from './artifact-state.js';

const artifactType = avroType('artifact-event');
const kindSchema = (loadSchema('artifact-event') as unknown as { fields: { name: string; type: { symbols: string[]; default?: string } }[] }).fields.find(
  (f) => f.name === 'kind',
)!.type;
/** The symbol a kind this reader does not know reads as: the enum's default in the contract. */
const defaultKind = kindSchema.default;
const knownKinds = new Set(kindSchema.symbols);

export type RegistrationRead = DecodeResult<ArtifactEventRecord> | { ok: false; reason: 'unknown_kind'; message: string };

/** A writer schema's kinds this reader does not know, and the writer's own type to read them by. */
interface NewerKinds {
  kinds: ReadonlySet<string>;
  writer: avro.Type;
}

function newerKindsOf(schemaText: string): NewerKinds | undefined {
  try {
    const writer = avro.Type.forSchema(JSON.parse(schemaText) as avro.Schema);
    const kind = (writer as avro.types.RecordType).field?.('kind')?.type;
    if (!(kind instanceof avro.types.EnumType)) return undefined;
    const kinds = new Set(kind.symbols.filter((s) => !knownKinds.has(s)));
    return kinds.size > 0 ? { kinds, writer } : undefined;
  } catch {
    return undefined; // the contract's decoder says what is wrong with it
  }
}

/**
 * Reads registrations with the contract, as AvroDecoder does, and refuses those of a kind this
 * reader does not know. A writer schema that appended a kind resolves through the enum's default,
 * so every registration of a known kind it writes is read; one of the new kind would read as the
 * default (another kind that it is not), so for records that read as the default the writer's
 * own schema says what was written. That second decode happens only for writer schemas with
 * newer kinds, and only for their records that read as the default.
 */
export class RegistrationDecoder {
  private readonly decoder: AvroDecoder<ArtifactEventRecord>;
  private readonly newer = new Map<number, NewerKinds | undefined>();

  constructor(fetchSchema: SchemaFetcher) {
    this.decoder = new AvroDecoder<ArtifactEventRecord>(artifactType, async (id) => {
      const text = await fetchSchema(id);
      this.newer.set(id, text === undefined ? undefined : newerKindsOf(text));
      return text;
    });
  }

  /** Fetches the writer schemas a batch of values uses. Registry outages throw (retriable). */
  prepare(values: Iterable<Buffer | null>): Promise<void> {
    return this.decoder.prepare(values);
  }

  decode(value: Buffer | null): RegistrationRead {
    const read = this.decoder.decode(value);
    if (!read.ok || read.value.kind !== defaultKind) return read;
    const id = value!.readInt32BE(1);
    const newer = this.newer.get(id);
    if (!newer) return read;
    let written: string;
    try {
      written = String((newer.writer.decode(value!, 5).value as { kind: unknown }).kind);
    } catch (err) {
      return { ok: false, reason: 'invalid_avro', message: (err as Error).message };
    }
    if (!newer.kinds.has(written)) return read;
    return {
      ok: false,
      reason: 'unknown_kind',
      message: `${read.value.ref} is of kind ${JSON.stringify(written)} (writer schema id ${id}), which this reader does not know; upgrade it to read registrations of that kind`,
    };
  }
}
