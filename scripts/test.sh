#!/usr/bin/env bash
# README command #2: the whole test suite, against a real PostgreSQL and Redis.
#
#   scripts/test.sh                      fmt check, build, all tests, clippy, then the SDK and
#                                        browser tests (scripts/clients.sh test)
#   scripts/test.sh ws_limits            only tests matching a filter (build + tests, no lints)
#   scripts/test.sh --test ws -- --nocapture
#                                        args before `--` go to `cargo test`, after it to the
#                                        test binaries
#
# Starts throwaway services `test` (PostgreSQL 127.0.0.1:55433, Redis 127.0.0.1:56380; installs
# them and `make` when missing), exports DATABASE_URL, REDIS_URL, LIVECHAT_TEST_PG_URL,
# LIVECHAT_TEST_REDIS_URL and LIVECHAT_TEST_PG_BIN, runs the suite, stops the services on exit
# and exits non-zero if any step failed.
#
# Env: LIVECHAT_TEST_PG_PORT (55433), LIVECHAT_TEST_REDIS_PORT (56380),
#      LIVECHAT_TEST_THREADS (4), LIVECHAT_TEST_LINT (1 on a full run, 0 with filter args),
#      LIVECHAT_TEST_CLIENTS (1 on a full run, 0 with filter args: the clients/ tests),
#      LIVECHAT_TEST_SERVICES (test: the .data/<name> instance),
#      LIVECHAT_KEEP_SERVICES=1 leaves the services running afterwards.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
SERVICES="$ROOT/scripts/services.sh"

PG_PORT=${LIVECHAT_TEST_PG_PORT:-55433}
REDIS_PORT=${LIVECHAT_TEST_REDIS_PORT:-56380}

# Default ports held by something else (another checkout's services on a shared machine):
# move on to the next free ones rather than fail. Explicit ports are never changed.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! bash "$SERVICES" status test >/dev/null 2>&1; then
  if [[ -z ${LIVECHAT_TEST_PG_PORT:-} ]]; then
    while port_busy "$PG_PORT"; do PG_PORT=$((PG_PORT + 1)); done
  fi
  if [[ -z ${LIVECHAT_TEST_REDIS_PORT:-} ]]; then
    while port_busy "$REDIS_PORT"; do REDIS_PORT=$((REDIS_PORT + 1)); done
  fi
fi
THREADS=${LIVECHAT_TEST_THREADS:-4}
NAME=${LIVECHAT_TEST_SERVICES:-test}   # .data/<NAME>; use another name (and ports) for a parallel run

if [[ ${CI:-} == true ]]; then export CARGO_TERM_COLOR=never; fi
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# every test spawns servers with many sockets: raise the fd limit to the hard limit
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
echo "test: open-files limit $(ulimit -n)"

# split args: before `--` -> cargo test, after -> the test binaries
cargo_args=() bin_args=()
seen_sep=0
for a in "$@"; do
  if [[ $seen_sep -eq 0 && $a == -- ]]; then seen_sep=1; continue; fi
  if [[ $seen_sep -eq 0 ]]; then cargo_args+=("$a"); else bin_args+=("$a"); fi
done
threads_arg=(--test-threads="$THREADS")
for a in "${bin_args[@]+"${bin_args[@]}"}"; do
  [[ $a == --test-threads* ]] && threads_arg=()
done
if [[ $# -eq 0 ]]; then lint=${LIVECHAT_TEST_LINT:-1}; else lint=${LIVECHAT_TEST_LINT:-0}; fi
if [[ $# -eq 0 ]]; then clients=${LIVECHAT_TEST_CLIENTS:-1}; else clients=${LIVECHAT_TEST_CLIENTS:-0}; fi

cleanup() {
  if [[ ${LIVECHAT_KEEP_SERVICES:-0} == 1 ]]; then
    echo "test: leaving services running (scripts/services.sh stop $NAME)"
  else
    bash "$SERVICES" stop "$NAME" || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$SERVICES" start "$NAME" "$PG_PORT" "$REDIS_PORT" || { echo "test: FAILED to start services"; exit 1; }
env_lines=$(bash "$SERVICES" env "$NAME") || { echo "test: FAILED to read service env"; exit 1; }
eval "$env_lines"
echo "test: DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL LIVECHAT_TEST_PG_BIN=$LIVECHAT_TEST_PG_BIN"

failed=()
step() {  # step <label> <command...>
  local label=$1; shift
  echo
  echo "==== $label: $*"
  local t0=$SECONDS
  if "$@"; then
    echo "==== $label: ok ($((SECONDS - t0))s)"
  else
    local rc=$?
    echo "==== $label: FAILED (exit $rc, $((SECONDS - t0))s)"
    failed+=("$label")
    return 1
  fi
}

if [[ $lint == 1 ]]; then
  if cargo fmt --version >/dev/null 2>&1; then
    step fmt cargo fmt --all -- --check
  else
    echo "test: rustfmt not installed (rustup component add rustfmt): skipping the format check"
  fi
fi

if step build cargo build --workspace --all-targets; then
  step test cargo test --workspace "${cargo_args[@]+"${cargo_args[@]}"}" -- \
    "${threads_arg[@]+"${threads_arg[@]}"}" "${bin_args[@]+"${bin_args[@]}"}"
  # the SDK's and the page's tests run the server just built (target/debug/livechat)
  if [[ $clients == 1 ]]; then
    step clients bash scripts/clients.sh test
  fi
else
  echo "test: build failed, tests not run"
fi

if [[ $lint == 1 ]]; then
  if cargo clippy --version >/dev/null 2>&1; then
    step clippy cargo clippy --workspace --all-targets -- -D warnings
  else
    echo "test: clippy not installed (rustup component add clippy): skipping clippy"
  fi
fi

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test: FAILED steps: ${failed[*]}"
  exit 1
fi
echo "test: all steps passed"
exit 0
