#!/usr/bin/env bash
# Throwaway PostgreSQL + Redis for development and tests, kept under .data/<name>/.
#
#   scripts/services.sh start <name> <pg_port> <redis_port>   install what is missing, start both, wait
#   scripts/services.sh stop  <name>                          stop both cleanly
#   scripts/services.sh env   <name> [pg_port redis_port]     print `export` lines for the env vars
#   scripts/services.sh status <name>                         exit 0 when both answer
#   scripts/services.sh browser                               install Debian's chromium when missing
#
# Only loopback (127.0.0.1) is used, never the default ports 5432/6379, never a system service.
# PostgreSQL refuses to run as root, so as root initdb/pg_ctl run as the `postgres` OS user.
# Idempotent: `start` on running services is a no-op, `stop` on stopped ones too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_ROOT=${LIVECHAT_DATA_DIR:-$ROOT/.data}

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------- installation ------------------

find_pg_bin() {
  local d
  if [[ -n ${LIVECHAT_TEST_PG_BIN:-} && -x ${LIVECHAT_TEST_PG_BIN}/initdb && -x ${LIVECHAT_TEST_PG_BIN}/pg_ctl ]]; then
    echo "$LIVECHAT_TEST_PG_BIN"; return 0
  fi
  # newest installed major version first
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then echo "$d"; return 0; fi
  done
  d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")
  if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then echo "$d"; return 0; fi
  return 1
}

