#!/usr/bin/env bash
# `make hub`: a demo JupyterHub on this machine with the shared iDDS service.
# Real JupyterHub + configurable-http-proxy (npm, ci/hub), users alice and bob with a password
# (dummy authenticator), single-user servers as local processes, the iDDS service managed by
# the hub (examples/jupyterhub_config.py, the config the tests in tests/hub use).
# Environment: HUB_PORT (default 8000), HUB_STATE (default .idds/hub), IDDS_HUB_PASSWORD
# (default idds-demo), IDDS_HUB_DB_URL (the service's database; default SQLite in HUB_STATE).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export IDDS_HUB_PORT=${HUB_PORT:-8000}
export IDDS_HUB_STATE=${HUB_STATE:-$PWD/.idds/hub}
export IDDS_HUB_PASSWORD=${IDDS_HUB_PASSWORD:-idds-demo}
mkdir -p "$IDDS_HUB_STATE"
url="http://127.0.0.1:${IDDS_HUB_PORT}"
log="$IDDS_HUB_STATE/hub.log"
echo "idds-jupyter: starting JupyterHub (log: $log) ..."
"$BIN/jupyterhub" -f examples/jupyterhub_config.py >"$log" 2>&1 &
hub=$!
trap 'kill -TERM $hub 2>/dev/null; wait $hub 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 120); do
  if ! kill -0 $hub 2>/dev/null; then
    echo "idds-jupyter: the hub exited; the end of its log:" >&2; tail -30 "$log" >&2; exit 1
  fi
  if curl -sf -o /dev/null "$url/hub/api/" && curl -sf -o /dev/null "$url/services/idds/idds/api/v1/ping"; then
    break
  fi
  sleep 0.5
done
curl -sf -o /dev/null "$url/services/idds/idds/api/v1/ping" || { echo "idds-jupyter: the iDDS service did not answer; see $log" >&2; exit 1; }
cat <<MSG

  JupyterHub with the shared iDDS service is up.

    open      $url/hub/login
    users     alice, bob (admin: admin), password: $IDDS_HUB_PASSWORD
    service   $url/services/idds/  (REST API: $url/services/idds/idds/api/v1/)

  In a notebook: from idds_jupyter import work — it reaches the shared service by itself.
  Ctrl-C stops the hub, its proxy, the service and the users' servers.

MSG
wait $hub
