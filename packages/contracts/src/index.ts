// First: bounds avsc's readers before any contract type or resolver is made (see the module).
import './avro-limits.js';
export { loadSchema, avroType, schemasDir, type SchemaName } from './schemas.js';
export {
  createRegistry,
  registryEndpoint,
  type RegistryEndpoint,
  registerAvro,
  setCompatibility,
  valueSubject,
  defaultCompatibility,
  SchemaIncompatibleError,
  type Compatibility,
} from './registry.js';
export { canonicalJson, inputHash, inputHashOfText, isWellFormed, sha256Tagged, CanonicalJsonError } from './canonical-json.js';
export type * from './records.js';
export {
  AvroDecoder,
  registryFetcher,
  encodeFramed,
  type SchemaResolvers,
  type SchemaFetcher,
  type DecodeResult,
  type DecodeFailure,
} from './schema-resolvers.js';
export { joinKey } from './join-key.js';
export { InvalidUtf8Error } from './avro-limits.js';
export { readAvroLong, readAvroString, writeAvroLong } from './avro-peek.js';
export { compareVersions } from './versions.js';
