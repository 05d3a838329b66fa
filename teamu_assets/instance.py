"""The Dagster instance's configuration: runs, events, schedules and sensor cursors live in Postgres.

Written as dagster.yaml under DAGSTER_HOME by `teamu db start`, so a bare `dagster dev` finds it. Plain file
writing, no Dagster import: the CLI runs it before any Dagster process exists.
"""

from __future__ import annotations

import json
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from teamu_assets.db.connection import with_database
from teamu_assets.db.server import DAGSTER_DATABASE

PASSWORD_ENV = "TEAMU_DATABASE_PASSWORD"


def dagster_yaml(server_url: str, database: str = DAGSTER_DATABASE) -> str:
    """dagster.yaml pointing every storage at `database` (default `dagster`) of the server behind `server_url`.

    The password, if any, stays out of the file: dagster reads it from TEAMU_DATABASE_PASSWORD, or, for a URL that
    names a libpq password file (the embedded server's), libpq reads it from that file, whose path the file holds.
    """
    parts = conninfo_to_dict(with_database(server_url, database))
    credentials = f"\n      password:\n        env: {PASSWORD_ENV}" if parts.get("password") else ""
    if parts.get("passfile"):
        # dagster-postgres hands params to libpq in its URL's query; JSON's quoting is YAML's.
        credentials += f"\n      params:\n        passfile: {json.dumps(str(parts['passfile']))}"
    return f"""# Written by `teamu db start`; edits are overwritten.
storage:
  postgres:
    postgres_db:
      hostname: "{parts.get("host", "localhost")}"
      port: {parts.get("port", 5432)}
      db_name: "{parts["dbname"]}"
      username: "{parts.get("user", "postgres")}"{credentials}
      # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, with which dagster-postgres fails.
      scheme: "postgresql+psycopg2"
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1
    # The refresh jobs write the same marts and embedding tables: one at a time (teamu_assets/jobs.py).
    tag_concurrency_limits:
      - key: "teamu/writes"
        value: "marts-and-embeddings"
        limit: 1
# Run monitoring (the daemon): a run whose worker died (pid gone) is marked failed and leaves the queue, a run
# stuck STARTING or CANCELING is failed/canceled after 3 minutes; a dead run is never resumed (the default
# launcher can't): it is failed, and the runs queued behind it start (teamu_assets/run_launcher.py).
run_launcher:
  module: teamu_assets.run_launcher
  class: LocalRunLauncher
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
telemetry:
  enabled: false
"""


def write_dagster_yaml(dagster_home: Path, server_url: str, database: str = DAGSTER_DATABASE) -> Path:
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(dagster_yaml(server_url, database))
    tmp.replace(path)
    return path
