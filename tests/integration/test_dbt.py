"""The dbt project on a real Postgres: a tiny hand-made fixture through `dbt build`, marts checked against
hand-computed values, a full refresh of unchanged data and an incremental refresh that must mark only the
affected rows for re-embedding, the analyst role, docs.

Four dbt invocations in all (build, full refresh of the marts, incremental build, docs generate): dbt starts
slowly.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from teamu_assets.db import schema
from teamu_assets.db.connection import connect, dbt_env
from teamu_assets.db.embeddings import KINDS, write_embeddings
from teamu_assets.db.features import changed_since_embedding
from teamu_assets.settings import DBT_EXECUTABLE, DBT_PROJECT_DIR

pytestmark = pytest.mark.integration


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


# users: (user_id, username, bio, passions, latitude, longitude, created_at, updated_at)
USERS = [
    (1, " alice ", "  Hi  ", ["music", " art ", ""], 52.5, 13.4, at("2024-01-01"), at("2024-01-02")),
    # NULL passions, latitude off the globe
    (2, "bob", "", None, 123.4, 13.0, at("2024-01-01"), at("2024-01-03")),
    (3, "carol", "Builder", ["code"], None, None, at("2024-01-02"), at("2024-01-02")),
    (4, "dave", None, [], 48.1, 11.6, at("2024-01-05"), at("2024-01-05")),
]
PROJECTS = [
    (1, 1, "Band site", at("2024-01-03")),
    (2, 1, "   ", at("2024-01-04")),
    (3, 3, "Compiler", at("2024-01-04")),
]
# project_members: (project_id, user_id, role, joined_at)
PROJECT_MEMBERS = [
    (1, 2, "  ", at("2024-01-06")),  # blank role: 'member'
    (1, 4, " Designer ", at("2024-01-05")),  # joined before bob: listed before him
    (3, 3, "admin", at("2024-01-04")),  # the owner's own row: still 'owner', listed once
]
# posts: (post_id, user_id, title, description, is_local, latitude, longitude, created_at, updated_at)
POSTS = [
    (101, 1, "Concert", "Live tonight", True, 52.5, 13.4, at("2024-02-01"), at("2024-02-01")),
    (102, 2, "Paint", None, False, None, None, at("2024-02-02"), at("2024-02-03")),
    (103, 3, "Rust tips", "Use cargo", False, None, None, at("2024-02-03"), at("2024-02-03")),
    (104, 3, " ", "Untitled notes", True, 10.0, 500.0, at("2024-02-04"), at("2024-02-04")),
    (105, 4, "Hiking", "Alps", False, None, None, at("2024-02-05"), at("2024-02-05")),
]
# votes: (vote_id, post_id, user_id, value, created_at)
VOTES = [
    (1, 101, 2, 1, at("2024-03-01", 10)),
    (2, 101, 3, 1, at("2024-03-01", 11)),
    (3, 102, 1, -1, at("2024-03-02")),  # a downvote: counts in vote_count, is no interaction
    (4, 103, 1, 1, at("2024-03-03")),
    (5, 103, 3, 1, at("2024-03-03")),  # the author's own upvote: rejected as an interaction
]
# comments: (comment_id, post_id, user_id, body, created_at)
COMMENTS = [
    (1, 101, 2, "Great!", at("2024-03-04")),
    (2, 101, 1, "Thanks", at("2024-03-05")),  # the author's reply: in the post's comments, not an interaction
    (3, 101, 3, "   ", at("2024-03-06")),  # blank: an interaction, but no comment text
    (4, 103, 1, "Nice tips", at("2024-03-07")),
]
# Mixpanel: (insert_id, event, distinct_id, event_time, properties)
EVENTS = [
    ("e1", "Post Viewed", "2", at("2024-03-10", 10), {"post_id": 101, "duration_ms": 3000}),
    ("e2", "Post Viewed", "2", at("2024-03-10", 10), {"post_id": 101, "duration_ms": 5000}),  # duplicate view
    ("e3", "Post Viewed", "1", at("2024-03-11"), {"post_id": 103, "duration_ms": 10000}),
    ("e4", "Post Viewed", "1", at("2024-03-11", 13), {"post_id": 999, "duration_ms": 1000}),  # unknown post
    ("e5", "Post Viewed", "42", at("2024-03-11", 14), {"post_id": 101, "duration_ms": 1000}),  # unknown user
    ("e6", "Post Viewed", "3", at("2024-03-12"), {"post_id": 102, "duration_ms": 7000}),
    ("e7", "Post Viewed", "3", at("2024-03-13"), {"post_id": 102}),  # no view time tracked
    ("e8", "Recommendation Shown", "1", at("2024-03-13"), {"post_ids": [101, 102], "request_id": "r1"}),
    ("e9", "Post Viewed", "3", at("2024-03-13", 15), {"post_id": 103, "duration_ms": 2000}),  # own post
]
# The incremental step: user 4 views post 102, a late copy of e1 arrives, user 1 edits their bio.
NEW_EVENTS = [
    ("e10", "Post Viewed", "4", at("2024-04-01"), {"post_id": 102, "duration_ms": 2000}),
    ("e11", "Post Viewed", "2", at("2024-03-10", 10), {"post_id": 101, "duration_ms": 9000}),
]
PROFILE_UPDATE = ("Hello", at("2024-04-02"), 1)  # (bio, updated_at, user_id)

EXPECTED_USERS = {
    1: {
        "username": "alice",
        "passions": ["music", "art"],
        "latitude": 52.5,
        "longitude": 13.4,
        "bio": "Hi",
        "project_titles": ["Band site"],
        "created_post_titles": ["Concert"],
        "viewed_count": 1,
        "upvoted_count": 1,
        "commented_count": 1,
        "recent_post_ids": [103],
        "created_at": at("2024-01-01"),
        "updated_at": at("2024-03-11"),
    },
    2: {
        "username": "bob",
        "passions": [],
        "latitude": None,
        "longitude": None,
        "bio": None,
        "project_titles": [],
        "created_post_titles": ["Paint"],
        "viewed_count": 1,
        "upvoted_count": 1,
        "commented_count": 1,
        "recent_post_ids": [101],
        "created_at": at("2024-01-01"),
        "updated_at": at("2024-03-10", 10),
    },
    3: {
        "username": "carol",
        "passions": ["code"],
        "latitude": None,
        "longitude": None,
        "bio": "Builder",
        "project_titles": ["Compiler"],
        "created_post_titles": ["Rust tips"],
        "viewed_count": 2,
        "upvoted_count": 1,
        "commented_count": 1,
        "recent_post_ids": [102, 101],
        "created_at": at("2024-01-02"),
        "updated_at": at("2024-03-13"),
    },
    4: {
        "username": "dave",
        "passions": [],
        "latitude": 48.1,
        "longitude": 11.6,
        "bio": None,
        "project_titles": [],
        "created_post_titles": ["Hiking"],
        "viewed_count": 0,
        "upvoted_count": 0,
        "commented_count": 0,
        "recent_post_ids": [],
        "created_at": at("2024-01-05"),
        "updated_at": at("2024-02-05"),
    },
}
EXPECTED_POSTS = {
    101: {
        "user_id": 1,
        "title": "Concert",
        "description": "Live tonight",
        "post_length": 19,
        "comments": ["Thanks", "Great!"],
        "vote_count": 2,
        "view_count": 1,
        "avg_time_viewed": timedelta(seconds=3),
        "is_local": True,
        "latitude": 52.5,
        "longitude": 13.4,
        "updated_at": at("2024-03-10", 10),
    },
    102: {
        "user_id": 2,
        "title": "Paint",
        "description": None,
        "post_length": 5,
        "comments": [],
        "vote_count": -1,
        "view_count": 2,
        "avg_time_viewed": timedelta(seconds=7),
        "is_local": False,
        "latitude": None,
        "longitude": None,
        "updated_at": at("2024-03-13"),
    },
    103: {
        "user_id": 3,
        "title": "Rust tips",
        "description": "Use cargo",
        "post_length": 18,
        "comments": ["Nice tips"],
        "vote_count": 2,
        "view_count": 1,
        "avg_time_viewed": timedelta(seconds=10),
        "is_local": False,
        "latitude": None,
        "longitude": None,
        "updated_at": at("2024-03-11"),
    },
    104: {
        "user_id": 3,
        "title": None,
        "description": "Untitled notes",
        "post_length": 14,
        "comments": [],
        "vote_count": 0,
        "view_count": 0,
        "avg_time_viewed": None,
        "is_local": True,
        "latitude": None,
        "longitude": None,
        "updated_at": at("2024-02-04"),
    },
    105: {
        "user_id": 4,
        "title": "Hiking",
        "description": "Alps",
        "post_length": 10,
        "comments": [],
        "vote_count": 0,
        "view_count": 0,
        "avg_time_viewed": None,
        "is_local": False,
        "latitude": None,
        "longitude": None,
        "updated_at": at("2024-02-05"),
    },
}
# (user_id, post_id, kind, occurred_at, duration_ms)
EXPECTED_INTERACTIONS = {
    (2, 101, "view", at("2024-03-10", 10), 3000),
    (1, 103, "view", at("2024-03-11"), 10000),
    (3, 102, "view", at("2024-03-12"), 7000),
    (3, 102, "view", at("2024-03-13"), None),
    (2, 101, "upvote", at("2024-03-01", 10), None),
    (3, 101, "upvote", at("2024-03-01", 11), None),
    (1, 103, "upvote", at("2024-03-03"), None),
    (2, 101, "comment", at("2024-03-04"), None),
    (3, 101, "comment", at("2024-03-06"), None),
    (1, 103, "comment", at("2024-03-07"), None),
}
# The marts with the column their rows are ordered by.
MART_KEYS = (("user_features", "user_id"), ("post_features", "post_id"), ("interactions", "interaction_id"))
# (source, kind, rejection_reason) -> count
EXPECTED_REJECTED = {
    ("mixpanel", "view", "unknown_post"): 1,
    ("mixpanel", "view", "unknown_user"): 1,
    ("mixpanel", "view", "self_interaction"): 1,
    ("supabase_votes", "upvote", "self_interaction"): 1,
    ("supabase_comments", "comment", "self_interaction"): 1,
}


@dataclass(frozen=True)
class Dbt:
    """dbt runs against the test database, with target and logs in a folder of their own."""

    env: dict[str, str]
    work_dir: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [
            DBT_EXECUTABLE,
            *args,
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(self.work_dir / "target"),
            "--log-path",
            str(self.work_dir / "logs"),
        ]
        result = subprocess.run(command, cwd=DBT_PROJECT_DIR, env=self.env, capture_output=True, text=True)
        output = f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
        assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{output}"
        return result

    def run_results(self) -> dict[str, str]:
        """The last invocation's status of every node, by unique_id."""
        results = json.loads((self.work_dir / "target" / "run_results.json").read_text())
        return {result["unique_id"]: result["status"] for result in results["results"]}


