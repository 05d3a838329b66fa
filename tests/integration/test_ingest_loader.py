"""The Mixpanel export loader on real Postgres: counts that reconcile, quarantine, dedup, ledger, atomicity.

The session database is shared with other tests, so every test uses file names and $insert_ids of its own
and counts rows by source_file.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from teamu_assets.db import schema
from teamu_assets.db.connection import connect
from teamu_assets.ingest import IngestError, LoadResult, load_export_file, load_landing_folder
from teamu_assets.ingest import loader as loader_module

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
        lines_read=10,
        loaded=6,
        duplicates=1,
        quarantined=3,
        blank_lines=1,
        skipped=False,
    )
    assert result.lines_read == result.loaded + result.duplicates + result.quarantined
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
    ledger = rows(
        url,
        "select sha256, lines_read, loaded, duplicates, quarantined from raw_mixpanel.loaded_files "
        "where source_file = %s",
        path.name,
    )
    assert ledger == [(result.sha256, 10, 6, 1, 3)]
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
    assert second == LoadResult(path.name, first.sha256, 0, 0, 0, 0, 0, skipped=True)
    assert count_of(url, "events", path.name) == 2
    assert count_of(url, "loaded_files", path.name) == 1


def test_changed_content_under_a_loaded_name_is_an_error(url: str, tag: str, tmp_path: Path) -> None:
    path = write_export(tmp_path, f"changed_{tag}.jsonl", [viewed(f"{tag}-1")])
    load_export_file(url, path)
    write_export(tmp_path, path.name, [viewed(f"{tag}-1"), viewed(f"{tag}-2")])
    with pytest.raises(IngestError, match="must not change"):
        load_export_file(url, path)
    assert count_of(url, "events", path.name) == 1


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

    def validate_until_the_disk_fails(text: str) -> Any:
        if f"{tag}-boom" in text:
            raise OSError("disk read error")
        return real_validate(text)

    # Small blocks, so earlier blocks are already in events and quarantine when the error comes.
    monkeypatch.setattr(loader_module, "_BLOCK_LINES", 2)
    monkeypatch.setattr(loader_module, "validate_line", validate_until_the_disk_fails)
    with pytest.raises(OSError, match="disk read error"):
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

    results = load_landing_folder(url, tmp_path)

    assert [(result.source_file, result.loaded) for result in results] == [(earlier.name, 1), (later.name, 1)]
    assert load_landing_folder(url, tmp_path) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_landing_folder(url, tmp_path / "missing")
