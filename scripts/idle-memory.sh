#!/usr/bin/env bash
# Measures the idle resident memory of `myelin serve` on the embedded default:
# a fresh data directory, a release build, a few requests (register, login,
# whoami), then VmRSS after the server has been idle for IDLE_SECS.
#
# Usage: scripts/idle-memory.sh   (IDLE_SECS=30 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECS="${IDLE_SECS:-30}"
PORT="${PORT:-18090}"
cargo build --release -q -p myelin
BIN="$PWD/target/release/myelin"
DIR="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"
MYELIN_LISTEN="127.0.0.1:$PORT" MYELIN_REGISTRATION=open MYELIN_LOG=warn "$BIN" serve >/dev/null 2>&1 &
PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -sf "$BASE/health" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
echo "after start:          $(rss) KiB"
curl -sf -X POST "$BASE/_matrix/client/v3/register" \
  -d '{"username":"alice","password":"correct horse battery","auth":{"type":"m.login.dummy"}}' >/dev/null
TOKEN=$(curl -sf -X POST "$BASE/_matrix/client/v3/login" \
  -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"correct horse battery"}' \
  | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/_matrix/client/v3/account/whoami" >/dev/null
echo "after a few requests: $(rss) KiB"
sleep "$IDLE_SECS"
echo "idle ${IDLE_SECS}s:            $(rss) KiB (VmHWM $(awk '/VmHWM/ {print $2}' "/proc/$PID/status") KiB)"
