"""The embedded server's lifecycle, pgvector, connection errors and the Dagster instance on Postgres."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from teamu_assets.db import server
from teamu_assets.db.connection import DatabaseError, connect, database_of, ensure_pgvector, with_database
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.jobs import (
    WRITES_MARTS_AND_EMBEDDINGS,
    full_refresh_job,
    incremental_refresh_job,
    post_freshness_job,
)

pytestmark = pytest.mark.integration


def test_start_reuses_a_running_server_and_stop_stops_it(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    first = server.start(pgdata)
    try:
        again = server.start(pgdata)
        assert again == first, "a second start must reuse the running server"
        with connect(first.url("postgres")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        assert server.stop(pgdata) is True
    assert server.status(pgdata) is None
    assert server.stop(pgdata) is False
    restarted = server.start(pgdata)
    try:
        assert restarted.pid != first.pid
        assert restarted.port == first.port, "the port is stable across restarts of one data dir"
    finally:
        server.stop(pgdata)


def test_pgvector_is_at_least_0_8(db_url: str) -> None:
    version = ensure_pgvector(db_url)
    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 8)
    with connect(db_url) as conn:
        distance = conn.execute("select '[1,0,0]'::vector <#> '[0.5,0,0]'::vector").fetchone()[0]
    assert distance == pytest.approx(-0.5)


def test_unreachable_url_names_host_and_database_but_not_the_password() -> None:
    with pytest.raises(DatabaseError) as error:
        connect("postgresql://analyst:s3cret-pw@127.0.0.1:1/teamu_prod")
    message = str(error.value)
    assert "127.0.0.1" in message and "teamu_prod" in message
    assert "s3cret-pw" not in message


def test_missing_database_is_a_clear_error(server_url: str) -> None:
    with pytest.raises(DatabaseError, match="database no_such_db"):
        ensure_pgvector(with_database(server_url, "no_such_db"))


def test_dagster_instance_lives_in_postgres(db_url: str, tmp_path: Path) -> None:
    from dagster import DagsterInstance

    database = database_of(db_url)
    config_path = write_dagster_yaml(tmp_path, db_url, database=database)
    config = yaml.safe_load(config_path.read_text())
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_runs() == []
        # The two refresh jobs write the same tables: the queue runs one of them at a time.
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        ((key, value),) = WRITES_MARTS_AND_EMBEDDINGS.items()
        assert {"key": key, "value": value, "limit": 1} in limits
        for job in (incremental_refresh_job, full_refresh_job, post_freshness_job):
            assert job.tags == WRITES_MARTS_AND_EMBEDDINGS
    with connect(db_url) as conn:
        tables = {row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
    assert {"runs", "event_logs", "instigators"} <= tables


@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the server runs as that user, group included")
def test_started_as_root_the_server_runs_in_its_own_users_group_not_root(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    info = server.start(pgdata)
    try:
        with connect(info.superuser_url("postgres")) as conn:
            # What a superuser's `copy ... from program` gets: the server's own OS identity.
            conn.execute("create temporary table identity (line text)")
            conn.execute("copy identity from program 'id'")
            (identity,) = conn.execute("select line from identity").fetchone()
    finally:
        server.stop(pgdata)
    assert "uid=0(" not in identity
    assert "gid=0(" not in identity and "groups=0(" not in identity and ",0(" not in identity
