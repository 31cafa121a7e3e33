#!/bin/sh
# Entry point for the docker-compose clickhouse service: exports the passwords of the users in
# users.d/dlog-users.xml from docker secrets (files), so no password is in the image, the repo or
# `docker inspect`, then starts the stock entry point.
set -eu
read_secret() {
  if [ -r "$1" ]; then tr -d '\r\n' < "$1"; else echo "dlog-entrypoint: missing secret $1" >&2; exit 1; fi
}
DLOG_CLICKHOUSE_WRITER_PASSWORD="$(read_secret /run/secrets/clickhouse_writer_password)"
DLOG_CLICKHOUSE_ANALYST_PASSWORD="$(read_secret /run/secrets/clickhouse_analyst_password)"
export DLOG_CLICKHOUSE_WRITER_PASSWORD DLOG_CLICKHOUSE_ANALYST_PASSWORD
exec /entrypoint.sh "$@"
