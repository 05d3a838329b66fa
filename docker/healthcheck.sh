#!/usr/bin/env bash
# Docker's HEALTHCHECK: healthy when the app database answers a query and the Dagster webserver answers HTTP.
set -euo pipefail
teamu db psql -Atqc 'select 1' > /dev/null
python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/server_info', timeout=5)"
