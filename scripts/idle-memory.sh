#!/usr/bin/env bash
# Measures the idle resident memory of `myelin serve` on the embedded default
# and, with --synapse, of Synapse (from PyPI, on SQLite) in the same run:
# a fresh data directory each, a few requests (register, login, whoami), then
# VmRSS after IDLE_SECS of idling.
#
# Usage: scripts/idle-memory.sh [--synapse]   (IDLE_SECS=30 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
IDLE_SECS="${IDLE_SECS:-30}"
WITH_SYNAPSE=0
[ "${1:-}" = "--synapse" ] && WITH_SYNAPSE=1
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# A few requests a client makes first: register (UIA dummy), log in, whoami.
exercise() {
  local base="$1" session token
  session=$(curl -s -X POST "$base/_matrix/client/v3/register" \
    -d '{"username":"alice","password":"correct horse battery"}' | sed -E 's/.*"session":"([^"]+)".*/\1/')
  curl -sf -X POST "$base/_matrix/client/v3/register" \
    -d "{\"username\":\"alice\",\"password\":\"correct horse battery\",\"auth\":{\"type\":\"m.login.dummy\",\"session\":\"$session\"}}" >/dev/null
  token=$(curl -sf -X POST "$base/_matrix/client/v3/login" \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"correct horse battery"}' \
    | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -sf -H "Authorization: Bearer $token" "$base/_matrix/client/v3/account/whoami" >/dev/null
}

wait_up() {
  for _ in $(seq 1 600); do curl -sf "$1/_matrix/client/versions" >/dev/null && return 0; sleep 0.1; done
  echo "server at $1 did not start" >&2; exit 1
}

measure() {
  local name="$1" pid="$2" base="$3"
  wait_up "$base"
  sleep 2
  local start; start=$(rss "$pid")
  exercise "$base"
  sleep "$IDLE_SECS"
  printf '%-28s after start %7s KiB   idle %ss after requests %7s KiB   peak %7s KiB\n' \
    "$name" "$start" "$IDLE_SECS" "$(rss "$pid")" "$(hwm "$pid")"
}

# --- Myelin ---------------------------------------------------------------
cargo build --release -q -p myelin
mkdir "$WORK/myelin"
(cd "$WORK/myelin" && MYELIN_LISTEN=127.0.0.1:18090 MYELIN_REGISTRATION=open MYELIN_LOG=warn \
  exec "$ROOT/target/release/myelin" serve >/dev/null 2>&1) &
PIDS+=($!)
measure "myelin (sqlite)" "${PIDS[-1]}" "http://127.0.0.1:18090"

# --- Synapse --------------------------------------------------------------
if [ "$WITH_SYNAPSE" -eq 1 ]; then
  VENV="${SYNAPSE_VENV:-$ROOT/target/synapse-venv}"
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import synapse' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q matrix-synapse
  fi
  mkdir "$WORK/synapse"
  (cd "$WORK/synapse" && "$VENV/bin/python" -m synapse.app.homeserver --server-name localhost \
      --config-path homeserver.yaml --generate-config --report-stats=no >/dev/null)
  # The generated file ends without a newline.
  cat >> "$WORK/synapse/homeserver.yaml" <<YAML

enable_registration: true
enable_registration_without_verification: true
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login: {address: {per_second: 1000, burst_count: 1000}, account: {per_second: 1000, burst_count: 1000}}
YAML
  sed -i 's/port: 8008/port: 18091/' "$WORK/synapse/homeserver.yaml"
  (cd "$WORK/synapse" && exec "$VENV/bin/python" -m synapse.app.homeserver -c homeserver.yaml >/dev/null 2>&1) &
  PIDS+=($!)
  echo "synapse $("$VENV/bin/python" -c 'import synapse; print(synapse.__version__)')" >&2
  measure "synapse (sqlite)" "${PIDS[-1]}" "http://127.0.0.1:18091"
fi
