export { loadSchema, avroType, schemasDir, type SchemaName } from './schemas.js';
export {
  createRegistry,
  registerAvro,
  setCompatibility,
  valueSubject,
  defaultCompatibility,
  SchemaIncompatibleError,
  type Compatibility,
} from './registry.js';
export { canonicalJson, inputHash, sha256Tagged, CanonicalJsonError } from './canonical-json.js';
export type * from './records.js';
export { RegistrySchemaResolvers, registryFetcher, framedIds, encodeFramed, decodeFramed, type SchemaResolvers } from './schema-resolvers.js';
