#!/usr/bin/env bash
# Starts the seed reconstruction (app.py) the way the demo was deployed: uvicorn (one worker
# process, uvloop + httptools) plus one Celery worker, against the throwaway PostgreSQL and
# Redis of scripts/services.sh, with users 1..N (the legacy harness sends sender_id 1..N).
#
#   loadtest/legacy/run.sh <db_name> <n_users> [listen_port]     (Ctrl-C / SIGTERM stops both)
#
# Environment: LEGACY_NO_CELERY=1 (no notification jobs: the seed's best case), BENCH_PG_PORT /
# BENCH_REDIS_PORT (default 55600 / 56600), LEGACY_CPU (taskset CPU list for the app and its
# worker, default 0). Writes the uvicorn pid to $DIR/.app.pid.
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DIR/../.." && pwd)
[[ $# -ge 2 ]] || { sed -n 2,9p "$0"; exit 2; }
DB=$1 N=$2 PORT=${3:-8200}
PG_PORT=${BENCH_PG_PORT:-55600}
REDIS_PORT=${BENCH_REDIS_PORT:-56600}
CPU=${LEGACY_CPU:-0}

if [[ ! -x $DIR/.venv/bin/uvicorn ]]; then
  python3 -m venv "$DIR/.venv"
  "$DIR/.venv/bin/pip" install -q -r "$DIR/requirements.txt"
fi
bash "$ROOT/scripts/services.sh" start lt "$PG_PORT" "$REDIS_PORT" >/dev/null
PSQL=(psql -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$PG_PORT")
"${PSQL[@]}/postgres" -c "drop database if exists $DB" -c "create database $DB" >/dev/null

export LEGACY_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/$DB"
export LEGACY_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/5"
cd "$DIR"
taskset -c "$CPU" .venv/bin/celery -A app.celery worker --concurrency 1 --loglevel warning &
WORKER=$!
taskset -c "$CPU" .venv/bin/uvicorn app:app --host 127.0.0.1 --port "$PORT" --log-level warning \
  --ws websockets --ws-max-queue 4096 &
APP=$!
echo "$APP" > "$DIR/.app.pid"
trap 'kill $APP $WORKER 2>/dev/null; wait $WORKER' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/chat/history?limit=1" >/dev/null 2>&1 && break
  sleep 0.2
done
"${PSQL[@]}/$DB" -c "insert into users (id, username) select g, 'u' || g from generate_series(1, $N) g" >/dev/null
echo "seed app ready on 127.0.0.1:$PORT (pid $APP, celery worker $WORKER, $N users)"
wait "$APP"
