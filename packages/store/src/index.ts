export { createStore, type Store, type StoreMode, type StoreOptions } from './create-store.js';
export { isRetriableClickHouseError, clickHouseErrorCode } from './errors.js';
