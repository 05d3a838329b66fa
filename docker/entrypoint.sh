#!/usr/bin/env bash
# Start the database (or check TEAMU_DATABASE_URL), then the three Dagster processes and the online updater. On
# `docker stop` (SIGTERM, handed on by tini), or when any of them exits, stop the others and then the embedded
# Postgres, so it shuts down cleanly instead of being killed with the container (and recovering at the next start).
set -euo pipefail

teamu db start
pids=()
dagster code-server start -m teamu_assets.definitions -h 127.0.0.1 -p 4000 &
pids+=("$!")
dagster-webserver -h 0.0.0.0 -p 3000 -w docker/workspace.yaml &
pids+=("$!")
dagster-daemon run -w docker/workspace.yaml &
pids+=("$!")
# The online updater (docs/OPERATIONS.md section 8); its HTTP endpoint on port 8787 only with a token.
teamu realtime ${TEAMU_REALTIME_TOKEN:+--http-port 8787 --http-host 0.0.0.0} &
pids+=("$!")

stop_all() {
    trap - TERM INT
    kill -TERM "${pids[@]}" 2> /dev/null || true
    wait "${pids[@]}" 2> /dev/null || true
    # With TEAMU_DATABASE_URL the server isn't ours to stop (`teamu db stop` refuses).
    if [[ -z "${TEAMU_DATABASE_URL:-}" ]]; then
        teamu db stop
    fi
}
trap 'stop_all; exit 143' TERM INT

status=0
wait -n || status=$?
stop_all
exit "$status"