APT_UPDATED=0
apt_install() {
  local sudo=()
  if ! is_root; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: $*"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install these yourself: $*"
  # Keep package maintainer scripts from starting system services (the default-port cluster on
  # 5432 / redis on 6379): policy-rc.d exit 101 = "action forbidden". Only if none exists yet.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    created_policy=1
  fi
  local rc=0
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
    APT_UPDATED=1
  fi
  if [[ $rc -eq 0 ]]; then
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  fi
  if [[ $created_policy -eq 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi
  [[ $rc -eq 0 ]] || die "apt-get install $* failed (exit $rc)"
}

ensure_deps() {
  local pkgs=()
  find_pg_bin >/dev/null || pkgs+=(postgresql)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v redis-cli >/dev/null || pkgs+=(redis-tools)
  command -v make >/dev/null || pkgs+=(make)   # tikv-jemalloc-sys builds jemalloc with make
  command -v flock >/dev/null || pkgs+=(util-linux)
  # tests/ops.rs: `promtool check metrics|rules` and `systemd-analyze verify` of the unit files,
  # `openssl` for the TLS tests' self-signed certificates, a venv for schemathesis (OpenAPI test)
  command -v promtool >/dev/null || pkgs+=(prometheus)
  command -v systemd-analyze >/dev/null || pkgs+=(systemd)
  command -v openssl >/dev/null || pkgs+=(openssl)
  /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
  if [[ ${#pkgs[@]} -gt 0 ]]; then apt_install "${pkgs[@]}"; fi
  PG_BIN=$(find_pg_bin) || die "PostgreSQL server binaries (initdb, pg_ctl) not found after install"
  command -v redis-server >/dev/null || die "redis-server not found after install"
  if is_root && ! id -u postgres >/dev/null 2>&1; then
    log "creating the postgres system user"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
}

# ---------------------------------------------------------------- layout -------------------------

check_name() {
  [[ ${1:-} =~ ^[A-Za-z0-9_-]+$ ]] || die "bad or missing <name> (letters, digits, _ and - only)"
}
check_port() {
  [[ ${1:-} =~ ^[0-9]+$ ]] && (( $1 >= 1024 && $1 <= 65535 )) || die "bad port '${1:-}' (1024-65535)"
  [[ $1 != 5432 && $1 != 6379 ]] || die "refusing the default port $1; pick another"
}

# run a command as the PostgreSQL owner (postgres when we are root, else ourselves)
# (from / so that a cwd the postgres user cannot read, like /root/..., does not matter)
as_pg() {
  if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Per-repo short key, used when paths under the repository are unusable (the postgres user
# cannot traverse e.g. /root, or the socket path would exceed the 107-byte sun_path limit).
repo_key() { printf '%s' "$ROOT" | cksum | cut -d' ' -f1; }

layout() {
  local name=$1
  DIR=$DATA_ROOT/$name
  STATE=$DIR/ports
  RDIR=$DIR/redis
  PGLINK=$DIR/pg
  # PostgreSQL data: .data/<name>/pg, or (when the postgres user cannot reach it) a directory
  # under /var/tmp that .data/<name>/pg points to as a symlink.
  if [[ -L $PGLINK ]]; then
    PGDATA=$(readlink "$PGLINK")
  else
    PGDATA=$PGLINK
  fi
  PGLOG=$PGDATA/postgres.log   # written by the postgres user, so inside its own directory
  PGSOCK=$(dirname "$PGDATA")/pgsock
  if (( ${#PGSOCK} > 90 )); then PGSOCK=/tmp/livechat-$(repo_key)-$name; fi
}

prepare_dirs() {
  local name=$1
  mkdir -p "$DIR" "$RDIR"
  if [[ ! -e $PGLINK ]]; then
    mkdir -p "$PGLINK"
    if is_root; then
      chown postgres: "$PGLINK"
      if ! runuser -u postgres -- test -w "$PGLINK"; then
        # e.g. the repository lives under /root (mode 700): keep the cluster outside it
        rmdir "$PGLINK"
        local alt=/var/tmp/livechat-$(repo_key)/$name/pg
        mkdir -p "$alt"
        chmod 755 "/var/tmp/livechat-$(repo_key)" "$(dirname "$alt")"
        ln -s "$alt" "$PGLINK"
        log "postgres cannot reach $DIR; cluster data kept in $alt (symlinked)"
      fi
    fi
    layout "$name"
  fi
  mkdir -p "$PGDATA" "$PGSOCK"
  if is_root; then chown postgres: "$PGDATA" "$PGSOCK"; fi
  chmod 700 "$PGDATA"
}

read_ports() {
  PG_PORT=${1:-}; REDIS_PORT=${2:-}
  if [[ -z $PG_PORT || -z $REDIS_PORT ]]; then
    [[ -f $STATE ]] || die "no ports recorded in $STATE: run 'start' first or pass <pg_port> <redis_port>"
    # shellcheck disable=SC1090
    source "$STATE"
  fi
}

# ---------------------------------------------------------------- checks -------------------------

pg_up() {
  [[ -f $PGDATA/postmaster.pid ]] || return 1
  local pid; pid=$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U postgres
}

redis_pid() {
  local pid
  [[ -f $RDIR/redis.pid ]] || return 1
  pid=$(cat "$RDIR/redis.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

redis_up() {
  redis_pid >/dev/null || return 1
  [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

port_busy() {  # something (not ours) already listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  die "$what did not come up within ${secs}s"
}

# ---------------------------------------------------------------- postgres -----------------------

pg_start() {
  if pg_up; then log "postgres already running on 127.0.0.1:$PG_PORT ($PGDATA)"; return 0; fi
  if [[ ! -s $PGDATA/PG_VERSION ]]; then
    log "initdb $PGDATA"
    # initdb wants an empty directory
    find "$PGDATA" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    as_pg "$PG_BIN/initdb" -D "$PGDATA" --auth=trust -U postgres -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
  fi
  # settings are rewritten on every start, so port changes are honoured
  as_pg tee "$PGDATA/livechat.conf" >/dev/null <<EOF
# written by scripts/services.sh on every start
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
max_connections = 300
shared_buffers = 256MB
work_mem = 8MB
maintenance_work_mem = 64MB
fsync = on
synchronous_commit = on
full_page_writes = on
wal_level = minimal
max_wal_senders = 0
max_wal_size = 1GB
checkpoint_timeout = 15min
log_min_messages = warning
log_min_duration_statement = -1
log_line_prefix = '%m [%p] %d '
timezone = 'UTC'
EOF
  if ! grep -q "^include_if_exists = 'livechat.conf'" "$PGDATA/postgresql.conf"; then
    echo "include_if_exists = 'livechat.conf'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
  fi
  # a stale pid file from a crash or reboot: pg_ctl handles it, but only if no process owns it
  if port_busy "$PG_PORT"; then
    die "127.0.0.1:$PG_PORT is taken by another process; choose another PostgreSQL port"
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  # 9>&-: the daemon must not inherit (and hold forever) the flock on fd 9
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 -s start 9>&- \
    || { tail -n 30 "$PGLOG" >&2 || true; die "postgres failed to start (log: $PGLOG)"; }
  wait_for "postgres on 127.0.0.1:$PG_PORT" 30 pg_up
}

pg_stop() {
  if [[ -f $PGDATA/postmaster.pid ]]; then
    log "stopping postgres ($PGDATA)"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -w -t 60 -s -m fast stop \
      || as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -w -t 30 -s -m immediate stop \
      || log "pg_ctl stop failed (see $PGLOG)"
  fi
}

# ---------------------------------------------------------------- redis --------------------------

redis_start() {
  if redis_up; then log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
  if redis_pid >/dev/null; then
    # our redis runs but does not answer on this port (port changed?): restart it
    redis_stop
  fi
  if port_busy "$REDIS_PORT"; then
    die "127.0.0.1:$REDIS_PORT is taken by another process; choose another Redis port"
  fi
  rm -f "$RDIR/redis.pid"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  redis-server - >/dev/null 9>&- <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
dir "$RDIR"
pidfile "$RDIR/redis.pid"
logfile "$RDIR/redis.log"
save ""
appendonly no
maxclients 10000
EOF
  wait_for "redis on 127.0.0.1:$REDIS_PORT" 30 redis_up
}

redis_stop() {
  local pid i
  pid=$(redis_pid) || { rm -f "$RDIR/redis.pid"; return 0; }
  log "stopping redis (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$RDIR/redis.pid"
}

# ---------------------------------------------------------------- commands -----------------------

lock() {  # serialise start/stop of one <name> (two test runs at once)
  mkdir -p "$DIR"
  if command -v flock >/dev/null; then
    exec 9>"$DIR/.lock"
    flock -w 120 9 || die "timed out waiting for the lock $DIR/.lock"
  fi
}

cmd_start() {
  local name=${1:-}; check_name "$name"
  [[ $# -ge 3 ]] || die "usage: $0 start <name> <pg_port> <redis_port>"
  check_port "$2"; check_port "$3"
  [[ $2 != "$3" ]] || die "the two ports must differ"
  ensure_deps
  layout "$name"
  lock
  # ports changed since last start? stop the old instances first
  if [[ -f $STATE ]]; then
    read_ports
    if [[ $PG_PORT != "$2" || $REDIS_PORT != "$3" ]]; then
      log "ports changed ($PG_PORT/$REDIS_PORT -> $2/$3): restarting"
      pg_stop; redis_stop
    fi
  fi
  PG_PORT=$2; REDIS_PORT=$3
  printf 'PG_PORT=%s\nREDIS_PORT=%s\n' "$PG_PORT" "$REDIS_PORT" >"$STATE"
  prepare_dirs "$name"
  pg_start
  redis_start
  log "'$name' ready: postgres 127.0.0.1:$PG_PORT, redis 127.0.0.1:$REDIS_PORT"
}

cmd_stop() {
  local name=${1:-}; check_name "$name"
  layout "$name"
  [[ -d $DIR ]] || { log "nothing to stop for '$name'"; return 0; }
  PG_BIN=$(find_pg_bin) || PG_BIN=
  lock
  if [[ -n $PG_BIN ]]; then pg_stop; fi
  redis_stop
  log "'$name' stopped"
}

cmd_env() {
  local name=${1:-}; check_name "$name"
  layout "$name"
  read_ports "${2:-}" "${3:-}"
  local pg_bin; pg_bin=$(find_pg_bin) || pg_bin=/usr/lib/postgresql/15/bin
  local pg_url="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  local redis_url="redis://127.0.0.1:$REDIS_PORT"
  printf 'export DATABASE_URL=%q\n' "$pg_url"
  printf 'export REDIS_URL=%q\n' "$redis_url"
  printf 'export LIVECHAT_TEST_PG_URL=%q\n' "$pg_url"
  printf 'export LIVECHAT_TEST_REDIS_URL=%q\n' "$redis_url"
  printf 'export LIVECHAT_TEST_PG_BIN=%q\n' "$pg_bin"
}

cmd_status() {
  local name=${1:-}; check_name "$name"
  layout "$name"
  read_ports
  PG_BIN=$(find_pg_bin) || die "PostgreSQL binaries not installed"
  local ok=0
  if pg_up; then echo "postgres: up on 127.0.0.1:$PG_PORT"; else echo "postgres: down"; ok=1; fi
  if redis_up; then echo "redis: up on 127.0.0.1:$REDIS_PORT"; else echo "redis: down"; ok=1; fi
  return $ok
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  env) shift; cmd_env "$@" ;;
  status) shift; cmd_status "$@" ;;
  deps) ensure_deps ;;
  browser) command -v chromium >/dev/null || apt_install chromium ;;
  *) usage ;;
esac
