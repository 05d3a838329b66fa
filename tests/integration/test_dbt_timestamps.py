"""Extreme timestamps in the Supabase tables ('infinity', year 2100, before 2000) stop at staging: the rows
carrying one are left out of the marts (a dbt warning on each source column counts them), so the marts'
watermarks stay at real times and a post dated 2100 can't top everyone's recommendations."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect, dbt_env
from teamu_assets.db.recommend import install_serving_functions
from tests.integration.test_dbt import Dbt

pytestmark = pytest.mark.integration

AT = "2024-03-01 12:00+00"
USERS = [(1, AT, AT), (2, AT, AT), (3, AT, "infinity"), (4, "1970-01-01 00:00+00", AT)]
# (post_id, author, created_at, updated_at)
POSTS = [
    (101, 1, AT, AT),
    (102, 2, AT, AT),
    (103, 1, "infinity", "infinity"),
    (104, 2, "2100-01-01 00:00+00", "2100-01-01 00:00+00"),
    (105, 1, AT, "2100-01-01 00:00+00"),
]
# (vote_id, post_id, user_id, created_at): one plausible upvote, then one dated 2100 and one at infinity.
VOTES = [(1, 102, 1, AT), (2, 101, 2, "2100-01-01 00:00+00"), (3, 101, 2, "infinity")]
COMMENTS = [(1, 102, 1, "-infinity")]
# Rows each source column's plausible_time test finds (a row can fail two columns).
LEFT_OUT = {
    ("users", "created_at"): 1,
    ("users", "updated_at"): 1,
    ("posts", "created_at"): 2,
    ("posts", "updated_at"): 3,
    ("votes", "created_at"): 2,
    ("comments", "created_at"): 1,
    ("projects", "created_at"): 0,
    ("project_members", "joined_at"): 0,
}


@pytest.fixture(scope="module")
def built(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Dbt]:
    url = module_db_url
    bootstrap.prepare_app_database(url)
    with connect(url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "insert into raw_supabase.users (user_id, username, created_at, updated_at) values (%s, 'u', %s, %s)",
            USERS,
        )
        cursor.executemany(
            "insert into raw_supabase.posts (post_id, user_id, title, is_local, created_at, updated_at)"
            " values (%s, %s, 'A post', false, %s, %s)",
            POSTS,
        )
        cursor.executemany("insert into raw_supabase.votes values (%s, %s, %s, 1, %s)", VOTES)
        cursor.executemany("insert into raw_supabase.comments values (%s, %s, %s, 'hi', %s)", COMMENTS)
    dbt = Dbt({**os.environ, **dbt_env(url)}, Path(tmp_path_factory.mktemp("dbt")))
    dbt.run("build")
    install_serving_functions(url)
    return url, dbt


def test_rows_with_implausible_times_are_left_out_of_the_marts(built: tuple[str, Dbt]) -> None:
    url, _ = built
    with connect(url) as conn:
        posts = {row[0] for row in conn.execute("select post_id from marts.post_features")}
        users = {row[0] for row in conn.execute("select user_id from marts.user_features")}
        interactions = conn.execute("select user_id, post_id, kind from marts.interactions").fetchall()
    assert posts == {101, 102}
    assert users == {1, 2}
    assert interactions == [(1, 102, "upvote")]


def test_the_watermarks_stay_at_real_times(built: tuple[str, Dbt]) -> None:
    url, _ = built
    latest = datetime.now(UTC) + timedelta(days=1)
    with connect(url) as conn:
        watermarks = conn.execute(
            "select (select max(updated_at) from marts.post_features), (select max(updated_at) from"
            " marts.user_features), (select max(occurred_at) from marts.interactions)"
        ).fetchone()
    assert all(watermark is not None and watermark < latest for watermark in watermarks)


def test_a_post_dated_2100_is_never_recommended(built: tuple[str, Dbt]) -> None:
    url, _ = built
    with connect(url) as conn:
        served = {row[0] for row in conn.execute("select post_id from ml.recommend_posts(2, 10)")}
    assert served == {101}  # the popularity fallback: the user's own post 102 and the rest left out


def test_the_left_out_rows_are_warnings_on_their_source_tables(built: tuple[str, Dbt]) -> None:
    _, dbt = built
    results = json.loads((dbt.work_dir / "target" / "run_results.json").read_text())["results"]
    assert not [result["unique_id"] for result in results if result["status"] in ("error", "fail")]
    found = {}
    for table, column in LEFT_OUT:
        (result,) = [r for r in results if f".source_plausible_time_supabase_{table}_{column}." in r["unique_id"]]
        found[table, column] = (result["status"], result["failures"])
    assert found == {key: ("warn" if rows else "pass", rows) for key, rows in LEFT_OUT.items()}


def test_a_time_stamped_hours_ahead_hides_no_later_change(built: tuple[str, Dbt]) -> None:
    """Staging accepts times up to a day ahead (client clocks). A vote and a profile edit stamped six hours ahead
    reach the marts; the changes made after them, stamped now, must reach the next incremental refresh too, as
    a full refresh would have them. (Runs last: it changes the module's data.)"""
    url, dbt = built
    with connect(url) as conn:
        conn.execute("insert into raw_supabase.votes values (10, 101, 2, 1, now() + interval '6 hours')")
        conn.execute(
            "update raw_supabase.users set bio = 'ahead', updated_at = now() + interval '6 hours' where user_id = 1"
        )
    dbt.run("run", "--select", "int_interactions+")
    with connect(url) as conn:
        conn.execute("insert into raw_supabase.votes values (11, 102, 1, 1, now())")
        conn.execute("update raw_supabase.users set bio = 'edited', updated_at = now() where user_id = 2")
    dbt.run("run", "--select", "int_interactions+")
    with connect(url) as conn:
        upvotes = conn.execute(
            "select user_id, post_id, occurred_at > now() from marts.interactions where kind = 'upvote'"
            " order by occurred_at"
        ).fetchall()
        bios = dict(conn.execute("select user_id, bio from marts.user_features").fetchall())
    # The fixture's upvote, the one made now, the one stamped ahead.
    assert upvotes == [(1, 102, False), (1, 102, False), (2, 101, True)]
    assert bios == {1: "ahead", 2: "edited"}
