export { createStore, storeFromConfig, type Store, type StoreMode, type StoreOptions } from './create-store.js';
export { isRetriableClickHouseError, clickHouseErrorCode, storeUnavailable, StoreUnavailableError } from './errors.js';
export {
  migrate,
  loadMigrations,
  appliedMigrations,
  readAppliedMigrations,
  pendingMigrations,
  splitStatements,
  checksumOf,
  defaultMigrationsDir,
  migrationsTable,
  MigrationError,
  type Migration,
  type AppliedMigration,
  type MigrateResult,
} from './migrate.js';
export { assertReadOnlySql, checkReadOnlySql, readOnlyQueryText, deniedFunctions, ReadOnlySqlError, type CheckedSql } from './read-only-sql.js';
export {
  startQueryServer,
  queryViaEndpoint,
  runReadOnlyQuery,
  queryTokenFile,
  querySignature,
  QueryEndpointError,
  maxResultRows,
  maxResultBytes,
  type QueryRequest,
  type QueryResponse,
} from './query-server.js';
