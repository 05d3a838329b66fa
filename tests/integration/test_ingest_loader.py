"""The Mixpanel export loader on real Postgres: counts that reconcile, quarantine, dedup, ledger, atomicity.

The session database is shared with other tests, so every test uses file names and $insert_ids of its own
and counts rows by source_file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckSeverity, materialize

from teamu_assets.assets.ingestion import mixpanel_events
from teamu_assets.db import schema
from teamu_assets.db.connection import connect
from teamu_assets.db.features import read_recommendation_events
from teamu_assets.ingest import (
    FolderLoad,
    IngestError,
    LoadResult,
    ingest_landing_folder,
    load_export_file,
    load_landing_folder,
    validation,
)
from teamu_assets.ingest import loader as loader_module
from teamu_assets.resources import MixpanelExport, TeamuDatabase
from teamu_assets.settings import MixpanelCredentials

pytestmark = pytest.mark.integration

TIME = 1_717_200_000  # 2024-06-01T00:00:00Z


@pytest.fixture(scope="module")
def url(db_url: str) -> str:
    schema.apply(db_url, "raw_mixpanel")
    return db_url


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def viewed(insert_id: str, *, time: float = TIME, post_id: int = 7, user: str = "42", **extra: Any) -> str:
    properties = {"time": time, "distinct_id": user, "$insert_id": insert_id, "post_id": post_id}
    return json.dumps({"event": "Post Viewed", "properties": properties | {"duration_ms": 1200} | extra})


def write_export(folder: Path, name: str, lines: list[str | bytes]) -> Path:
    path = folder / name
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(query, params).fetchall()


def ledger_of(url: str, source_file: str) -> tuple[int, int, int, int]:
    """The ledger's (lines_read, loaded, duplicates, quarantined) of a file; asserts they reconcile, and that
    events and quarantine hold exactly the rows the ledger counts."""
    query = "select lines_read, loaded, duplicates, quarantined from raw_mixpanel.loaded_files where source_file = %s"
    [(lines_read, loaded, duplicates, quarantined)] = rows(url, query, source_file)
    assert lines_read == loaded + duplicates + quarantined
    assert (count_of(url, "events", source_file), count_of(url, "events_quarantine", source_file)) == (
        loaded,
        quarantined,
    )
    return lines_read, loaded, duplicates, quarantined


def reconciles(result: LoadResult) -> bool:
    return result.lines_read == result.loaded + result.duplicates + result.quarantined


def count_of(url: str, table: str, source_file: str) -> int:
    """Rows of raw_mixpanel.<table> that came from source_file."""
    query = f"select count(*) from raw_mixpanel.{table} where source_file = %s"
    return rows(url, query, source_file)[0][0]


def test_a_file_with_every_kind_of_line_reconciles(url: str, tag: str, tmp_path: Path) -> None:
    malformed = '{"event": "Post Viewed", "properties": {"time": 1717200000'
    no_user = json.dumps({"event": "Post Viewed", "properties": {"time": TIME, "$insert_id": f"{tag}-x"}})
    shown = {"time": TIME, "distinct_id": "42", "$insert_id": f"{tag}-s", "post_ids": [7], "request_id": "r"}
    lines: list[str | bytes] = [
        viewed(f"{tag}-1"),  # 1
        viewed(f"{tag}-2", time=TIME + 60),  # 2
        viewed(f"{tag}-3", time=TIME - 3600),  # 3: earlier than the line before it: fine
        viewed(f"{tag}-4", post_id=999_999_999),  # 4: a post nobody has: dbt's business, loaded
        malformed,  # 5
        no_user,  # 6
        "",  # 7: blank, not counted
        viewed(f"{tag}-1"),  # 8: duplicate of line 1
        b'{"event": "Post Viewed", "note": "\xff"}',  # 9: not UTF-8
        json.dumps({"event": "Recommendation Shown", "properties": shown}),  # 10
        viewed(f"{tag}-ms", time=(TIME + 1) * 1000 + 500),  # 11: milliseconds
    ]
    path = write_export(tmp_path, f"export_{tag}.jsonl", lines)

    result = load_export_file(url, path)

    assert result == LoadResult(
        source_file=path.name,
        sha256=loader_module.file_sha256(path),
        size_bytes=path.stat().st_size,
        first_line=1,
        lines_read=10,
        loaded=6,
        duplicates=1,
        quarantined=3,
        withdrawn=0,
        blank_lines=1,
        incomplete_last_line=False,
        skipped=False,
    )
    assert reconciles(result)
    assert count_of(url, "events", path.name) == 6
    quarantine = rows(
        url,
        "select line_number, raw_line, reason from raw_mixpanel.events_quarantine "
        "where source_file = %s order by line_number",
        path.name,
    )
    assert quarantine == [
        (5, malformed, "malformed JSON: Expecting ',' delimiter (column 59)"),
        (6, no_user, "missing properties.distinct_id"),
        (9, '{"event": "Post Viewed", "note": "\\xff"}', "invalid UTF-8: invalid start byte at byte 34"),
    ]
    assert ledger_of(url, path.name) == (10, 6, 1, 3)
    query = (
        "select sha256, size_bytes, line_count, open_tail_bytes from raw_mixpanel.loaded_files where source_file = %s"
    )
    assert rows(url, query, path.name) == [(result.sha256, result.size_bytes, 11, 0)]
    query = (
        "select insert_id, event, distinct_id, event_time, properties ->> 'post_id' "
        "from raw_mixpanel.events where source_file = %s"
    )
    stored = {row[0]: row[1:] for row in rows(url, query, path.name)}
    assert stored[f"{tag}-4"] == ("Post Viewed", "42", datetime.fromtimestamp(TIME, UTC), "999999999")
    assert stored[f"{tag}-ms"][2] == datetime.fromtimestamp(TIME + 1.5, UTC)
    assert stored[f"{tag}-s"][0] == "Recommendation Shown"


def test_loading_the_same_file_twice_adds_nothing(url: str, tag: str, tmp_path: Path) -> None:
    path = write_export(tmp_path, f"twice_{tag}.jsonl", [viewed(f"{tag}-1"), viewed(f"{tag}-2")])
    first = load_export_file(url, path)
    second = load_export_file(url, path)
    assert (first.loaded, first.skipped) == (2, False)
    assert second == replace(first, first_line=3, lines_read=0, loaded=0, blank_lines=0, skipped=True)
    assert count_of(url, "events", path.name) == 2
    assert count_of(url, "loaded_files", path.name) == 1


def test_changed_content_under_a_loaded_name_is_an_error(url: str, tag: str, tmp_path: Path) -> None:
    path = write_export(tmp_path, f"changed_{tag}.jsonl", [viewed(f"{tag}-1"), viewed(f"{tag}-2")])
    load_export_file(url, path)
    for lines in ([viewed(f"{tag}-1", post_id=8), viewed(f"{tag}-2")], [viewed(f"{tag}-1")]):
        write_export(tmp_path, path.name, lines)
        with pytest.raises(IngestError, match=f"^changed_{tag}.jsonl: changed since it was loaded .*must not change"):
            load_export_file(url, path)
    assert count_of(url, "events", path.name) == 2
    assert ledger_of(url, path.name) == (2, 2, 0, 0)


def test_a_duplicate_across_files_is_counted_in_the_second(url: str, tag: str, tmp_path: Path) -> None:
    first = write_export(tmp_path, f"a_{tag}.jsonl", [viewed(f"{tag}-1"), viewed(f"{tag}-2")])
    second = write_export(tmp_path, f"b_{tag}.jsonl", [viewed(f"{tag}-2"), viewed(f"{tag}-3")])
    assert (load_export_file(url, first).loaded, load_export_file(url, first).skipped) == (2, True)
    result = load_export_file(url, second)
    assert (result.lines_read, result.loaded, result.duplicates, result.quarantined) == (2, 1, 1, 0)
    owners = rows(
        url,
        "select insert_id, source_file from raw_mixpanel.events where insert_id like %s order by 1",
        f"{tag}-%",
    )
    assert owners == [(f"{tag}-1", first.name), (f"{tag}-2", first.name), (f"{tag}-3", second.name)]


def test_blocks_keep_the_first_duplicate_and_a_last_line_without_newline(
    url: str, tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of 2 lines: the duplicates below sit in other blocks than the lines they repeat.
    monkeypatch.setattr(loader_module, "_BLOCK_LINES", 2)
    lines = [viewed(f"{tag}-{n}", note=f"first {n}") for n in range(5)]
    lines += [viewed(f"{tag}-1", note="again"), viewed(f"{tag}-4", note="again"), "not json"]
    path = tmp_path / f"blocks_{tag}.jsonl"
    path.write_text("\n".join(lines))  # no newline after the last line
    result = load_export_file(url, path)
    assert (result.lines_read, result.loaded, result.duplicates, result.quarantined) == (8, 5, 2, 1)
    query = "select properties ->> 'note' from raw_mixpanel.events where source_file = %s order by 1"
    notes = rows(url, query, path.name)
    assert [note for (note,) in notes] == [f"first {n}" for n in range(5)]
    query = "select line_number from raw_mixpanel.events_quarantine where source_file = %s"
    assert rows(url, query, path.name) == [(8,)]


def test_an_error_mid_load_leaves_nothing_of_the_file(
    url: str, tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [viewed(f"{tag}-{n}") for n in range(6)] + ["not json", viewed(f"{tag}-boom")]
    path = write_export(tmp_path, f"atomic_{tag}.jsonl", lines)
    real_validate = loader_module.validate_line

    def validate_until_the_disk_fails(text: str, latest: float) -> Any:
        if f"{tag}-boom" in text:
            raise OSError("disk read error")
        return real_validate(text, latest)

    # Small blocks, so earlier blocks are already in events and quarantine when the error comes.
    monkeypatch.setattr(loader_module, "_BLOCK_LINES", 2)
    monkeypatch.setattr(loader_module, "validate_line", validate_until_the_disk_fails)
    with pytest.raises(IngestError, match=f"^atomic_{tag}.jsonl, line 8: OSError: disk read error$"):
        load_export_file(url, path)
    assert count_of(url, "events", path.name) == 0
    assert count_of(url, "events_quarantine", path.name) == 0
    assert count_of(url, "loaded_files", path.name) == 0

    monkeypatch.setattr(loader_module, "validate_line", real_validate)
    assert load_export_file(url, path).loaded == 7, "after the failure the file loads whole"


def test_landing_folder_loads_new_export_files_in_name_order(url: str, tag: str, tmp_path: Path) -> None:
    later = write_export(tmp_path, f"2024-06-02_{tag}.jsonl", [viewed(f"{tag}-2")])
    earlier = write_export(tmp_path, f"2024-06-01_{tag}.jsonl", [viewed(f"{tag}-1")])
    write_export(tmp_path, f"2024-06-03_{tag}.jsonl.partial", [viewed(f"{tag}-3")])
    write_export(tmp_path, f"notes_{tag}.txt", ["not an export"])

    folder = load_landing_folder(url, tmp_path)

    assert [(result.source_file, result.loaded) for result in folder.results] == [(earlier.name, 1), (later.name, 1)]
    assert (folder.failed, folder.refused) == ([], [])
    assert load_landing_folder(url, tmp_path) == FolderLoad([], [], [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_landing_folder(url, tmp_path / "missing")


def shown(insert_id: str, **extra: Any) -> str:
    properties = {"time": TIME, "distinct_id": "42", "$insert_id": insert_id, "post_ids": [7], "request_id": "r"}
    return json.dumps({"event": "Recommendation Shown", "properties": properties | extra})


def quarantined(url: str, source_file: str) -> list[tuple[int, str]]:
    query = "select line_number, reason from raw_mixpanel.events_quarantine where source_file = %s order by 1"
    return rows(url, query, source_file)


def test_links_and_other_non_files_in_the_landing_folder_are_refused_unread(url: str, tag: str, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    good = write_export(landing, f"good_{tag}.jsonl", [viewed(f"{tag}-1")])
    outside = write_export(tmp_path, "outside.jsonl", [viewed(f"{tag}-outside")])
    (landing / f"environ_{tag}.jsonl").symlink_to("/proc/self/environ")
    (landing / f"passwd_{tag}.jsonl").symlink_to("/etc/passwd")
    (landing / f"outside_{tag}.jsonl").symlink_to(outside)
    (landing / f"inside_{tag}.jsonl").symlink_to(good)  # a link even to a file of the folder itself
    (landing / f"dir_{tag}.jsonl").mkdir()
    os.mkfifo(landing / f"fifo_{tag}.jsonl")  # opening a FIFO would block forever

    folder = load_landing_folder(url, landing)

    assert [result.source_file for result in folder.results] == [good.name]
    assert folder.failed == []
    assert {problem.source_file: problem.message for problem in folder.refused} == {
        f"dir_{tag}.jsonl": f"dir_{tag}.jsonl: refused: not a regular file",
        f"environ_{tag}.jsonl": f"environ_{tag}.jsonl: refused: a symbolic link (to /proc/self/environ)",
        f"fifo_{tag}.jsonl": f"fifo_{tag}.jsonl: refused: not a regular file",
        f"inside_{tag}.jsonl": f"inside_{tag}.jsonl: refused: a symbolic link (to {good})",
        f"outside_{tag}.jsonl": f"outside_{tag}.jsonl: refused: a symbolic link (to {outside})",
        f"passwd_{tag}.jsonl": f"passwd_{tag}.jsonl: refused: a symbolic link (to /etc/passwd)",
    }
    for problem in folder.refused:
        for table in ("events", "events_quarantine", "loaded_files"):
            assert count_of(url, table, problem.source_file) == 0
    assert rows(url, "select count(*) from raw_mixpanel.events_quarantine where raw_line like '%%root:%%'") == [(0,)]
    # Called directly, the loader refuses a link too, before reading a byte of it.
    with pytest.raises(IngestError, match=f"^passwd_{tag}.jsonl: refused: a symbolic link"):
        load_export_file(url, landing / f"passwd_{tag}.jsonl")


def test_lines_past_the_limits_are_quarantined_and_a_failing_file_blocks_none_after_it(
    url: str, tag: str, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    # Random text, so Postgres can't compress it under the primary key's btree limit (2,704 bytes).
    long_id, long_name = f"{tag}-" + secrets.token_urlsafe(2400), secrets.token_urlsafe(2400)
    hostile = [
        viewed(long_id),  # 1
        json.dumps({"event": long_name, "properties": json.loads(viewed(f"{tag}-long-name"))["properties"]}),
        viewed(f"{tag}-inf", note="N").replace('"N"', "1e200000"),  # 3: infinity to Python
        viewed(f"{tag}-digits", note="N").replace('"N"', "9" * 5000),  # 4: too long for Python's int
        viewed(f"{tag}-numeric", note="N").replace('"N"', "0e-20000"),  # 5: refused by Postgres' numeric
        shown(f"{tag}-shown", post_id="x"),  # 6: evaluation casts post_id to bigint
        viewed(f"{tag}-2099", time=4_102_444_799),  # 7: the far future
        viewed(f"{tag}-1999", time=946_684_799),  # 8: before 2000
        viewed(f"{tag}-fine"),  # 9
    ]
    first = write_export(landing, f"a_{tag}.jsonl", hostile)
    changed = write_export(landing, f"b_{tag}.jsonl", [viewed(f"{tag}-b1")])
    load_export_file(url, changed)
    write_export(landing, changed.name, [viewed(f"{tag}-b1", post_id=9)])  # a re-export under a loaded name
    # Not UTF-8: Postgres text can't hold the name as it is, so the ledger keeps the byte as \xff.
    odd_name = os.fsdecode(b"c_\xff_" + tag.encode() + b".jsonl")
    write_export(landing, odd_name, [viewed(f"{tag}-c1")])
    last = write_export(landing, f"d_{tag}.jsonl", [viewed(f"{tag}-d1")])

    folder = load_landing_folder(url, landing)

    by_name = {result.source_file: result for result in folder.results}
    assert list(by_name) == [first.name, f"c_\\xff_{tag}.jsonl", last.name]
    assert [(r.lines_read, r.loaded, r.duplicates, r.quarantined) for r in by_name.values()] == [
        (9, 1, 0, 8),
        (1, 1, 0, 0),
        (1, 1, 0, 0),
    ]
    assert all(reconciles(result) for result in folder.results)
    assert ledger_of(url, first.name) == (9, 1, 0, 8)
    assert ledger_of(url, f"c_\\xff_{tag}.jsonl") == (1, 1, 0, 0)
    assert [(line, reason.split(":")[0]) for line, reason in quarantined(url, first.name)] == [
        (1, f"properties.$insert_id is longer than 1024 bytes ({len(long_id)} bytes)"),
        (2, f"event is longer than 1024 bytes ({len(long_name)} bytes)"),
        (3, "number out of range"),
        (4, "number out of range"),
        (5, "number out of range"),
        (6, "properties.post_id is not an integer id"),
        (7, "properties.time is out of range (2000-01-01 to 1 day from now)"),
        (8, "properties.time is out of range (2000-01-01 to 1 day from now)"),
    ]
    [failure] = folder.failed
    assert failure.source_file == changed.name
    assert failure.message.startswith(f"{changed.name}: changed since it was loaded")
    assert ledger_of(url, changed.name) == (1, 1, 0, 0)
    # Every accepted event survives evaluation's casts: a shown event's post_id "x" failed this read.
    read_recommendation_events(url)


def test_a_line_postgres_refuses_goes_to_quarantine_not_the_file(
    url: str, tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the validator didn't know the btree limit: Postgres refuses the line, and only the line.
    monkeypatch.setattr(validation, "MAX_KEY_TEXT_BYTES", 10**6)
    monkeypatch.setattr(loader_module, "_BLOCK_LINES", 4)
    refused_id = f"{tag}-" + secrets.token_urlsafe(6000)  # random text: compression can't save it
    lines = (
        [viewed(f"{tag}-{n}") for n in range(5)] + [viewed(refused_id)] + [viewed(f"{tag}-{n}") for n in range(5, 9)]
    )
    path = write_export(tmp_path, f"refused_{tag}.jsonl", lines)
    result = load_export_file(url, path)
    assert (result.lines_read, result.loaded, result.duplicates, result.quarantined) == (10, 9, 0, 1)
    [(line, reason)] = quarantined(url, path.name)
    assert line == 6 and reason.startswith("Postgres refused the line: index row size")
    assert ledger_of(url, path.name) == (10, 9, 0, 1)


def test_a_byte_order_mark_before_the_first_line_is_dropped(url: str, tag: str, tmp_path: Path) -> None:
    path = tmp_path / f"bom_{tag}.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + f"{viewed(f'{tag}-1')}\n{viewed(f'{tag}-2')}\n".encode())
    result = load_export_file(url, path)
    assert (result.lines_read, result.loaded, result.quarantined) == (2, 2, 0)


def test_a_file_cut_mid_line_loads_the_rest_once_complete(url: str, tag: str, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    lines = [viewed(f"{tag}-{n}").encode() + b"\n" for n in range(20)]
    path = landing / f"growing_{tag}.jsonl"
    path.write_bytes(b"".join(lines[:10]) + lines[10][:40])  # ten lines and part of the eleventh

    [partial] = load_landing_folder(url, landing).results
    assert (partial.lines_read, partial.loaded, partial.quarantined, partial.incomplete_last_line) == (11, 10, 1, True)
    [(line, reason)] = quarantined(url, path.name)
    assert line == 11 and reason.endswith("(last line of the file, no newline yet: read again when the file grows)")
    assert ledger_of(url, path.name) == (11, 10, 0, 1)

    path.write_bytes(b"".join(lines))  # the writer finishes the file
    [rest] = load_landing_folder(url, landing).results
    assert (rest.first_line, rest.lines_read, rest.loaded, rest.withdrawn, rest.incomplete_last_line) == (
        11,
        10,
        10,
        1,
        False,
    )
    assert reconciles(rest)
    assert ledger_of(url, path.name) == (20, 20, 0, 0)
    assert quarantined(url, path.name) == []
    assert load_landing_folder(url, landing) == FolderLoad([], [], [])


def test_a_file_that_grows_loads_its_new_lines_and_never_a_line_twice(url: str, tag: str, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / f"appended_{tag}.jsonl"
    path.write_text(viewed(f"{tag}-1") + "\n" + viewed(f"{tag}-2"))  # the last event complete, no newline yet
    [first] = load_landing_folder(url, landing).results
    assert (first.loaded, first.incomplete_last_line) == (2, False)

    with path.open("a") as export_file:
        export_file.write("\n" + viewed(f"{tag}-2") + "\n" + viewed(f"{tag}-3") + "\n")
    [second] = load_landing_folder(url, landing).results
    assert (second.first_line, second.lines_read, second.loaded, second.duplicates) == (3, 2, 1, 1)
    assert ledger_of(url, path.name) == (4, 3, 1, 0)

    # A complete last line that then changes is a change, not growth.
    with path.open("a") as export_file:
        export_file.write(viewed(f"{tag}-4"))
    [third] = load_landing_folder(url, landing).results
    path.write_bytes(path.read_bytes() + b'"oops"\n')
    folder = load_landing_folder(url, landing)
    assert third.loaded == 1 and folder.results == []
    assert folder.failed[0].message.startswith(f"{path.name}, line 5: was loaded when it ended in this complete event")
    assert ledger_of(url, path.name) == (5, 4, 1, 0)


def test_a_touched_file_is_checked_once_and_an_older_ledger_row_is_completed(
    url: str, tag: str, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    path = write_export(landing, f"touched_{tag}.jsonl", [viewed(f"{tag}-1")])
    with connect(url) as conn:  # as the loader before sizes were kept left it
        conn.execute(
            "insert into raw_mixpanel.loaded_files (source_file, sha256, lines_read, loaded, duplicates, quarantined) "
            "values (%s, %s, 1, 1, 0, 0)",
            (path.name, loader_module.file_sha256(path)),
        )
    [checked] = load_landing_folder(url, landing).results
    assert checked.skipped and checked.size_bytes == path.stat().st_size
    query = "select size_bytes, line_count, mtime_ns from raw_mixpanel.loaded_files where source_file = %s"
    assert rows(url, query, path.name) == [(path.stat().st_size, 1, path.stat().st_mtime_ns)]
    assert load_landing_folder(url, landing) == FolderLoad([], [], [])
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000_000))
    assert [result.skipped for result in load_landing_folder(url, landing).results] == [True]
    assert load_landing_folder(url, landing) == FolderLoad([], [], [])


def test_the_asset_loads_every_file_it_can_then_fails_its_check_naming_the_rest(
    url: str, tag: str, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    changed = write_export(landing, f"a_{tag}.jsonl", [viewed(f"{tag}-a")])
    load_export_file(url, changed)
    write_export(landing, changed.name, [viewed(f"{tag}-a", post_id=8)])
    (landing / f"b_{tag}.jsonl").symlink_to("/etc/passwd")
    later = write_export(landing, f"c_{tag}.jsonl", [viewed(f"{tag}-c"), "not json"])
    resources = {
        "database": TeamuDatabase(teamu_home=str(tmp_path), database_url=url),
        "mixpanel": MixpanelExport(landing_dir=str(landing)),
    }

    result = materialize([mixpanel_events], resources=resources)

    assert result.success, "the files that can load, load; the run goes on downstream"
    [materialization] = result.asset_materializations_for_node("mixpanel__events")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    counts = ("loaded", "quarantined", "files_failed", "entries_refused")
    assert {key: metadata[key] for key in counts} == dict.fromkeys(counts, 1)
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == ("export_files_loaded", False, AssetCheckSeverity.ERROR)
    assert f"{changed.name}: changed since it was loaded" in check.description
    assert f"b_{tag}.jsonl: refused: a symbolic link (to /etc/passwd)" in check.description
    assert ledger_of(url, later.name) == (2, 1, 0, 1)


def test_ingest_counts_only_the_files_it_read_and_exports_yesterday_only_once(
    url: str, tag: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    unchanged = write_export(landing, f"a_{tag}.jsonl", [viewed(f"{tag}-a")])
    load_export_file(url, unchanged)
    os.utime(unchanged, ns=(0, unchanged.stat().st_mtime_ns + 1_000_000_000))  # pending again, but nothing new
    fresh = write_export(landing, f"b_{tag}.jsonl", [viewed(f"{tag}-b"), "not json"])
    (landing / f"c_{tag}.jsonl").symlink_to("/etc/passwd")
    # Yesterday's live export already landed: with credentials, nothing is asked of Mixpanel (this sandbox
    # can't reach it, so an export would show as export_error).
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    live = write_export(landing, f"mixpanel-live-{yesterday.isoformat()}.jsonl", [viewed(f"{tag}-live")])
    credentials = MixpanelCredentials("teamu-export.sa", "s3cr3t", "3141592")
    log = logging.getLogger(f"test_ingest_{tag}")

    with caplog.at_level(logging.INFO, logger=log.name):
        ingest = ingest_landing_folder(url, landing, credentials, log)

    assert ingest.export_error is None
    assert [result.skipped for result in ingest.folder.results] == [True, False, False]
    assert [result.source_file for result in ingest.read] == [fresh.name, live.name]
    assert ingest.totals == {"lines_read": 3, "loaded": 2, "duplicates": 0, "quarantined": 1} and ingest.reconciles
    refused = f"c_{tag}.jsonl: refused: a symbolic link (to /etc/passwd)"
    assert ingest.problems == [refused]
    assert ingest.files_markdown().splitlines()[2:] == [
        f"| {fresh.name} | 1 | 2 | 1 | 0 | 1 |",
        f"| {live.name} | 1 | 1 | 1 | 0 | 0 |",
    ]
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", refused),
        ("WARNING", "1 lines quarantined in raw_mixpanel.events_quarantine"),
    ]
