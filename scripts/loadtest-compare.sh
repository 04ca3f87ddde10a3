#!/usr/bin/env bash
# Puts Myelin and Synapse side by side under the same load: the same
# `loadtest` scenarios, with the same parameters, against
#   myelin-sqlite     a release Myelin on a fresh SQLite database,
#   myelin-postgres   a release Myelin on a fresh PostgreSQL database,
#   synapse-postgres  Synapse (from PyPI) on a fresh PostgreSQL database,
# one server at a time (only the server under test runs, so they do not
# compete for the machine's cores), every rate limit off on each.
#
# Usage: scripts/loadtest-compare.sh [all|myelin|synapse]    (default all)
#
# Environment:
#   QUICK=1        a smoke-sized run (a few seconds per scenario)
#   OUT=DIR        where results go (default target/loadtest-compare)
#   SCENARIOS="…"  only these scenario keys (default all of them):
#                  messages-1x1 messages-10x1 messages-10x10 sync-fanout
#                  join-storm initial-sync chat
#   LT_<KEY>="…"   the options of one scenario, e.g.
#                  LT_MESSAGES_10X10="--users 10 --rooms 10 --messages 50"
#                  LT_CHAT="--users 50 --rooms 10 --duration 20 --rate 50"
#   SYNAPSE_VERSION=X.Y.Z   the matrix-synapse release to install
#   MYELIN_BENCH_POSTGRES_ADMIN_URL   PostgreSQL superuser URL (default
#                  postgres://postgres:postgres@127.0.0.1:5432/postgres)
#   LOADTEST=PATH  use this loadtest binary instead of building one
#   USE_SHARED_SECRET=0  register Synapse's users through m.login.dummy
#                  instead of Synapse's shared-secret registration
#
# What it installs (on a fresh Debian machine, with apt, when missing): curl,
# a C toolchain, Python with venv and headers, libpq headers (psycopg2 is
# built from source), PostgreSQL (started on 127.0.0.1:5432), a Rust toolchain
# through rustup; then `matrix-synapse[postgres]==$SYNAPSE_VERSION` from PyPI
# into the virtual environment target/synapse-venv (made once, reused while
# the pinned version stays the same). Synapse's configuration is
# scripts/synapse/homeserver.yaml.in and scripts/synapse/log.config.
#
# Results, in $OUT: <label>-<scenario>.json and .html, idle-<label>.txt (VmRSS of the server right after start),
# server-<label>.log, and compare.html / compare.md (every <label>-*.json in
# $OUT side by side: a `myelin` run then a `synapse` run compare too; a run
# replaces only its own labels' files).
#
# Each server gets a fresh database (created here, dropped on exit); every
# server this script starts is stopped on exit, whatever the exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WHICH="${1:-all}"
case "$WHICH" in
  all|myelin|synapse) ;;
  *) echo "usage: $0 [all|myelin|synapse]" >&2; exit 2 ;;
esac

SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
ADMIN_URL="${MYELIN_BENCH_POSTGRES_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
OUT="${OUT:-$ROOT/target/loadtest-compare}"
VENV="$ROOT/target/synapse-venv"
MYELIN_PORT=18300
SYNAPSE_PORT=18301
MYELIN_DB=myelin_loadtest_compare
SYNAPSE_DB=synapse_loadtest_compare

# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh

# --- Cleanup ---------------------------------------------------------------
SERVER=""          # pid of the server running now (the server process itself)
WORK="$(mktemp -d)"
CREATED_DBS=()

stop_server() {
  [ -n "$SERVER" ] || return 0
  kill "$SERVER" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
}

drop_db() {
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
}

cleanup() {
  local status=$?
  stop_server
  local db
  for db in "${CREATED_DBS[@]}"; do drop_db "$db"; done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Tools -----------------------------------------------------------------
if ! command -v curl >/dev/null 2>&1; then
  log "installing curl"
  apt_install curl ca-certificates
fi
if [ "$WHICH" != synapse ] || [ -z "${LOADTEST:-}" ]; then
  ensure_rust
elif ! command -v cc >/dev/null 2>&1; then
  log "installing a C compiler (psycopg2 is built from C)"
  apt_install build-essential
fi

# --- PostgreSQL ------------------------------------------------------------
# Needed by myelin-postgres and synapse-postgres (every mode but a
# myelin-only run could skip it; it is set up whatever the mode, for brevity).
ensure_postgres "$ADMIN_URL"

# The admin URL's parts, for Synapse's configuration.
if [[ "$ADMIN_URL" =~ ^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?/ ]]; then
  PG_USER="${BASH_REMATCH[2]}"
  PG_PASSWORD="${BASH_REMATCH[4]}"
  PG_HOST="${BASH_REMATCH[5]}"
  PG_PORT="${BASH_REMATCH[7]:-5432}"
else
  echo "cannot parse $ADMIN_URL as postgres://USER[:PASSWORD]@HOST[:PORT]/DB" >&2; exit 1
fi

# A value made safe for the replacement side of sed's s|…|…|.
sed_escape() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }

fresh_db() {  # fresh_db NAME [CREATE DATABASE options]
  local name="$1"; shift
  drop_db "$name"
  psql "$ADMIN_URL" -qc "CREATE DATABASE $name $*"
  CREATED_DBS+=("$name")
}

# --- Builds and installs ---------------------------------------------------
PACKAGES=()
[ "$WHICH" = synapse ] || PACKAGES+=(-p myelin)
[ -n "${LOADTEST:-}" ] || PACKAGES+=(-p loadtest)
if [ "${#PACKAGES[@]}" -gt 0 ]; then
  log "building ${PACKAGES[*]} (release)"
  cargo build --release -q "${PACKAGES[@]}"
fi
LT="${LOADTEST:-$ROOT/target/release/loadtest}"
MYELIN="$ROOT/target/release/myelin"

if [ "$WHICH" != myelin ]; then
  if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null)" != "$SYNAPSE_VERSION" ] \
     || ! "$VENV/bin/python" -c 'import synapse, psycopg2' 2>/dev/null; then
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1 \
       || ! command -v pg_config >/dev/null 2>&1 \
       || ! python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
      log "installing Python with venv and headers, and libpq headers (for psycopg2)"
      apt_install python3 python3-venv python3-dev libpq-dev
    fi
    log "installing matrix-synapse[postgres]==$SYNAPSE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "matrix-synapse[postgres]==$SYNAPSE_VERSION"
  fi
fi

# Synapse's shared-secret registration is used when USE_SHARED_SECRET=1
# (the default); Myelin's users register through the m.login.dummy flow.
HAS_SECRET=0; [ "${USE_SHARED_SECRET:-1}" = 1 ] && HAS_SECRET=1

# --- Scenarios ---------------------------------------------------------------
# key | loadtest subcommand | options (QUICK=1: smoke-sized). Synapse sends
# some 20–100 messages/s, so totals stay modest; every server gets the same.
if [ "${QUICK:-0}" = 1 ]; then
  DEFAULTS=(
    "messages-1x1|messages|--users 1 --rooms 1 --messages 30"
    "messages-10x1|messages|--users 10 --rooms 1 --messages 10"
    "messages-10x10|messages|--users 10 --rooms 10 --messages 10"
    "sync-fanout|sync-fanout|--members 5 --messages 10"
    "join-storm|join-storm|--users 10"
    "initial-sync|initial-sync|--users 5 --rooms 5 --messages-per-room 3"
    "chat|chat|--users 10 --rooms 4 --duration 5 --rate 20"
  )
else
  DEFAULTS=(
    "messages-1x1|messages|--users 1 --rooms 1 --messages 300"
    "messages-10x1|messages|--users 10 --rooms 1 --messages 100"
    "messages-10x10|messages|--users 10 --rooms 10 --messages 100"
    "sync-fanout|sync-fanout|--members 10 --messages 100"
    "join-storm|join-storm|--users 100"
    "initial-sync|initial-sync|--users 20 --rooms 20 --messages-per-room 10"
    "chat|chat|--users 100 --rooms 20 --duration 30 --rate 100"
  )
fi
SELECTED="${SCENARIOS:-}"
RUNS=()   # key|command|options, the ones this binary can run
for entry in "${DEFAULTS[@]}"; do
  IFS='|' read -r key cmd opts <<<"$entry"
  if [ -n "$SELECTED" ] && [[ " $SELECTED " != *" $key "* ]]; then continue; fi
  var="LT_$(tr 'a-z-' 'A-Z_' <<<"$key")"
  opts="${!var:-$opts}"
  RUNS+=("$key|$cmd|$opts")
done
[ "${#RUNS[@]}" -gt 0 ] || { echo "no scenario to run" >&2; exit 1; }

mkdir -p "$OUT"
FAILED=()

wait_health() {  # wait_health BASE_URL SECONDS
  for _ in $(seq 1 $(($2 * 10))); do
    curl -sf "$1/health" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server at $1 did not answer /health (see its log in $OUT)" >&2
  exit 1
}

# Idle RSS right after start: VmRSS once /health answers and 2 s have passed.
record_idle() {  # record_idle LABEL
  sleep 2
  local rss
  rss="$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status")"
  printf '%s idle RSS after start: %s KiB\n' "$1" "$rss" | tee "$OUT/idle-$1.txt" >&2
}

# Runs every selected scenario against the running server.
run_scenarios() {  # run_scenarios LABEL BASE_URL [extra global loadtest options]
  local label="$1" base="$2"; shift 2
  local entry key cmd opts args
  rm -f "$OUT/$label"-*.json "$OUT/$label"-*.html
  for entry in "${RUNS[@]}"; do
    IFS='|' read -r key cmd opts <<<"$entry"
    args=(--base-url "$base" --label "$label" "$@" --out "$OUT/$label-$key.json"
      --html "$OUT/$label-$key.html" --server-pid "$SERVER")
    log "$label: $cmd $opts"
    # shellcheck disable=SC2086  # $opts is a list of options
    "$LT" "${args[@]}" "$cmd" $opts >/dev/null || FAILED+=("$label $key")
  done
}

