"""Live export through mixpanel-utils against a fake Mixpanel export API on loopback, then the loader."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from teamu_assets.db import schema
from teamu_assets.db.connection import connect, scratch_database
from teamu_assets.ingest import (
    TEAMU_EVENTS,
    MixpanelExportError,
    export_live,
    ingest_landing_folder,
    load_landing_folder,
)
from teamu_assets.ingest.export import CATCH_UP_DAYS, SETTLE_DAYS, LiveExport, owed_live_exports
from teamu_assets.settings import MixpanelCredentials
from tests.fakes.mixpanel_server import fake_mixpanel

pytestmark = pytest.mark.integration

JUNE_1 = 1_717_200_000  # 2024-06-01T00:00:00Z
DAY = 86_400
CREDENTIALS = MixpanelCredentials("teamu-export.sa", "s3cr3t-do-not-log", "3141592")


def event(name: str, insert_id: str, time: int, **properties: Any) -> dict[str, Any]:
    common = {"time": time, "distinct_id": "42", "$insert_id": insert_id}
    return {"event": name, "properties": common | properties}


def served_events(tag: str) -> list[dict[str, Any] | str]:
    return [
        event("Post Viewed", f"{tag}-1", JUNE_1 + 10, post_id=7, duration_ms=900),
        event("Recommendation Shown", f"{tag}-2", JUNE_1 + 20, post_ids=[7, 8], request_id="r1"),
        event("Recommendation Clicked", f"{tag}-3", JUNE_1 + DAY + 5, post_id=8, request_id="r1"),
        event("Post Viewed", f"{tag}-late", JUNE_1 + 3 * DAY, post_id=9, duration_ms=10),  # after to_date
        event("$identify", f"{tag}-identify", JUNE_1 + 30),  # not one of the Teamu events asked for
    ]


def test_live_export_lands_a_file_the_loader_loads(db_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    schema.apply(db_url, "raw_mixpanel")
    landing = tmp_path / "landing"
    events = served_events(tag) + ['{"event": "Post Viewed", "properties": {"time": 1717200000']
    with fake_mixpanel("teamu-export.sa", "s3cr3t-do-not-log", "3141592", events) as fake:
        out_path = landing / f"mixpanel_{tag}.jsonl"
        june_1, june_2 = date(2024, 6, 1), date(2024, 6, 2)
        written = export_live(CREDENTIALS, june_1, june_2, out_path, api_base=fake.base_url)
    assert written == out_path
    assert out_path.exists() and not list(landing.glob("*.partial"))
    [query] = fake.requests
    assert query["from_date"] == ["2024-06-01"] and query["to_date"] == ["2024-06-02"]
    assert query["project_id"] == ["3141592"]
    assert sorted(json.loads(query["event"][0])) == sorted(TEAMU_EVENTS)

    [result] = load_landing_folder(db_url, landing).results

    assert (result.lines_read, result.loaded, result.duplicates, result.quarantined) == (4, 3, 0, 1)
    with connect(db_url) as conn:
        loaded = conn.execute(
            "select insert_id, event from raw_mixpanel.events where source_file = %s order by insert_id",
            (out_path.name,),
        ).fetchall()
    assert loaded == [
        (f"{tag}-1", "Post Viewed"),
        (f"{tag}-2", "Recommendation Shown"),
        (f"{tag}-3", "Recommendation Clicked"),
    ]


def test_bad_credentials_fail_clearly_without_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # DEBUG on the library's logger is where mixpanel-utils would print the Authorization header.
    caplog.set_level(logging.DEBUG, logger="mixpanel_utils")
    out_path = tmp_path / "export.jsonl"
    with (
        fake_mixpanel("teamu-export.sa", "the-real-secret", "3141592", served_events("x")) as fake,
        pytest.raises(MixpanelExportError, match="401") as failure,
    ):
        export_live(CREDENTIALS, date(2024, 6, 1), date(2024, 6, 1), out_path, api_base=fake.base_url)
    basic = f"{CREDENTIALS.service_account_username}:{CREDENTIALS.service_account_secret}"
    encoded = base64.b64encode(basic.encode())
    captured = capfd.readouterr()
    for shown in (str(failure.value), caplog.text, captured.out, captured.err, repr(CREDENTIALS)):
        assert "401" in str(failure.value)
        assert CREDENTIALS.service_account_secret not in shown
        assert encoded.decode() not in shown
    assert not out_path.exists() and not list(tmp_path.iterdir()), "a failed export leaves no file behind"


def test_an_answer_cut_short_lands_no_file(tmp_path: Path) -> None:
    """Content-Length promised more than came before the connection closed: an error, no file, so the day is not
    counted as exported (before, the truncated file landed under its final name and the day's rest was lost)."""
    out_path = tmp_path / "export.jsonl"
    with fake_mixpanel("teamu-export.sa", "s3cr3t-do-not-log", "3141592", served_events("cut")) as fake:
        fake.cut_short_bytes = 500
        with pytest.raises(MixpanelExportError, match="IncompleteRead"):
            export_live(CREDENTIALS, date(2024, 6, 1), date(2024, 6, 2), out_path, api_base=fake.base_url)
        assert not out_path.exists() and not list(tmp_path.iterdir())
        fake.cut_short_bytes = 0
        export_live(CREDENTIALS, date(2024, 6, 1), date(2024, 6, 2), out_path, api_base=fake.base_url)
    assert len(out_path.read_text().splitlines()) == 3


def test_an_existing_export_file_is_never_overwritten(tmp_path: Path) -> None:
    out_path = tmp_path / "export.jsonl"
    out_path.write_text("kept\n")
    with pytest.raises(FileExistsError):
        export_live(CREDENTIALS, date(2024, 6, 1), date(2024, 6, 1), out_path, api_base="http://127.0.0.1:9")
    assert out_path.read_text() == "kept\n"


def _live(day: date) -> str:
    return f"mixpanel-live-{day.isoformat()}.jsonl"


def test_the_live_export_owes_yesterday_the_days_no_run_exported_and_the_settled_days() -> None:
    today = date(2026, 6, 10)
    yesterday = date(2026, 6, 9)
    assert owed_live_exports([], today) == [LiveExport(yesterday)]  # a first export starts with yesterday
    assert owed_live_exports([_live(yesterday), "mixpanel-export-2026-06-01.jsonl"], today) == []
    # Runs missed on the 6th, 7th and 9th: each day since the first export, within the window. The 3rd and 4th
    # have settled since their first exports (late events for them can no longer reach Mixpanel): again, settled.
    assert today - timedelta(days=SETTLE_DAYS + 1) == date(2026, 6, 4)
    exported = [_live(date(2026, 6, day)) for day in (3, 4, 5, 8)]
    assert owed_live_exports(exported, today) == [
        LiveExport(date(2026, 6, 3), settled=True),
        LiveExport(date(2026, 6, 4), settled=True),
        LiveExport(date(2026, 6, 6)),
        LiveExport(date(2026, 6, 7)),
        LiveExport(yesterday),
    ]
    assert owed_live_exports([*exported, "mixpanel-live-2026-06-03-settled.jsonl"], today)[0] == LiveExport(
        date(2026, 6, 4), settled=True
    )
    # Nothing for a month: the last CATCH_UP_DAYS days, those already settled exported once, as settled.
    owed = owed_live_exports([_live(date(2026, 5, 1))], today)
    days = [yesterday - timedelta(days=back) for back in reversed(range(CATCH_UP_DAYS))]
    assert owed == [LiveExport(day, settled=day <= date(2026, 6, 4)) for day in days]
    assert [export.file_name for export in owed[:2]] == [
        "mixpanel-live-2026-06-03-settled.jsonl",
        "mixpanel-live-2026-06-04-settled.jsonl",
    ]
    # A settled file alone holds its day: no first export of it is owed, and no second settled one.
    assert owed_live_exports(["mixpanel-live-2026-06-04-settled.jsonl", *map(_live, days[2:])], today) == []


def test_events_that_reach_mixpanel_after_their_days_export_load_once_the_day_settled(
    server_url: str, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    settling = today - timedelta(days=SETTLE_DAYS + 1)
    later_days = [settling + timedelta(days=back) for back in range(1, SETTLE_DAYS + 1)]
    midnight = int(datetime(settling.year, settling.month, settling.day, tzinfo=UTC).timestamp())
    on_time = event("Post Viewed", "on-time", midnight + 60, post_id=7, duration_ms=500)
    late = event("Post Viewed", "flushed-late", midnight + 120, post_id=8, duration_ms=700)
    landing = tmp_path / "landing"
    landing.mkdir()
    log = logging.getLogger("test_ingest_export_settled")
    with scratch_database(server_url, "teamu_test") as url:
        schema.apply(url, "raw_mixpanel")
        # The day was exported the day after (without the event an offline app flushed later), and each day since.
        (landing / _live(settling)).write_text(json.dumps(on_time) + "\n")
        for day in later_days:
            (landing / _live(day)).write_text("")
        load_landing_folder(url, landing)
        with fake_mixpanel("teamu-export.sa", "s3cr3t-do-not-log", "3141592", [on_time, late]) as fake:
            ingest = ingest_landing_folder(url, landing, CREDENTIALS, log, api_base=fake.base_url)
        assert [(query["from_date"], query["to_date"]) for query in fake.requests] == [
            ([settling.isoformat()], [settling.isoformat()])
        ]
        assert ingest.export_error is None
        assert [result.source_file for result in ingest.read] == [f"mixpanel-live-{settling.isoformat()}-settled.jsonl"]
        # The event the first export held is counted as a duplicate, not loaded twice: the counts reconcile.
        assert ingest.totals == {"lines_read": 2, "loaded": 1, "duplicates": 1, "quarantined": 0}
        with connect(url) as conn:
            loaded = conn.execute("select insert_id from raw_mixpanel.events order by insert_id").fetchall()
        assert loaded == [("flushed-late",), ("on-time",)]
        # Settled: the next run asks Mixpanel for nothing.
        with fake_mixpanel("teamu-export.sa", "s3cr3t-do-not-log", "3141592", [on_time, late]) as idle:
            ingest_landing_folder(url, landing, CREDENTIALS, log, api_base=idle.base_url)
        assert idle.requests == []


def test_a_run_exports_the_days_the_runs_before_it_missed(server_url: str, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=back) for back in (4, 3, 2, 1)]
    midnight = {day: int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) for day in days}
    landing = tmp_path / "landing"
    landing.mkdir()
    log = logging.getLogger("test_ingest_export_catch_up")
    with scratch_database(server_url, "teamu_test") as url:
        schema.apply(url, "raw_mixpanel")
        # Four days ago's export landed and loaded, then the folder was cleared; no run exported since.
        first = landing / _live(days[0])
        first.write_text(
            json.dumps(event("Post Viewed", "d0", midnight[days[0]] + 60, post_id=7, duration_ms=500)) + "\n"
        )
        load_landing_folder(url, landing)
        first.unlink()
        served = [
            event("Post Viewed", f"d{i}", midnight[day] + 60, post_id=7, duration_ms=500) for i, day in enumerate(days)
        ]
        with fake_mixpanel("teamu-export.sa", "s3cr3t-do-not-log", "3141592", served) as fake:
            ingest = ingest_landing_folder(url, landing, CREDENTIALS, log, api_base=fake.base_url)
        assert [(query["from_date"], query["to_date"]) for query in fake.requests] == [
            ([day.isoformat()], [day.isoformat()]) for day in days[1:]
        ]
        assert ingest.export_error is None
        assert [result.source_file for result in ingest.read] == [_live(day) for day in days[1:]]
        assert ingest.totals == {"lines_read": 3, "loaded": 3, "duplicates": 0, "quarantined": 0}
        # Owed nothing now: the next run asks Mixpanel for nothing.
        with fake_mixpanel("teamu-export.sa", "s3cr3t-do-not-log", "3141592", served) as idle:
            ingest_landing_folder(url, landing, CREDENTIALS, log, api_base=idle.base_url)
        assert idle.requests == []
