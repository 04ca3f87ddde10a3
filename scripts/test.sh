#!/usr/bin/env bash
# Runs every test of Myelin on a fresh Debian machine: installs and starts what
# the tests need (a Rust toolchain if missing, PostgreSQL on loopback, a Python
# virtual environment with the matrix-nio client), then runs the whole
# workspace's tests. Tests that need PostgreSQL or matrix-nio fail — never
# skip — when they cannot reach it.
#
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh

# --- Rust ----------------------------------------------------------------
ensure_rust

# --- PostgreSQL ----------------------------------------------------------
PG_URL="${MYELIN_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export MYELIN_TEST_POSTGRES_URL="$PG_URL"

ensure_postgres "$PG_URL"

# --- Real clients (matrix-nio) ---------------------------------------------
# The end-to-end encryption test drives matrix-nio, a Python client, from a
# virtual environment made once per requirements file.
NIO_VENV="${MYELIN_NIO_VENV:-$PWD/target/nio-venv}"
NIO_REQUIREMENTS=crates/myelin/tests/clients/requirements.txt
if ! cmp -s "$NIO_REQUIREMENTS" "$NIO_VENV/.requirements" 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    log "installing Python with venv (for the matrix-nio client test)"
    apt_install python3 python3-venv
  fi
  log "installing matrix-nio into $NIO_VENV"
  rm -rf "$NIO_VENV"
  python3 -m venv "$NIO_VENV"
  "$NIO_VENV/bin/pip" install -q --disable-pip-version-check -r "$NIO_REQUIREMENTS"
  cp "$NIO_REQUIREMENTS" "$NIO_VENV/.requirements"
fi
export MYELIN_NIO_PYTHON="$NIO_VENV/bin/python"

# --- S3 (s3s-fs) -----------------------------------------------------------
# The S3 media backend's tests run against s3s-fs, a real S3-compatible server
# that checks SigV4 signatures, built once into ~/.cargo/bin.
S3S_FS="${MYELIN_TEST_S3S_FS:-}"
if [ -z "$S3S_FS" ]; then
  S3S_FS="$(command -v s3s-fs || true)"
fi
if [ -z "$S3S_FS" ] && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  S3S_FS="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
fi
if [ -z "$S3S_FS" ]; then
  log "installing s3s-fs (for the S3 media backend tests)"
  cargo install s3s-fs@0.14.1 --features binary --locked
  S3S_FS="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
fi
export MYELIN_TEST_S3S_FS="$S3S_FS"

# --- Tests ---------------------------------------------------------------
log "running the tests"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --locked "$@"
