export { createLogger, redactPaths, type Logger, type LoggerOptions } from './logger.js';
export { Shutdown, type ShutdownStep } from './shutdown.js';
export { startService, type Service } from './service.js';
export { retry, backoffDelay, RetriableError, isRetriable, type RetryOptions } from './retry.js';
export { waitFor, type WaitForOptions } from './wait-for.js';
export { startThread } from './threads.js';
export { usableCores, cgroupQuota } from './cores.js';
export { privateFile, PrivateFileError } from './private-file.js';