@dataclass(frozen=True)
class Builds:
    """The marts and run statuses after the first build and after the incremental one."""

    first: dict[str, list[dict[str, Any]]]
    first_statuses: dict[str, str]
    second: dict[str, list[dict[str, Any]]]
    second_statuses: dict[str, str]
    rejected: dict[tuple[str, str, str], int]
    # kind -> ids changed_since_embedding selects, after the full refresh and after the incremental build
    re_embed_after_full_refresh: dict[str, set[int]]
    re_embed_after_increment: dict[str, set[int]]


def insert_events(conn: psycopg.Connection, events: list[tuple[str, str, str, datetime, dict]]) -> None:
    conn.cursor().executemany(
        "insert into raw_mixpanel.events (insert_id, event, distinct_id, event_time, properties, source_file)"
        " values (%s, %s, %s, %s, %s, 'fixture.jsonl')",
        [(*event[:4], Jsonb(event[4])) for event in events],
    )


def load_fixture(db_url: str) -> None:
    with connect(db_url) as conn:
        cursor = conn.cursor()
        cursor.executemany("insert into raw_supabase.users values (%s, %s, %s, %s, %s, %s, %s, %s)", USERS)
        cursor.executemany("insert into raw_supabase.projects values (%s, %s, %s, %s)", PROJECTS)
        cursor.executemany("insert into raw_supabase.project_members values (%s, %s, %s, %s)", PROJECT_MEMBERS)
        cursor.executemany(f"insert into raw_supabase.posts values ({', '.join(['%s'] * 9)})", POSTS)
        cursor.executemany("insert into raw_supabase.votes values (%s, %s, %s, %s, %s)", VOTES)
        cursor.executemany("insert into raw_supabase.comments values (%s, %s, %s, %s, %s)", COMMENTS)
        insert_events(conn, EVENTS)


