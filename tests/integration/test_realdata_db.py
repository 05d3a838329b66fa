"""write_real_dataset against the real Postgres: the raw tables and the Mixpanel files the product ingests."""

from __future__ import annotations

from pathlib import Path

import pytest

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect
from teamu_assets.ingest.loader import load_landing_folder
from teamu_assets.realdata import per_user_holdout, read_lastfm, read_stackexchange, write_real_dataset
from tests.unit.realdata_fixtures import write_lastfm, write_stackexchange_site

pytestmark = pytest.mark.integration

TABLES = ("users", "projects", "project_members", "posts", "comments", "votes")


def _raw_counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {name: conn.execute(f"select count(*) from raw_supabase.{name}").fetchone()[0] for name in TABLES}


def test_write_real_dataset_writes_the_raw_tables_and_ingestible_views(module_db_url: str, tmp_path: Path) -> None:
    bootstrap.prepare_app_database(module_db_url)
    site = read_stackexchange(write_stackexchange_site(tmp_path / "se"), "se-test")
    train, _ = per_user_holdout(site)
    counts = write_real_dataset(module_db_url, train, tmp_path / "landing")
    expected = {name: len(frame) for name, frame in train.tables.items()}
    assert {name: counts[name] for name in TABLES} == expected == _raw_counts(module_db_url)
    assert counts["events"] == len(train.views) and counts["files"] >= 1

    loaded = load_landing_folder(module_db_url, tmp_path / "landing").results
    assert sum(result.loaded for result in loaded) == len(train.views)
    assert sum(result.quarantined + result.duplicates for result in loaded) == 0
    with connect(module_db_url) as conn:
        stored = conn.execute(
            "select distinct_id::bigint, (properties ->> 'post_id')::bigint, event_time from raw_mixpanel.events"
        ).fetchall()
        favourite = conn.execute("select created_at from raw_supabase.votes order by vote_id limit 1").fetchone()[0]
    views = train.views
    assert sorted(stored) == sorted(
        zip(views["user_id"], views["post_id"], views["occurred_at"].dt.to_pydatetime(), strict=True)
    )
    assert favourite == train.votes.sort_values("vote_id")["created_at"].iloc[0].to_pydatetime()


def test_a_second_dataset_replaces_the_first(module_db_url: str, tmp_path: Path) -> None:
    write_real_dataset(
        module_db_url, read_stackexchange(write_stackexchange_site(tmp_path / "se"), "se"), tmp_path / "a"
    )
    lastfm = read_lastfm(write_lastfm(tmp_path / "lastfm"))
    counts = write_real_dataset(module_db_url, lastfm, tmp_path / "b")
    assert _raw_counts(module_db_url) == {name: len(lastfm.tables[name]) for name in TABLES}
    assert counts["comments"] == 8 and counts["events"] == len(lastfm.views)
