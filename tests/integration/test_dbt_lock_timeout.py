"""A full refresh of a mart while an analyst's transaction reads it: the rename that swaps the new table in
waits at most marts_lock_timeout (dbt_project.yml) and fails with a clear error, instead of waiting as long as
the analyst does while every ml.recommend_posts call queues behind it. The old table stays, and stays served."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect, dbt_env
from teamu_assets.db.recommend import install_serving_functions
from tests.integration.test_dbt import DBT_EXECUTABLE, DBT_PROJECT_DIR, Dbt

pytestmark = pytest.mark.integration

AT = "2024-03-01 12:00+00"
# Without the lock timeout dbt would wait for the analyst, who never commits: this bounds the test instead.
HANG_GUARD_SECONDS = 300


@pytest.fixture(scope="module")
def built(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Dbt]:
    url = module_db_url
    bootstrap.prepare_app_database(url)
    with connect(url) as conn:
        for statement in (
            "insert into raw_supabase.users (user_id, username, created_at, updated_at) values"
            " (1, 'a', %(at)s, %(at)s), (2, 'b', %(at)s, %(at)s)",
            "insert into raw_supabase.posts (post_id, user_id, title, is_local, created_at, updated_at) values"
            " (101, 1, 'One', false, %(at)s, %(at)s), (102, 2, 'Two', false, %(at)s, %(at)s)",
            "insert into raw_supabase.votes values (1, 102, 1, 1, %(at)s)",
        ):
            conn.execute(statement, {"at": AT})
    dbt = Dbt({**os.environ, **dbt_env(url)}, Path(tmp_path_factory.mktemp("dbt")))
    dbt.run("build")
    install_serving_functions(url)
    return url, dbt


def test_an_open_reader_makes_the_marts_full_refresh_fail_fast(built: tuple[str, Dbt]) -> None:
    url, dbt = built
    command = [DBT_EXECUTABLE, "run", "--full-refresh", "--select", "post_features", "--project-dir"]
    command += [str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    command += ["--target-path", str(dbt.work_dir / "target"), "--log-path", str(dbt.work_dir / "logs")]
    with connect(url) as analyst:
        # An analyst's transaction left open after a query: it holds its lock on the mart until it ends.
        before = analyst.execute("select post_id, view_count from marts.post_features order by 1").fetchall()
        result = subprocess.run(
            command, cwd=DBT_PROJECT_DIR, env=dbt.env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS
        )
        assert result.returncode != 0
        assert "canceling statement due to lock timeout" in result.stdout
        # The analyst's transaction was not disturbed, and serving reads the same table from another connection.
        assert analyst.execute("select post_id, view_count from marts.post_features order by 1").fetchall() == before
        with connect(url) as serving:
            served = serving.execute("select post_id from ml.recommend_posts(2, 10)").fetchall()
        assert served == [(101,)]
    with connect(url) as conn:
        assert conn.execute("select post_id, view_count from marts.post_features order by 1").fetchall() == before
