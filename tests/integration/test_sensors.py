"""The new-interactions sensor against a real Dagster instance on Postgres and real raw tables."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, SensorResult, SkipReason, build_sensor_context, job, op

from teamu_assets import sensors
from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect, database_of
from teamu_assets.ingest import load_landing_folder
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.resources import MixpanelExport, TeamuDatabase
from teamu_assets.sensors import RUN_KEY_TAG, new_interactions_sensor, retrain_on_new_interactions_sensor

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


@op
def _step() -> None:
    pass


@job
def _refresh() -> None:
    _step()


def _run_that_failed(instance: DagsterInstance, run_key: str) -> None:
    """A run tagged with the run key a sensor requested (the tag is all the sensors look at), that failed."""
    run = instance.create_run_for_job(_refresh, tags={RUN_KEY_TAG: run_key}, status=DagsterRunStatus.STARTED)
    instance.report_run_failed(run)


def test_a_failed_refresh_is_requested_again_a_few_times(module_db_url: str, instance, tmp_path: Path) -> None:
    bootstrap.prepare_app_database(module_db_url)
    landing = tmp_path / "landing"
    landing.mkdir()
    first = _tick(instance, None, module_db_url, landing)
    with connect(module_db_url) as conn:
        conn.execute("insert into raw_supabase.votes values (300, 10, 1, 1, now())")
    request = _tick(instance, first.cursor, module_db_url, landing)
    assert isinstance(request, SensorResult) and len(request.run_requests) == 1
    keys = [request.run_requests[0].run_key]
    # Nothing new and the run not failed (none recorded yet, as while it is queued): no second run.
    assert isinstance(_tick(instance, request.cursor, module_db_url, landing), SkipReason)
    cursor = request.cursor
    for _ in range(sensors.MAX_ATTEMPTS - 1):
        _run_that_failed(instance, keys[-1])
        again = _tick(instance, cursor, module_db_url, landing)
        assert isinstance(again, SensorResult) and len(again.run_requests) == 1, again
        keys.append(again.run_requests[0].run_key)
        cursor = again.cursor
    assert len(set(keys)) == sensors.MAX_ATTEMPTS
    _run_that_failed(instance, keys[-1])
    gave_up = _tick(instance, cursor, module_db_url, landing)
    assert isinstance(gave_up, SkipReason) and "failed" in (gave_up.skip_message or "")
    # The next change gets a run of its own, with its attempts counted afresh.
    with connect(module_db_url) as conn:
        conn.execute("insert into raw_supabase.votes values (301, 10, 1, 1, now())")
    fresh = _tick(instance, cursor, module_db_url, landing)
    assert isinstance(fresh, SensorResult) and len(fresh.run_requests) == 1
    assert json.loads(fresh.cursor)[sensors.ATTEMPTS] == 1


def test_a_failed_retraining_is_requested_again_not_lost(
    module_db_url: str, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap.prepare_app_database(module_db_url)
    with connect(module_db_url) as conn:
        conn.execute("create table if not exists marts.interactions (loaded_at timestamptz not null)")
        conn.execute("insert into marts.interactions select now() from generate_series(1, 3)")
    monkeypatch.setattr(sensors, "RETRAIN_MIN_INTERACTIONS", 2)

    def tick(cursor: str | None) -> SensorResult | SkipReason:
        database = TeamuDatabase(teamu_home=str(tmp_path), database_url=module_db_url)
        context = build_sensor_context(instance=instance, cursor=cursor, resources={"database": database})
        return retrain_on_new_interactions_sensor(context)

    first = tick(None)
    assert isinstance(first, SensorResult) and len(first.run_requests) == 1
    key = first.run_requests[0].run_key
    # Queued or running: the same key again, which Dagster launches once.
    assert tick(first.cursor).run_requests[0].run_key == key
    # Failed before registering a model: before, the key stayed used up and retraining stopped for good.
    _run_that_failed(instance, key)
    retry = tick(first.cursor)
    assert isinstance(retry, SensorResult) and retry.run_requests[0].run_key != key


def test_a_row_stamped_ahead_hides_no_later_edit(module_db_url: str, instance, tmp_path: Path) -> None:
    bootstrap.prepare_app_database(module_db_url)
    landing = tmp_path / "landing"
    landing.mkdir()
    insert_user = "insert into raw_supabase.users values (%s, 'u', '', '{}', null, null, now(), %s)"
    with connect(module_db_url) as conn:
        conn.execute(insert_user, (901, datetime.now(UTC) - timedelta(hours=1)))
    first = _tick(instance, None, module_db_url, landing)
    with connect(module_db_url) as conn:  # a client whose clock runs 6 hours ahead
        conn.execute(insert_user, (900, datetime.now(UTC) + timedelta(hours=6)))
    ahead = _tick(instance, first.cursor, module_db_url, landing)
    assert isinstance(ahead, SensorResult) and len(ahead.run_requests) == 1
    assert isinstance(_tick(instance, ahead.cursor, module_db_url, landing), SkipReason)
    with connect(module_db_url) as conn:  # an edit made now: before, the row stamped ahead was the max until then
        conn.execute("update raw_supabase.users set bio = 'edited', updated_at = now() where user_id = 901")
    edited = _tick(instance, ahead.cursor, module_db_url, landing)
    assert isinstance(edited, SensorResult) and len(edited.run_requests) == 1