# --- Myelin ----------------------------------------------------------------
myelin_run() {  # myelin_run sqlite|postgres
  local backend="$1" label="myelin-$1" dir url
  dir="$WORK/$label"
  mkdir -p "$dir"
  url="sqlite:$dir/myelin.db"
  if [ "$backend" = postgres ]; then
    fresh_db "$MYELIN_DB"
    url="${ADMIN_URL%/*}/$MYELIN_DB"
  fi
  log "starting $label"
  (cd "$dir" && MYELIN_LISTEN="127.0.0.1:$MYELIN_PORT" MYELIN_REGISTRATION=open MYELIN_LOG=warn \
    MYELIN_DATABASE_URL="$url" \
    MYELIN_RATE_LIMITS__REGISTRATION__PER_SECOND=0 MYELIN_RATE_LIMITS__LOGIN__PER_SECOND=0 \
    MYELIN_RATE_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND=0 MYELIN_RATE_LIMITS__REPORTS__PER_SECOND=0 \
    MYELIN_AUTH__PASSWORD_HASH_MEMORY_KIB=1024 MYELIN_AUTH__PASSWORD_HASH_ITERATIONS=1 \
    exec "$MYELIN" serve >"$OUT/server-$label.log" 2>&1) &
  SERVER=$!
  wait_health "http://127.0.0.1:$MYELIN_PORT" 60
  record_idle "$label"
  run_scenarios "$label" "http://127.0.0.1:$MYELIN_PORT"
  stop_server
  [ "$backend" = postgres ] && drop_db "$MYELIN_DB"
  return 0
}

# --- Synapse ---------------------------------------------------------------
synapse_run() {
  local label=synapse-postgres dir secret
  dir="$WORK/$label"
  mkdir -p "$dir/media_store"
  fresh_db "$SYNAPSE_DB" "ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0"
  secret="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')"
  sed -e "s|@PORT@|$SYNAPSE_PORT|g" -e "s|@DATA_DIR@|$(sed_escape "$dir")|g" \
      -e "s|@DB_USER@|$(sed_escape "$PG_USER")|" -e "s|@DB_PASSWORD@|$(sed_escape "$PG_PASSWORD")|" \
      -e "s|@DB_HOST@|$PG_HOST|" -e "s|@DB_PORT@|$PG_PORT|" -e "s|@DB_NAME@|$SYNAPSE_DB|" \
      -e "s|@REGISTRATION_SHARED_SECRET@|$secret|" \
      -e "s|@MACAROON_SECRET@|$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')|" \
      -e "s|@FORM_SECRET@|$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')|" \
      "$ROOT/scripts/synapse/homeserver.yaml.in" >"$dir/homeserver.yaml"
  sed -e "s|@LOG_FILE@|$(sed_escape "$OUT/server-$label.log")|" "$ROOT/scripts/synapse/log.config" >"$dir/log.config"
  : >"$OUT/server-$label.log"
  (cd "$dir" && "$VENV/bin/python" -m synapse.app.homeserver -c homeserver.yaml --generate-keys >/dev/null)
  log "starting $label (Synapse $SYNAPSE_VERSION; the first start creates its schema)"
  # exec: $! is the Python process itself, whose CPU and memory loadtest reads.
  (cd "$dir" && exec "$VENV/bin/python" -m synapse.app.homeserver -c homeserver.yaml \
    >>"$OUT/server-$label.log" 2>&1) &
  SERVER=$!
  wait_health "http://127.0.0.1:$SYNAPSE_PORT" 180
  record_idle "$label"
  local extra=()
  [ "$HAS_SECRET" = 1 ] && extra=(--registration-shared-secret "$secret")
  run_scenarios "$label" "http://127.0.0.1:$SYNAPSE_PORT" "${extra[@]}"
  stop_server
  drop_db "$SYNAPSE_DB"
}

if [ "$WHICH" != synapse ]; then
  myelin_run sqlite
  myelin_run postgres
fi
if [ "$WHICH" != myelin ]; then
  synapse_run
fi

# --- Comparison --------------------------------------------------------------
log "comparing"
shopt -s nullglob
reports=("$OUT"/*.json)
shopt -u nullglob
if [ "${#reports[@]}" -ge 2 ]; then
  # Prints the Markdown table too.
  "$LT" compare "${reports[@]}" --html "$OUT/compare.html" --markdown "$OUT/compare.md" \
    || FAILED+=("compare")
fi

echo
echo "Results in $OUT:"
echo "  per run:   <label>-<scenario>.json and .html"
echo "  idle RSS:  idle-<label>.txt"
echo "  servers:   server-<label>.log"
echo "  compare:   compare.html, compare.md"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "FAILED runs: ${FAILED[*]}" >&2
  exit 1
fi
