#!/usr/bin/env bash
# README command #1: run livechat locally in dev mode.
#
#   scripts/dev.sh [extra `livechat serve` args]
#
# Starts a throwaway PostgreSQL (127.0.0.1:55432) and Redis (127.0.0.1:56379) under .data/dev/
# (installing them first on a fresh Debian machine), then runs
# `cargo run --release -- serve --dev` with DATABASE_URL pointing at that PostgreSQL. The server
# applies its migrations itself. REDIS_URL is NOT set (single node, in-memory bus) unless
# LIVECHAT_DEV_REDIS=1. The services keep running afterwards: `scripts/services.sh stop dev`.
#
# Env: LIVECHAT_DEV_PG_PORT (55432), LIVECHAT_DEV_REDIS_PORT (56379), LIVECHAT_DEV_REDIS (0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PG_PORT=${LIVECHAT_DEV_PG_PORT:-55432}
REDIS_PORT=${LIVECHAT_DEV_REDIS_PORT:-56379}

bash "$ROOT/scripts/services.sh" start dev "$PG_PORT" "$REDIS_PORT"
eval "$(bash "$ROOT/scripts/services.sh" env dev)"
unset LIVECHAT_TEST_PG_URL LIVECHAT_TEST_REDIS_URL LIVECHAT_TEST_PG_BIN
if [[ ${LIVECHAT_DEV_REDIS:-0} != 1 ]]; then
  unset REDIS_URL
fi

echo "dev: DATABASE_URL=$DATABASE_URL${REDIS_URL:+ REDIS_URL=$REDIS_URL}" >&2
echo "dev: stop the databases later with: scripts/services.sh stop dev" >&2
exec cargo run --release -- serve --dev "$@"
