#!/usr/bin/env bash
# Rehearse the PostgreSQL backup/restore runbook end to end and CHECK the result:
#   seed through the real migrations and API -> pg_dump -> drop -> restore -> compare counts
#   -> start the runtime on the restored data -> a worker drains the queued work.
# Usage: scripts/rehearse-postgres-backup-restore.sh [DSN]
#   DSN defaults to $ORIS_POSTGRES_DSN or postgresql://postgres@127.0.0.1:5432/postgres.
#   RUNTIME_SCHEMA (default oris_backup_rehearsal) is dropped and recreated: use a scratch name.
# Exit status 0 only if every check passed.
set -euo pipefail

DSN="${1:-${ORIS_POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}}"
SCHEMA="${RUNTIME_SCHEMA:-oris_backup_rehearsal}"
ORIS="${ORIS_BIN:-$(dirname "$0")/../.venv/bin/oris}"
WORK="$(mktemp -d)"
BACKUP="${BACKUP_FILE:-$WORK/${SCHEMA}.sql}"
PORT="${REHEARSAL_PORT:-18089}"
URL="http://127.0.0.1:${PORT}"

if ! [[ "$SCHEMA" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
  echo "RUNTIME_SCHEMA must match [A-Za-z_][A-Za-z0-9_]*" >&2
  exit 2
fi

export ORIS_RUNTIME_BACKEND=postgres ORIS_POSTGRES_DSN="$DSN" ORIS_POSTGRES_SCHEMA="$SCHEMA"
export ORIS_SERVER_ADDR="127.0.0.1:${PORT}" ORIS_SERVER_URL="$URL" ORIS_LOG_LEVEL=WARNING
export PGOPTIONS="-c client_min_messages=warning"
export ORIS_LEASE_TTL_SECONDS=2 ORIS_LEASE_GRACE_SECONDS=0.5 ORIS_MAINTENANCE_INTERVAL_SECONDS=0.2

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$DSN" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

sql() { psql "$DSN" -v ON_ERROR_STOP=1 -qAtc "SET search_path = \"$SCHEMA\"; $1"; }
start_server() {
  "$ORIS" serve >"$WORK/serve.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "$URL/healthz" >/dev/null && return 0; sleep 0.2; done
  echo "server did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1
}
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
post() { curl -sf -X POST "$URL$1" -H 'content-type: application/json' -d "$2"; }
status_of() { curl -sf "$URL/v1/jobs/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["status"])'; }
fail=0
check() { # name expected actual
  if [ "$2" = "$3" ]; then echo "check_$1=ok ($3)"; else echo "check_$1=FAILED (expected $2, got $3)"; fail=1; fi
}

echo "== seed through the real migrations and API"
psql "$DSN" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null
"$ORIS" db upgrade >/dev/null
start_server
for i in 1 2 3; do post /v1/jobs/run "{\"thread_id\":\"rehearsal-queued-$i\"}" >/dev/null; done
post /v1/jobs/run '{"thread_id":"rehearsal-leased"}' >/dev/null
post /v1/workers/poll '{"worker_id":"worker-backup","limit":1}' >/dev/null
migration_rows=$(sql "SELECT count(*) FROM runtime_schema_migrations")
attempt_rows=$(sql "SELECT count(*) FROM runtime_attempts")
queued_ready=$(sql "SELECT count(*) FROM runtime_attempts WHERE status = 'queued'")
owned_leases=$(sql "SELECT count(*) FROM runtime_leases WHERE state = 'active' AND worker_id = 'worker-backup'")
stop_all

echo "== dump, drop, restore"
pg_dump "$DSN" --schema "$SCHEMA" --format=plain --no-owner --no-privileges -f "$BACKUP"
test -s "$BACKUP" || { echo "backup file is empty" >&2; exit 1; }
psql "$DSN" -qc "DROP SCHEMA \"$SCHEMA\" CASCADE" >/dev/null
psql "$DSN" -q -v ON_ERROR_STOP=1 -f "$BACKUP" >/dev/null

echo "== compare"
check migration_rows "$migration_rows" "$(sql "SELECT count(*) FROM runtime_schema_migrations")"
check attempt_rows "$attempt_rows" "$(sql "SELECT count(*) FROM runtime_attempts")"
check queued_ready "$queued_ready" "$(sql "SELECT count(*) FROM runtime_attempts WHERE status = 'queued'")"
check owned_leases "$owned_leases" "$(sql "SELECT count(*) FROM runtime_leases WHERE state = 'active' AND worker_id = 'worker-backup'")"
check schema_at_head 0 "$("$ORIS" db check >/dev/null 2>&1; echo $?)"

echo "== the runtime dispatches from the restored data"
start_server
ORIS_WORKER_ID=rehearsal-worker "$ORIS" worker >"$WORK/worker.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 150); do
  done_count=0
  for t in rehearsal-queued-1 rehearsal-queued-2 rehearsal-queued-3 rehearsal-leased; do
    [ "$(status_of "$t")" = completed ] && done_count=$((done_count + 1))
  done
  [ "$done_count" = 4 ] && break
  sleep 0.2
done
check restored_work_completed 4 "$done_count"
stop_all

echo "backup_restore_rehearsal=$([ "$fail" = 0 ] && echo ok || echo FAILED)"
echo "schema=$SCHEMA"
echo "backup_file=$BACKUP"
echo "migration_rows=$migration_rows attempt_rows=$attempt_rows queued_ready=$queued_ready owned_leases=$owned_leases"
exit "$fail"