def snapshot(db_url: str) -> dict[str, list[dict[str, Any]]]:
    with connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return {
            table: cursor.execute(f"select * from marts.{table} order by {key}").fetchall() for table, key in MART_KEYS
        }


def embed_every_mart_row(db_url: str) -> None:
    """Random vectors for every user and post of the marts, as a full embedding refresh writes them."""
    rng = np.random.default_rng(0)
    with connect(db_url) as conn:
        ids = {kind: [row[0] for row in conn.execute(f"select {kind}_id from marts.{kind}_features")] for kind in KINDS}
    for kind, kind_ids in ids.items():
        write_embeddings(db_url, kind, np.array(kind_ids), rng.normal(size=(len(kind_ids), 8)), "m1", mode="full")


def to_re_embed(db_url: str) -> dict[str, set[int]]:
    return {kind: set(changed_since_embedding(db_url, kind)) for kind in KINDS}


@pytest.fixture(scope="module")
def dbt(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Dbt:
    return Dbt({**os.environ, **dbt_env(db_url)}, tmp_path_factory.mktemp("dbt"))


@pytest.fixture(scope="module")
def builds(db_url: str, dbt: Dbt) -> Iterator[Builds]:
    # The analyst role goes in before dbt creates the marts: its default privileges must cover them.
    schema.apply(db_url, "raw_supabase", "raw_mixpanel", "analyst_role")
    load_fixture(db_url)
    dbt.run("build")
    first_statuses = dbt.run_results()
    embed_every_mart_row(db_url)
    # Recomputes every mart row (refreshed_at included) from unchanged data.
    dbt.run("run", "--full-refresh", "--select", "marts")
    first, re_embed_after_full_refresh = snapshot(db_url), to_re_embed(db_url)
    with connect(db_url) as conn:
        rejected = {
            (source, kind, reason): count
            for source, kind, reason, count in conn.execute(
                "select source, kind, rejection_reason, rejected_count from intermediate.int_interactions_rejected"
            )
        }
        insert_events(conn, NEW_EVENTS)
        conn.execute("update raw_supabase.users set bio = %s, updated_at = %s where user_id = %s", PROFILE_UPDATE)
    dbt.run("build")
    second, second_statuses = snapshot(db_url), dbt.run_results()
    yield Builds(
        first, first_statuses, second, second_statuses, rejected, re_embed_after_full_refresh, to_re_embed(db_url)
    )


def features(rows: list[dict[str, Any]], key: str, columns: set[str]) -> dict[int, dict[str, Any]]:
    return {row[key]: {column: row[column] for column in columns} for row in rows}


def failures(statuses: dict[str, str]) -> dict[str, str]:
    return {node: status for node, status in statuses.items() if status not in {"pass", "success", "warn"}}


def by_key(rows: list[dict[str, Any]], key: str) -> dict[int, dict[str, Any]]:
    return {row[key]: row for row in rows}


def test_first_build_passes_every_test_and_reports_rejects_as_a_warning(builds: Builds) -> None:
    warned = {node for node, status in builds.first_statuses.items() if status == "warn"}
    assert warned == {"test.teamu.interactions_rejected_are_reported"}
    assert failures(builds.first_statuses) == {}
    assert "model.teamu.user_features" in builds.first_statuses


def test_user_features_equal_hand_computed_values(builds: Builds) -> None:
    columns = set(EXPECTED_USERS[1])
    assert features(builds.first["user_features"], "user_id", columns) == EXPECTED_USERS


def test_post_features_equal_hand_computed_values(builds: Builds) -> None:
    columns = set(EXPECTED_POSTS[101])
    assert features(builds.first["post_features"], "post_id", columns) == EXPECTED_POSTS


def test_teams_list_the_owner_first_then_members_by_joining(db_url: str, builds: Builds) -> None:
    with connect(db_url) as conn:
        rows = conn.execute(
            "select project_id, title, owner_id, member_ids, member_roles, member_count from marts.teams order by 1"
        ).fetchall()
    assert rows == [
        (1, "Band site", 1, [1, 4, 2], ["owner", "designer", "member"], 3),
        (2, None, 1, [1], ["owner"], 1),
        (3, "Compiler", 3, [3], ["owner"], 1),
    ]


def test_interactions_are_deduplicated_known_and_not_on_own_posts(builds: Builds) -> None:
    rows = builds.first["interactions"]
    got = {(r["user_id"], r["post_id"], r["kind"], r["occurred_at"], r["duration_ms"]) for r in rows}
    assert got == EXPECTED_INTERACTIONS
    assert len(rows) == len(EXPECTED_INTERACTIONS)
    assert len({row["interaction_id"] for row in rows}) == len(rows)


def test_left_out_interactions_are_counted_by_reason(builds: Builds) -> None:
    assert builds.rejected == EXPECTED_REJECTED


def test_incremental_refresh_changes_only_the_touched_rows(builds: Builds) -> None:
    users_before = by_key(builds.first["user_features"], "user_id")
    users_after = by_key(builds.second["user_features"], "user_id")
    posts_before = by_key(builds.first["post_features"], "post_id")
    posts_after = by_key(builds.second["post_features"], "post_id")

    def changed(before: dict[int, dict], after: dict[int, dict], column: str) -> set[int]:
        return {key for key in after if before[key][column] != after[key][column]}

    # User 4 viewed post 102, user 1 edited their bio; the late copy of e1 changes nothing.
    for column in ("updated_at", "feature_hash", "refreshed_at"):
        assert changed(users_before, users_after, column) == {1, 4}, column
        assert changed(posts_before, posts_after, column) == {102}, column
    assert users_after[4]["viewed_count"] == 1
    assert users_after[4]["recent_post_ids"] == [102]
    assert users_after[4]["updated_at"] == at("2024-04-01")
    assert users_after[1]["bio"] == "Hello"
    assert users_after[1]["updated_at"] == at("2024-04-02")
    assert posts_after[102]["view_count"] == 3
    assert posts_after[102]["avg_time_viewed"] == timedelta(seconds=4.5)
    assert posts_after[102]["updated_at"] == at("2024-04-01")


def test_a_full_refresh_of_unchanged_data_re_embeds_nothing_and_a_changed_row_is_re_embedded(
    db_url: str, builds: Builds
) -> None:
    # The full refresh rewrote every row's refreshed_at (after the embeddings were written), yet no feature_hash.
    with connect(db_url) as conn:
        rewritten = conn.execute(
            "select count(*) from marts.user_features f join ml.user_embeddings e using (user_id)"
            " where f.refreshed_at > e.updated_at"
        ).fetchone()[0]
    assert rewritten == len(USERS)
    assert builds.re_embed_after_full_refresh == {"user": set(), "post": set()}
    # User 4 viewed post 102, user 1 edited their bio: exactly the rows whose features changed.
    assert builds.re_embed_after_increment == {"user": {1, 4}, "post": {102}}


def test_incremental_refresh_appends_only_new_interactions(builds: Builds) -> None:
    before = by_key(builds.first["interactions"], "interaction_id")
    after = by_key(builds.second["interactions"], "interaction_id")
    new = [after[key] for key in after.keys() - before.keys()]
    assert [(row["user_id"], row["post_id"], row["kind"], row["duration_ms"]) for row in new] == [
        (4, 102, "view", 2000)
    ]
    assert all(after[key] == row for key, row in before.items())
    assert builds.second_statuses["model.teamu.interactions"] == "success"
    assert failures(builds.second_statuses) == {}


def test_analyst_reads_marts_only(db_url: str, builds: Builds) -> None:
    with connect(db_url) as conn:
        conn.execute("set role teamu_analyst")
        (count,) = conn.execute("select count(*) from marts.user_features").fetchone()
        assert count == len(USERS)
        conn.execute("savepoint probe")
        for statement in (
            "select * from raw_supabase.users",
            "select * from raw_mixpanel.events",
            "select * from staging.stg_supabase__users",
            "select * from intermediate.int_interactions",
            "insert into marts.user_features (user_id) values (99)",
            "delete from marts.interactions",
            "create table marts.scratch (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.execute("rollback to savepoint probe")
        conn.rollback()


def test_docs_generate(dbt: Dbt, builds: Builds) -> None:
    dbt.run("docs", "generate")
    catalog = json.loads((dbt.work_dir / "target" / "catalog.json").read_text())
    columns = catalog["nodes"]["model.teamu.user_features"]["columns"]
    assert {"user_id", "recent_post_ids", "feature_hash"} <= {name.lower() for name in columns}


def _histories(frame: pd.DataFrame, column: str) -> dict[int, list[int]]:
    return {int(row.user_id): [int(post) for post in getattr(row, column)] for row in frame.itertuples()}


def _dataset_histories(
    interactions: pd.DataFrame, users: pd.DataFrame, posts: pd.DataFrame, after: datetime
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Every user's history after everything else, as model/dataset.py computes it both ways: the evaluation's
    user_features_as_of, and a training example's history (a probe engagement per user at `after`)."""
    from teamu_assets.model.dataset import build_training_examples, user_features_as_of

    as_of = _histories(user_features_as_of(interactions, users, after), "recent_post_ids")
    probes = pd.DataFrame(
        {"user_id": users.user_id, "post_id": posts.post_id.iloc[0], "kind": "view", "occurred_at": after}
    )
    data = build_training_examples(
        pd.concat([interactions, probes], ignore_index=True),
        users,
        posts,
        after + timedelta(hours=1),
        validation_fraction=0.0,
    )
    return as_of, _histories(data.train.loc[data.train["occurred_at"] == after], "history")


def test_the_mart_and_the_dataset_agree_on_every_users_history(db_url: str, builds: Builds) -> None:
    """One history definition: marts.user_features.recent_post_ids (SQL), the dataset's example histories and
    the evaluation's histories as of a cutoff (model/dataset.py) hold the same posts in the same order."""
    from teamu_assets.db import features as marts

    interactions = marts.read_interactions(db_url)
    users, posts = marts.read_user_features(db_url), marts.read_post_features(db_url)
    in_mart = _histories(users, "recent_post_ids")
    assert any(len(history) > 1 for history in in_mart.values())  # the fixture orders something

    after = interactions["occurred_at"].max() + timedelta(hours=1)
    assert _dataset_histories(interactions, users, posts, after) == (in_mart, in_mart)


def test_the_mart_and_the_dataset_break_same_instant_ties_alike(db_url: str, builds: Builds) -> None:
    """Two engagements at one instant (dave views post 101 and comments on post 103): the higher post id comes
    first, in the mart's SQL and in both of the dataset's histories. The SQL side is read through
    marts.user_features_live (the mart's own CTEs, on the source rows the next build would take) in a
    transaction that is rolled back, so the fixture is left as it was."""
    from teamu_assets.db import features as marts

    tie = at("2024-04-05")
    with connect(db_url) as conn, conn.transaction(force_rollback=True):
        insert_events(conn, [("tie", "Post Viewed", "4", tie, {"post_id": 101, "duration_ms": 1000})])
        conn.execute("insert into raw_supabase.comments values (%s, %s, %s, %s, %s)", (10, 103, 4, "Same time", tie))
        live = conn.execute("select recent_post_ids from marts.user_features_live(array[4]::bigint[])").fetchone()
    assert live == ([103, 101, 102],)

    tied = pd.DataFrame({"user_id": [4, 4], "post_id": [101, 103], "kind": ["view", "comment"], "occurred_at": tie})
    interactions = pd.concat([marts.read_interactions(db_url), tied], ignore_index=True)
    users, posts = marts.read_user_features(db_url), marts.read_post_features(db_url)
    as_of, examples = _dataset_histories(interactions, users, posts, tie + timedelta(hours=1))
    assert as_of[4] == examples[4] == [103, 101, 102]


def test_engaged_users_count_each_person_once(db_url: str, builds: Builds) -> None:
    """engaged_user_count (the popularity fallback's) is the distinct users of each post's interactions of any
    kind, where view_count counts every view."""
    from teamu_assets.db import features as marts

    interactions = marts.read_interactions(db_url)
    with connect(db_url) as conn:
        stored = dict(conn.execute("select post_id, engaged_user_count from marts.post_features").fetchall())
        views = dict(conn.execute("select post_id, view_count from marts.post_features").fetchall())
    expected = interactions.groupby("post_id")["user_id"].nunique().to_dict()
    assert stored == {post: expected.get(post, 0) for post in stored}
    assert any(stored[post] < views[post] for post in stored)  # someone viewed a post twice


def test_post_activity_before_a_moment_is_the_mart_as_it_read_then(db_url: str, builds: Builds) -> None:
    """features.read_post_activity_before: after every row, each post's comments (in order) and view time are
    the mart's; before a moment between the comments, only the comments written before it, newest first."""
    from teamu_assets.db import features as marts
    from teamu_assets.model.features import as_list

    posts = marts.read_post_features(db_url).set_index("post_id")
    after_all = marts.read_post_activity_before(db_url, datetime(2100, 1, 1, tzinfo=UTC)).set_index("post_id")
    assert {p: as_list(after_all["comments"].get(p)) for p in posts.index} == {
        p: as_list(c) for p, c in posts["comments"].items()
    }
    view_times = after_all["avg_time_viewed_seconds"].reindex(posts.index).fillna(0.0)
    assert view_times.to_numpy() == pytest.approx(posts["avg_time_viewed_seconds"].to_numpy())

    with connect(db_url) as conn:
        comments = conn.execute(
            "select post_id, body, created_at from staging.stg_supabase__comments where body is not null"
            " order by created_at desc, comment_id desc"
        ).fetchall()
    moment = sorted(created for _, _, created in comments)[len(comments) // 2]
    before = marts.read_post_activity_before(db_url, moment).set_index("post_id")
    expected: dict[int, list[str]] = {}
    for post_id, body, created in comments:
        if created < moment:
            expected.setdefault(post_id, []).append(body)
    assert 0 < sum(map(len, expected.values())) < len(comments)
    assert {p: as_list(c) for p, c in before["comments"].items() if as_list(c)} == expected
    with connect(db_url) as conn:
        view_times = dict(
            conn.execute(
                "select post_id, avg(duration_ms)::float8 / 1000 from marts.interactions"
                " where kind = 'view' and occurred_at < %s and duration_ms is not null group by post_id",
                (moment,),
            ).fetchall()
        )
    assert view_times != after_all["avg_time_viewed_seconds"].dropna().to_dict()  # views came after the moment
    assert before["avg_time_viewed_seconds"].dropna().to_dict() == pytest.approx(view_times)


def test_descriptions_reach_the_database(db_url: str, builds: Builds) -> None:
    """persist_docs: the .yml descriptions are comments on the relations and their columns (what `\\d+` shows)."""
    with connect(db_url) as conn:
        table, column, view = conn.execute(
            "select obj_description('marts.user_features'::regclass, 'pg_class'),"
            " col_description('marts.user_features'::regclass, 1),"
            " obj_description('staging.stg_supabase__users'::regclass, 'pg_class')"
        ).fetchone()
    assert table.startswith("One row per member") and column == "The member's id (primary key)."
    assert view


def test_a_build_rewrites_the_comments_only_where_they_differ(db_url: str, dbt: Dbt, builds: Builds) -> None:
    """dbt writes every documented comment again after each build (a COMMENT per column, each under a lock): here
    one catalog query compares them first, so the sensor's incremental runs write none, and a stale comment (an
    edited description) is still written again."""
    with connect(db_url) as conn:
        conn.execute("comment on column marts.user_features.user_id is 'stale'")
    log = dbt.work_dir / "logs" / "dbt.log"
    start = log.stat().st_size
    dbt.run("build", "--select", "user_features", "post_features", "--exclude", "resource_type:test")
    with log.open() as lines:
        lines.seek(start)
        comments = [line for line in lines if "comment on " in line]
    assert any('"marts"."user_features"' in line for line in comments)
    assert not any('"marts"."post_features"' in line for line in comments)
    with connect(db_url) as conn:
        restored = conn.execute("select col_description('marts.user_features'::regclass, 1)").fetchone()[0]
    assert restored == "The member's id (primary key)."
