#!/usr/bin/env bash
# Message throughput, send latency and /sync wake-up latency of a release
# Myelin on SQLite and on PostgreSQL, driven by `loadtest` on the same machine.
#
# Usage: scripts/bench-rooms.sh [sqlite|postgres|both]   (default both)
# Needs PostgreSQL at $MYELIN_BENCH_POSTGRES_ADMIN_URL
# (default postgres://postgres:postgres@127.0.0.1:5432/postgres) for the
# postgres run; each run gets a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WHICH="${1:-both}"
ADMIN_URL="${MYELIN_BENCH_POSTGRES_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
PORT=18100
cargo build --release -q -p myelin -p loadtest
LT="$ROOT/target/release/loadtest"
OUT="${OUT:-$ROOT/target/bench-rooms}"
mkdir -p "$OUT"

run_server() {
  local backend="$1" dir
  dir="$(mktemp -d)"
  local url="sqlite:$dir/myelin.db"
  if [ "$backend" = postgres ]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS myelin_bench_rooms" -c "CREATE DATABASE myelin_bench_rooms"
    url="${ADMIN_URL%/*}/myelin_bench_rooms"
  fi
  (cd "$dir" && MYELIN_LISTEN="127.0.0.1:$PORT" MYELIN_REGISTRATION=open MYELIN_LOG=warn \
    MYELIN_DATABASE_URL="$url" \
    MYELIN_RATE_LIMITS__REGISTRATION__PER_SECOND=0 MYELIN_RATE_LIMITS__LOGIN__PER_SECOND=0 \
    MYELIN_RATE_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND=0 \
    MYELIN_AUTH__PASSWORD_HASH_MEMORY_KIB=1024 MYELIN_AUTH__PASSWORD_HASH_ITERATIONS=1 \
    exec "$ROOT/target/release/myelin" serve >"$OUT/server-$backend.log" 2>&1) &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}

bench() {
  local backend="$1"
  run_server "$backend"
  local base="http://127.0.0.1:$PORT" label="myelin-$backend"
  "$LT" --base-url "$base" --label "$label" messages --users 1 --rooms 1 --messages 2000 >"$OUT/$backend-1x1.json"
  "$LT" --base-url "$base" --label "$label" messages --users 10 --rooms 1 --messages 500 >"$OUT/$backend-10x1.json"
  "$LT" --base-url "$base" --label "$label" messages --users 10 --rooms 10 --messages 500 >"$OUT/$backend-10x10.json"
  "$LT" --base-url "$base" --label "$label" messages --users 100 --rooms 100 --messages 50 >"$OUT/$backend-100x100.json"
  "$LT" --base-url "$base" --label "$label" sync-fanout --members 10 --messages 200 >"$OUT/$backend-fanout.json"
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
}

case "$WHICH" in
  sqlite|postgres) bench "$WHICH" ;;
  both) bench sqlite; bench postgres ;;
  *) echo "usage: $0 [sqlite|postgres|both]" >&2; exit 2 ;;
esac
