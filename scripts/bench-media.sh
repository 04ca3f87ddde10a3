#!/usr/bin/env bash
# Upload and download throughput (MB/s) of a release Myelin for 50 MiB files,
# with media on the local disk and on S3 (a local s3s-fs), driven by
# `loadtest media` on the same machine. SQLite database in both runs.
#
# Usage: scripts/bench-media.sh [disk|s3|both]   (default both)
# Needs s3s-fs for the s3 run: $MYELIN_TEST_S3S_FS, on the PATH or in
# ~/.cargo/bin (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WHICH="${1:-both}"
PORT=18200
S3_PORT=18201
SIZE_MB="${SIZE_MB:-50}"
COUNT="${COUNT:-3}"
cargo build --release -q -p myelin -p loadtest
LT="$ROOT/target/release/loadtest"
OUT="${OUT:-$ROOT/target/bench-media}"
mkdir -p "$OUT"
S3S="${MYELIN_TEST_S3S_FS:-$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")}"

run_server() {
  local store="$1" dir
  dir="$(mktemp -d)"
  local extra=()
  if [ "$store" = s3 ]; then
    mkdir -p "$dir/s3"
    "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key bench-secret \
      "$dir/s3" >"$OUT/s3s-fs.log" 2>&1 &
    S3_PID=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break; sleep 0.1; done
    extra=(MYELIN_MEDIA__BACKEND=s3 MYELIN_MEDIA__S3__ENDPOINT="http://127.0.0.1:$S3_PORT"
      MYELIN_MEDIA__S3__ACCESS_KEY_ID=bench MYELIN_MEDIA__S3__SECRET_ACCESS_KEY=bench-secret
      MYELIN_MEDIA__S3__BUCKET=bench)
  fi
  (cd "$dir" && exec env MYELIN_LISTEN="127.0.0.1:$PORT" MYELIN_REGISTRATION=open MYELIN_LOG=warn \
    MYELIN_RATE_LIMITS__REGISTRATION__PER_SECOND=0 MYELIN_RATE_LIMITS__LOGIN__PER_SECOND=0 \
    MYELIN_MEDIA__MAX_UPLOAD_BYTES=$((200 * 1024 * 1024)) \
    MYELIN_AUTH__PASSWORD_HASH_MEMORY_KIB=1024 MYELIN_AUTH__PASSWORD_HASH_ITERATIONS=1 \
    "${extra[@]}" "$ROOT/target/release/myelin" serve >"$OUT/server-$store.log" 2>&1) &
  SERVER=$!
  for _ in $(seq 1 100); do
    kill -0 "$SERVER" 2>/dev/null || break
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return
    sleep 0.1
  done
  echo "server did not start (see $OUT/server-$store.log)" >&2; exit 1
}

bench() {
  local store="$1"
  S3_PID=
  run_server "$store"
  "$LT" --base-url "http://127.0.0.1:$PORT" --label "myelin-$store" \
    media --size-mb "$SIZE_MB" --count "$COUNT" >"$OUT/$store.json"
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  if [ -n "$S3_PID" ]; then kill "$S3_PID"; wait "$S3_PID" 2>/dev/null || true; fi
}

case "$WHICH" in
  disk|s3) bench "$WHICH" ;;
  both) bench disk; bench s3 ;;
  *) echo "usage: $0 [disk|s3|both]" >&2; exit 2 ;;
esac
