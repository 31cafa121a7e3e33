/**
 * ClickHouse failures are classified by error code, never by message text: data errors will fail
 * the same way again and go to dead letters; network, timeout and overload errors are retried.
 */
const retriableCodes = new Set<number>([
  3, // UNEXPECTED_END_OF_FILE (connection cut mid-response)
  // The server's own connections (to S3, another replica, a DNS server) failing: not the rows.
  // Off this list, one such error sent every row of a batch to sink.dlq as clickhouse_rejected.
  23, // CANNOT_READ_FROM_ISTREAM
  24, // CANNOT_WRITE_TO_OSTREAM
  32, // ATTEMPT_TO_READ_AFTER_EOF (a stream cut short; the sink's own JSON rows are always whole)
  198, // DNS_ERROR
  279, // ALL_CONNECTION_TRIES_FAILED
  499, // S3_ERROR (throttling, or S3 out of reach, on S3-backed storage)
  1000, // POCO_EXCEPTION (e.g. "Timeout: connect timed out")
  // The server's own resources, none of them about the rows: a full disk took every row of a
  // batch for a data error, split it down to single rows and dead-lettered them all.
  74, // CANNOT_READ_FROM_FILE_DESCRIPTOR
  75, // CANNOT_WRITE_TO_FILE_DESCRIPTOR
  76, // CANNOT_OPEN_FILE
  173, // CANNOT_ALLOCATE_MEMORY
  201, // QUOTA_EXCEEDED
  225, // NO_ZOOKEEPER
  243, // NOT_ENOUGH_SPACE
  394, // QUERY_WAS_CANCELLED (a server shutting down)
  439, // CANNOT_SCHEDULE_TASK
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
  // chDB's native errors carry the code only in ClickHouse's own text: "Code: 252. DB::Exception: …".
  const message = (err as { message?: unknown }).message;
  const inText = typeof message === 'string' ? /\bCode: (\d+)\. DB::Exception\b/.exec(message)?.[1] : undefined;
  return inText === undefined ? undefined : Number(inText);
}

/**
 * Whether trying the same statement again later can succeed. ClickHouse gives every error it
 * raises a code, data errors included; an error without one did not come from ClickHouse: a
 * connection that failed, the client's own timeout, or something in between answering in its
 * place (a load balancer's 502/503 page). Those are retried: taken for a refusal of the data,
 * an outage seen through a proxy sent every row of the batch to the dead-letter topic.
 */
export function isRetriableClickHouseError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const chCode = clickHouseErrorCode(err);
  if (chCode !== undefined) return retriableCodes.has(chCode);
  return true;
}

/** The store cannot be used at all (unreachable, or the login refused): nothing about the query. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

const loginCodes = new Set<number>([
  192, // UNKNOWN_USER
  193, // WRONG_PASSWORD
  194, // REQUIRED_PASSWORD
  516, // AUTHENTICATION_FAILED
]);

/** The system error code of a failed connection, looking into AggregateError and causes. */
function networkCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 4) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && retriableSystemCodes.has(code)) return code;
  const message = (err as { message?: unknown }).message;
  if (typeof message === 'string' && /^Timeout error\.?$/i.test(message)) return 'timeout';
  for (const inner of [(err as { cause?: unknown }).cause, ...((err as { errors?: unknown }).errors instanceof Array ? (err as { errors: unknown[] }).errors : [])]) {
    const found = networkCode(inner, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/**
 * A StoreUnavailableError when `err` says the ClickHouse server cannot be reached or refused the
 * login, naming the settings to check; otherwise undefined (the error is about the query).
 * `location` must already be redacted (Store.location is).
 */
export function storeUnavailable(err: unknown, location: string, user = 'default'): StoreUnavailableError | undefined {
  const code = clickHouseErrorCode(err);
  const reason = err instanceof Error ? err.message.trim() : String(err);
  if (code !== undefined && loginCodes.has(code)) {
    return new StoreUnavailableError(
      `The ClickHouse server at ${location} (CLICKHOUSE_URL) refused the login of user ${JSON.stringify(user)}: ${reason} Check CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (or CLICKHOUSE_PASSWORD_FILE).`,
      { cause: err },
    );
  }
  if (code === undefined && networkCode(err) !== undefined) {
    return new StoreUnavailableError(
      `Cannot reach the ClickHouse server at ${location} (CLICKHOUSE_URL): ${reason || networkCode(err)}. ` +
        'Check that the server is running and that CLICKHOUSE_URL points at its HTTP port (e.g. http://127.0.0.1:8123), or unset CLICKHOUSE_URL to use the embedded store.',
      { cause: err },
    );
  }
  return undefined;
}
