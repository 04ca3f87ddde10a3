# Shared by scripts/test.sh and scripts/loadtest-compare.sh (sourced, not
# run): installing Debian packages, the Rust toolchain, and getting
# PostgreSQL up on loopback on a fresh Debian machine.

log() { printf '\n== %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ensure_rust: cargo on the PATH (rustup's toolchain installed when there is
# none) and a C compiler (the bundled SQLite, and psycopg2, are C).
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    log "installing the Rust toolchain (rustup)"
    apt_install curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cc >/dev/null 2>&1; then
    log "installing a C compiler"
    apt_install build-essential
  fi
}

pg_ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }

# ensure_postgres URL: PostgreSQL answering on 127.0.0.1:5432 (installed and
# started when it is not) and reachable at URL.
ensure_postgres() {
  local url="$1" version
  if ! pg_ready; then
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
      log "installing PostgreSQL"
      apt_install postgresql postgresql-client
    fi
    log "starting PostgreSQL"
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      # shellcheck disable=SC2012
      version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
      if [ -z "$version" ]; then
        # shellcheck disable=SC2012
        version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
        as_root pg_createcluster "$version" main
      fi
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
    pg_ready || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
  fi

  # A fresh Debian cluster authenticates TCP clients by password: give the
  # postgres role the password of the default URL (harmless under trust auth).
  if [ "$url" = "postgres://postgres:postgres@127.0.0.1:5432/postgres" ]; then
    if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
      log "setting the postgres role's password"
      if [ "$(id -u)" -eq 0 ]; then
        su postgres -c "psql -q -c \"ALTER ROLE postgres PASSWORD 'postgres'\""
      else
        sudo -u postgres psql -q -c "ALTER ROLE postgres PASSWORD 'postgres'"
      fi
    fi
  fi
  psql "$url" -Atqc 'select 1' >/dev/null \
    || { echo "cannot connect to PostgreSQL at $url" >&2; exit 1; }
}
