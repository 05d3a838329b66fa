#!/usr/bin/env bash
# Start the database (or check TEAMU_DATABASE_URL), then the three Dagster processes; exit when any one exits.
set -euo pipefail
teamu db start
dagster code-server start -m teamu_assets.definitions -h 127.0.0.1 -p 4000 &
dagster-webserver -h 0.0.0.0 -p 3000 -w docker/workspace.yaml &
dagster-daemon run -w docker/workspace.yaml &
wait -n
