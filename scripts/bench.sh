#!/usr/bin/env bash
# Runs one livechat-loadtest scenario against a freshly started server, the way BENCHMARKS.md
# measures: throwaway PostgreSQL (+ Redis) from scripts/services.sh, a fresh database per run,
# server pinned to CPU 0 and harness to CPU 1, limits raised so the harness is not rate-limited.
#
#   scripts/bench.sh <name> <scenario> [scenario args...]
#
# Writes loadtest/results/<name>.{json,txt,svg}. Environment:
#   BENCH_BUILD=0          skip the build (reuse target/lt)
#   BENCH_PERF=1           record the server with `perf record -g` into target/lt/<name>.perf
#   BENCH_SERVER_ENV="K=V ..."  extra server environment (e.g. LIVECHAT_STORAGE__BATCH_MAX=1)
#   BENCH_KEEP_DB=1        keep the bench database afterwards (to EXPLAIN its queries)
#   BENCH_SQL="..."        SQL run on the bench database once the servers have migrated it,
#                          before the harness starts (e.g. "DROP INDEX messages_search" to
#                          measure the write path without the search index)
#   BENCH_PG_PORT / BENCH_REDIS_PORT   default 55600 / 56600
#   BENCH_NODES=N          N `livechat serve` processes as one cluster: REDIS_URL set, all
#                          bound to the same port with SO_REUSEPORT (server.reuse_port), each
#                          with its own 20,000-fd limit; the harness sums their /proc figures.
#                          With N > 1 the servers are not pinned (they share both cores).
#
# The build uses thin codegen (no fat LTO) in target/lt so it does not monopolise a shared box;
# the figures are slightly conservative against the shipped release profile.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[[ $# -ge 2 ]] || { sed -n 2,14p "$0"; exit 2; }
NAME=$1; shift
PG_PORT=${BENCH_PG_PORT:-55600}
REDIS_PORT=${BENCH_REDIS_PORT:-56600}
TARGET=target/lt/release
OUT=loadtest/results
mkdir -p "$OUT"

if [[ ${BENCH_BUILD:-1} != 0 ]]; then
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --release --target-dir target/lt -p livechat -p livechat-loadtest
fi

bash scripts/services.sh start lt "$PG_PORT" "$REDIS_PORT" >/dev/null
DB="bench_$$"
PSQL=(psql -q "postgres://postgres@127.0.0.1:$PG_PORT/postgres")
"${PSQL[@]}" -c "create database $DB" >/dev/null

PORT=8100
while (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done

SERVER_ENV=(
  DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB"
  LIVECHAT_JWT_SECRET=s LIVECHAT_ADMIN_TOKEN=adm LIVECHAT_LISTEN="127.0.0.1:$PORT" LIVECHAT_LOG=warn
  LIVECHAT_LIMITS__MESSAGES_PER_SEC=100000 LIVECHAT_LIMITS__MESSAGES_BURST=100000
  LIVECHAT_LIMITS__CONNECTIONS_PER_USER=100000 LIVECHAT_STORAGE__QUEUE_MAX=100000
  LIVECHAT_LIMITS__ROOMS_CREATED_PER_MINUTE=100000
)
# shellcheck disable=SC2206
[[ -n ${BENCH_SERVER_ENV:-} ]] && SERVER_ENV+=($BENCH_SERVER_ENV)

NODES=${BENCH_NODES:-1}
PIN=(taskset -c 0)
if ((NODES > 1)); then
  SERVER_ENV+=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT" LIVECHAT_SERVER__REUSE_PORT=true)
  PIN=()
fi

ulimit -n 20000 2>/dev/null || true
SERVERS=()
PERF=
cleanup() {
  set +e
  if [[ -n $PERF ]]; then kill -INT "$PERF"; wait "$PERF"; fi
  for pid in "${SERVERS[@]}"; do kill -TERM "$pid"; done
  for pid in "${SERVERS[@]}"; do wait "$pid"; done
  if [[ ${BENCH_KEEP_DB:-0} == 1 ]]; then
    echo "bench: kept database $DB (postgres://postgres@127.0.0.1:$PG_PORT/$DB)" >&2
  else
    "${PSQL[@]}" -c "drop database if exists $DB" >/dev/null 2>&1
  fi
}
trap cleanup EXIT
for i in $(seq 1 "$NODES"); do
  out="target/lt/$NAME.node$i.out"
  env "${SERVER_ENV[@]}" LIVECHAT_NODE_ID="bench-$i" "${PIN[@]}" "$TARGET/livechat" serve >"$out" &
  SERVERS+=($!)
  # One at a time (the first applies the migrations), each until it prints its listening line:
  # with a shared port a /readyz probe could be answered by an earlier node.
  for _ in $(seq 1 300); do
    grep -q '^listening on' "$out" 2>/dev/null && break
    sleep 0.1
  done
done
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
if [[ -n ${BENCH_SQL:-} ]]; then
  psql -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$PG_PORT/$DB" -c "$BENCH_SQL"
fi
SERVER=$(IFS=,; echo "${SERVERS[*]}")
if [[ ${BENCH_PERF:-0} == 1 ]]; then
  perf record -F 999 -g -p "$SERVER" -o "target/lt/$NAME.perf" 2>/dev/null &
  PERF=$!
fi

taskset -c 1 "$TARGET/livechat-loadtest" --url "127.0.0.1:$PORT" --admin-token adm --jwt-secret s \
  --server-pid "$SERVER" --label "$NAME" --json "$OUT/$NAME.json" --svg "$OUT/$NAME.svg" "$@" \
  | tee "$OUT/$NAME.txt"
