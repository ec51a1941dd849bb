#!/usr/bin/env bash
# A real Rucio server for the tests (tests/rucio_server.py starts it on loopback).
# The server is a separate venv, outside the project's environment (the project only
# needs rucio-clients): installed once, cached in $RUCIO_SERVER_VENV.
#   bash ci/rucio.sh deps   -> install (idempotent)
#   bash ci/rucio.sh path   -> print the venv's path
set -euo pipefail
RUCIO_VERSION="${RUCIO_VERSION:-41.5.1}"
VENV="${RUCIO_SERVER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/idds-jupyter/rucio-server-$RUCIO_VERSION}"
PY="${PY:-python3}"
case "${1:-deps}" in
  path) echo "$VENV" ;;
  deps)
    if [ -x "$VENV/bin/gunicorn" ] && [ -f "$VENV/.installed" ]; then exit 0; fi
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
    "$VENV/bin/pip" install -q "rucio==$RUCIO_VERSION" gunicorn 'psycopg[binary]' coilmq stomp.py
    touch "$VENV/.installed"
    ;;
  *) echo "usage: $0 deps|path" >&2; exit 2 ;;
esac
