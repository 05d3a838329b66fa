"""The new-interactions sensor against a real Dagster instance on Postgres and real raw tables."""

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect, database_of
from teamu_assets.ingest import load_landing_folder
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.resources import MixpanelExport, TeamuDatabase
from teamu_assets.sensors import new_interactions_sensor

pytestmark = pytest.mark.integration


@pytest.fixture()
def instance(module_db_url: str, tmp_path: Path):
    write_dagster_yaml(tmp_path / "dagster_home", module_db_url, database=database_of(module_db_url))
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as real_instance:
        yield real_instance


def _tick(instance: DagsterInstance, cursor: str | None, url: str, landing: Path) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "database": TeamuDatabase(teamu_home=str(landing.parent), database_url=url),
            "mixpanel": MixpanelExport(landing_dir=str(landing)),
        },
    )
    return new_interactions_sensor(context)


def test_no_new_rows_no_run_new_rows_one_run_same_rows_none(module_db_url: str, instance, tmp_path: Path) -> None:
    bootstrap.prepare_app_database(module_db_url)
    landing = tmp_path / "landing"
    landing.mkdir()
    with connect(module_db_url) as conn:
        conn.execute(
            "truncate raw_supabase.users, raw_supabase.posts, raw_supabase.votes, raw_supabase.comments cascade"
        )
        conn.execute("insert into raw_supabase.users values (1, 'ada', '', '{}', null, null, now(), now())")
        conn.execute("insert into raw_supabase.posts values (10, 1, 't', 'd', false, null, null, now(), now())")

    first = _tick(instance, None, module_db_url, landing)
    assert isinstance(first, SensorResult) and not first.run_requests  # starts watching
    cursor = first.cursor

    quiet = _tick(instance, cursor, module_db_url, landing)
    assert isinstance(quiet, SkipReason)

    with connect(module_db_url) as conn:  # a burst: two votes and a comment between two ticks
        conn.execute("insert into raw_supabase.users values (2, 'bo', '', '{}', null, null, now(), now())")
        conn.execute("insert into raw_supabase.votes values (100, 10, 2, 1, now()), (101, 10, 1, 1, now())")
        conn.execute("insert into raw_supabase.comments values (200, 10, 2, 'nice', now())")
    (landing / "mixpanel-export-2026-06-01.jsonl").write_text("{}\n")

    burst = _tick(instance, cursor, module_db_url, landing)
    assert isinstance(burst, SensorResult) and len(burst.run_requests) == 1
    saved = json.loads(burst.cursor)
    assert saved["max_vote_id"] == 101 and saved["max_comment_id"] == 200
    assert saved["pending_mixpanel_files"] == ["mixpanel-export-2026-06-01.jsonl"]

    # The same rows again (a re-evaluated tick, or after a daemon restart with the stored cursor): no run.
    again = _tick(instance, burst.cursor, module_db_url, landing)
    assert isinstance(again, SkipReason)

    # Re-requesting the same state gives the same run key, so Dagster would not launch it twice.
    replay = _tick(instance, cursor, module_db_url, landing)
    assert replay.run_requests[0].run_key == burst.run_requests[0].run_key

    # The raw tables rewritten with fewer rows (a reseed), then one new vote below the old position: one run.
    with connect(module_db_url) as conn:
        conn.execute("delete from raw_supabase.votes")
        conn.execute("insert into raw_supabase.votes values (50, 10, 2, 1, now())")
    after_reseed = _tick(instance, burst.cursor, module_db_url, landing)
    assert isinstance(after_reseed, SensorResult) and len(after_reseed.run_requests) == 1
    assert json.loads(after_reseed.cursor)["max_vote_id"] == 50

    # The positions of before the reseed come back (the same deterministic rows): a run again, under a new key.
    with connect(module_db_url) as conn:
        conn.execute("delete from raw_supabase.votes")
        conn.execute("insert into raw_supabase.votes values (100, 10, 2, 1, now()), (101, 10, 1, 1, now())")
    recurring = _tick(instance, after_reseed.cursor, module_db_url, landing)
    assert isinstance(recurring, SensorResult) and len(recurring.run_requests) == 1
    assert recurring.run_requests[0].run_key != burst.run_requests[0].run_key


def test_an_export_file_that_grows_after_its_load_is_news_again(module_db_url: str, instance, tmp_path: Path) -> None:
    bootstrap.prepare_app_database(module_db_url)
    landing = tmp_path / "landing"
    landing.mkdir()
    export = landing / "mixpanel-export-2026-06-02.jsonl"
    event = {"event": "Signed Up", "properties": {"time": 1_717_200_000, "distinct_id": "1", "$insert_id": "a"}}
    first = _tick(instance, None, module_db_url, landing)
    export.write_text(json.dumps(event) + "\n")
    new_file = _tick(instance, first.cursor, module_db_url, landing)
    assert isinstance(new_file, SensorResult) and len(new_file.run_requests) == 1

    assert [result.loaded for result in load_landing_folder(module_db_url, landing).results] == [1]
    assert isinstance(_tick(instance, new_file.cursor, module_db_url, landing), SkipReason)

    # The same name, more lines (a file completed after it was first loaded): a run, as for a new file.
    event["properties"]["$insert_id"] = "b"
    with export.open("a") as export_file:
        export_file.write(json.dumps(event) + "\n")
    grown = _tick(instance, new_file.cursor, module_db_url, landing)
    assert isinstance(grown, SensorResult) and len(grown.run_requests) == 1
    assert json.loads(grown.cursor)["pending_mixpanel_sizes"] == [export.stat().st_size]
