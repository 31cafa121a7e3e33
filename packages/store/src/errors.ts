/**
 * ClickHouse failures are classified by error code, never by message text: data errors will fail
 * the same way again and go to dead letters; network, timeout and overload errors are retried.
 */
const retriableCodes = new Set<number>([
  3, // UNEXPECTED_END_OF_FILE (connection cut mid-response)
  159, // TIMEOUT_EXCEEDED
  164, // READONLY (replica temporarily read-only)
  202, // TOO_MANY_SIMULTANEOUS_QUERIES
  203, // NO_FREE_CONNECTION
  209, // SOCKET_TIMEOUT
  210, // NETWORK_ERROR
  236, // ABORTED
  241, // MEMORY_LIMIT_EXCEEDED
  242, // TABLE_IS_READ_ONLY
  252, // TOO_MANY_PARTS
  285, // TOO_FEW_LIVE_REPLICAS
  319, // UNKNOWN_STATUS_OF_INSERT
  425, // SYSTEM_ERROR
  473, // DEADLOCK_AVOIDED
  999, // KEEPER_EXCEPTION
]);

const retriableSystemCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_SOCKET']);

export function clickHouseErrorCode(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^\d+$/.test(code)) return Number(code);
  if (typeof code === 'number') return code;
  return undefined;
}

export function isRetriableClickHouseError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const chCode = clickHouseErrorCode(err);
  if (chCode !== undefined) return retriableCodes.has(chCode);
  const sys = (err as { code?: unknown }).code;
  if (typeof sys === 'string' && retriableSystemCodes.has(sys)) return true;
  const message = (err as { message?: unknown }).message;
  // The HTTP client reports its own timeouts without a code.
  return typeof message === 'string' && /^Timeout error\.?$/i.test(message);
}
