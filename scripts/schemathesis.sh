#!/usr/bin/env bash
# OpenAPI conformance of a running livechat: schemathesis (PyPI) against its /openapi.json.
#
#   scripts/schemathesis.sh <base_url> <bearer_token> [more `st run` args]
#
# Installs schemathesis into a project-local venv (.data/venv-schemathesis) on first use
# (python3-venv comes from `scripts/services.sh deps` when missing). Fails on any 5xx and on any
# response that the document does not allow (status code, content type, body schema, headers).
# Env: LIVECHAT_ST_MAX_EXAMPLES (100), LIVECHAT_ST_SEED (fixed, so runs are repeatable).
# No --max-time: with it schemathesis keeps fuzzing until the budget is spent; the number of
# examples bounds the run instead (about 10 s here), and callers put a deadline around it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${LIVECHAT_DATA_DIR:-$ROOT/.data}
VENV=$DATA/venv-schemathesis
VERSION=4.32.5

[[ $# -ge 2 ]] || { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
BASE=${1%/}; TOKEN=$2; shift 2

install() {
  local py=/usr/bin/python3
  [[ -x $py ]] || py=$(command -v python3 || true)
  if [[ -z $py ]] || ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
    bash "$ROOT/scripts/services.sh" deps
    py=/usr/bin/python3
  fi
  echo "schemathesis: installing schemathesis==$VERSION into $VENV" >&2
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION"
}

mkdir -p "$DATA"
(
  # one installer at a time (tests run in parallel)
  if command -v flock >/dev/null; then flock -w 600 9 || exit 1; fi
  if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$VERSION"; then install; fi
) 9>"$DATA/.schemathesis.lock"

exec "$VENV/bin/st" run "$BASE/openapi.json" \
  --url "$BASE" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --header "Authorization: Bearer $TOKEN" \
  --max-examples "${LIVECHAT_ST_MAX_EXAMPLES:-100}" \
  --seed "${LIVECHAT_ST_SEED:-20240501}" \
  --request-timeout 10 \
  --no-color \
  "$@"
