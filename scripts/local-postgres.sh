#!/usr/bin/env bash
# A PostgreSQL server (Debian's) on 127.0.0.1, for a study shared by many workers: for trying
# it, and for the tests and CI. Prints the storage URL to pass as sweep.storage.
#
#   sudo scripts/local-postgres.sh start   # installs postgresql if missing; prints the URL
#   python -m greenai.train -m searcher=tpe space=paper3 sweep.storage=postgresql://greenai:greenai@127.0.0.1:5433/optuna
#   sudo scripts/local-postgres.sh stop
#
# Runs as root (the server itself runs as the postgres user). Data lives in
# $GREENAI_PG_DIR (/tmp/greenai-postgres); port $GREENAI_PG_PORT (5433).
set -euo pipefail
dir=${GREENAI_PG_DIR:-/tmp/greenai-postgres}
port=${GREENAI_PG_PORT:-5433}
url="postgresql://greenai:greenai@127.0.0.1:$port/optuna"

bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$found" ] || { echo "no PostgreSQL server binaries" >&2; exit 1; }
  echo "$found"
}

install() {
  ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 && return
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y postgresql >/dev/null || { apt-get update >/dev/null && apt-get install -y postgresql >/dev/null; }
}

psql_as_postgres() { runuser -u postgres -- "$(bin)/psql" -h 127.0.0.1 -p "$port" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

start() {
  install
  mkdir -p "$dir" && chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    runuser -u postgres -- "$(bin)/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  fi
  if ! runuser -u postgres -- "$(bin)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    runuser -u postgres -- "$(bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200" start >/dev/null
  fi
  psql_as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname='greenai'" | grep -q 1 \
    || psql_as_postgres -c "CREATE ROLE greenai LOGIN PASSWORD 'greenai'"
  psql_as_postgres -c "SELECT 1 FROM pg_database WHERE datname='optuna'" | grep -q 1 \
    || psql_as_postgres -c "CREATE DATABASE optuna OWNER greenai"
  echo "$url"
}

stop() {
  [ -f "$dir/data/PG_VERSION" ] && runuser -u postgres -- "$(bin)/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
