"""Mixpanel export files -> raw_mixpanel.events, one file per transaction, with quarantine and a ledger.

How a file is loaded (load_export_file):
1. A transaction-scoped advisory lock on the file name, then the ledger (raw_mixpanel.loaded_files) is read:
   a file already loaded with the same sha256 is skipped; the same name with other content is an error,
   because an export file must not change once it has landed.
2. The file is read in chunks and split into lines (memory doesn't grow with file size); each line is
   validated in Python, and blocks of lines go by COPY into a temporary staging table: valid lines as jsonb,
   invalid ones as raw text with their reason.
3. Per block, `insert ... on conflict do nothing` moves the valid rows into raw_mixpanel.events, so a
   duplicate of an event in this file or in an earlier one is counted, not loaded (the first line wins),
   and the invalid rows go to raw_mixpanel.events_quarantine. A worker thread does this for one block while
   Python validates the next. Last, the ledger row; one commit for everything.

Counting: lines_read = loaded + duplicates + quarantined. Blank lines (empty or whitespace only, e.g. a
trailing empty line) carry no event: they are not counted in lines_read, LoadResult.blank_lines reports them,
and line numbers stay physical line numbers of the file so a quarantined line can be found in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from teamu_assets.db.connection import connect
from teamu_assets.ingest.validation import InvalidLine, decode_line, validate_line

EXPORT_FILE_PATTERN = "*.jsonl"
_READ_CHUNK_BYTES = 1 << 20
# Lines per staging block: large enough that the per-block statements are noise, small enough that the
# block stays in temp_buffers and the sort for `order by line_number` in work_mem.
_BLOCK_LINES = 20_000
_SESSION_SETTINGS = "set temp_buffers = '64MB'; set work_mem = '64MB'"
_LOCK_NAMESPACE = "teamu.ingest.mixpanel:"

_CREATE_STAGING = """
create temp table mixpanel_staging (
    line_number integer not null,
    epoch_seconds double precision,
    event jsonb,
    raw_line text,
    reason text
) on commit drop
"""
_INSERT_EVENTS = """
insert into raw_mixpanel.events (insert_id, event, distinct_id, event_time, properties, source_file)
select event -> 'properties' ->> '$insert_id', event ->> 'event', event -> 'properties' ->> 'distinct_id',
       to_timestamp(epoch_seconds), event -> 'properties', %(source_file)s
from mixpanel_staging
where reason is null
order by line_number
on conflict do nothing
"""
_INSERT_QUARANTINE = """
insert into raw_mixpanel.events_quarantine (source_file, line_number, raw_line, reason)
select %(source_file)s, line_number, raw_line, reason from mixpanel_staging where reason is not null
"""
_INSERT_LEDGER = """
insert into raw_mixpanel.loaded_files (source_file, sha256, lines_read, loaded, duplicates, quarantined)
values (%(source_file)s, %(sha256)s, %(lines_read)s, %(loaded)s, %(duplicates)s, %(quarantined)s)
"""


class IngestError(RuntimeError):
    """An export file that can't be loaded as a whole (nothing of it is written)."""


@dataclass(frozen=True)
class LoadResult:
    """What one call did to one file; a skipped file (loaded before, same content) added nothing: zeros."""

    source_file: str
    sha256: str
    lines_read: int
    loaded: int
    duplicates: int
    quarantined: int
    blank_lines: int
    skipped: bool


@dataclass
class _FileScan:
    """What reading the file found; final once _staging_blocks is exhausted."""

    sha256: str = ""
    accepted: int = 0
    quarantined: int = 0
    blank_lines: int = 0


def _copy_text(value: bytes) -> bytes:
    """A value escaped for COPY's text format; lines hold no newline, and \\r or a tab is rare."""
    if b"\\" in value:
        value = value.replace(b"\\", b"\\\\")
    if b"\t" in value:
        value = value.replace(b"\t", b"\\t")
    if b"\r" in value:
        value = value.replace(b"\r", b"\\r")
    return value


def _quarantine_text(raw: bytes) -> bytes:
    # Postgres text holds neither NUL nor invalid UTF-8: show those bytes as \xNN escapes.
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00").encode("utf-8")


def _staging_blocks(path: Path, scan: _FileScan) -> Iterator[bytes]:
    """The file as blocks of COPY text rows for mixpanel_staging, _BLOCK_LINES lines a block."""
    digest = hashlib.sha256()
    rows: list[bytes] = []
    line_number = 0
    carry = b""
    with path.open("rb") as export_file:
        while True:
            chunk = export_file.read(_READ_CHUNK_BYTES)
            if chunk:
                digest.update(chunk)
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()
            else:
                # The last line may lack its newline.
                lines = [carry] if carry else []
            for raw in lines:
                line_number += 1
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if not raw or raw.isspace():
                    scan.blank_lines += 1
                    continue
                try:
                    valid = validate_line(decode_line(raw))
                except InvalidLine as invalid:
                    scan.quarantined += 1
                    shown = _copy_text(_quarantine_text(raw))
                    reason = _copy_text(invalid.reason.encode())
                    rows.append(b"%d\t\\N\t\\N\t%s\t%s\n" % (line_number, shown, reason))
                else:
                    scan.accepted += 1
                    seconds = valid.epoch_seconds
                    rows.append(b"%d\t%a\t%s\t\\N\t\\N\n" % (line_number, seconds, _copy_text(raw)))
                if len(rows) == _BLOCK_LINES:
                    yield b"".join(rows)
                    rows = []
            if not chunk:
                break
    if rows:
        yield b"".join(rows)
    scan.sha256 = digest.hexdigest()


def _load_block(cursor: psycopg.Cursor, block: bytes, names: dict[str, str]) -> int:
    """Stage one block, move it on to events and quarantine; returns the events it added."""
    with cursor.copy("copy mixpanel_staging from stdin") as copy:
        copy.write(block)
    loaded = cursor.execute(_INSERT_EVENTS, names).rowcount
    cursor.execute(_INSERT_QUARANTINE, names)
    cursor.execute("truncate mixpanel_staging")
    return loaded


def _load_blocks(cursor: psycopg.Cursor, path: Path, scan: _FileScan, names: dict[str, str]) -> int:
    """All blocks of the file, each loaded by a worker thread while this thread validates the next one:
    Postgres (jsonb parsing, index upkeep) and Python validation then use a core each. The worker and this
    thread never use the connection at the same time. Returns the events added."""
    loaded = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mixpanel-load") as worker:
        in_flight: Future[int] | None = None
        for block in _staging_blocks(path, scan):
            if in_flight is not None:
                loaded += in_flight.result()
            in_flight = worker.submit(_load_block, cursor, block, names)
        if in_flight is not None:
            loaded += in_flight.result()
    return loaded


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as export_file:
        while chunk := export_file.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def load_export_file(url: str, path: Path) -> LoadResult:
    """Load one export file in one transaction; see the module docstring for the rules."""
    source_file = path.name
    with connect(url) as conn:
        # Two loaders of one file (a sensor and a manual run) queue here instead of racing on the ledger.
        lock_key = _LOCK_NAMESPACE + source_file
        conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
        ledger_row = conn.execute(
            "select sha256 from raw_mixpanel.loaded_files where source_file = %s", (source_file,)
        ).fetchone()
        if ledger_row is not None:
            sha256 = file_sha256(path)
            if sha256 != ledger_row[0]:
                raise IngestError(
                    f"{source_file} was loaded before with sha256 {ledger_row[0]} but {path} now has sha256 "
                    f"{sha256}: a landed export file must not change; give a new export a new file name"
                )
            return LoadResult(source_file, sha256, 0, 0, 0, 0, 0, skipped=True)
        conn.execute(_SESSION_SETTINGS)
        conn.execute(_CREATE_STAGING)
        with conn.cursor() as cursor:
            names = {"source_file": source_file}
            scan = _FileScan()
            loaded = _load_blocks(cursor, path, scan, names)
            result = LoadResult(
                source_file=source_file,
                sha256=scan.sha256,
                lines_read=scan.accepted + scan.quarantined,
                loaded=loaded,
                duplicates=scan.accepted - loaded,
                quarantined=scan.quarantined,
                blank_lines=scan.blank_lines,
                skipped=False,
            )
            cursor.execute(
                _INSERT_LEDGER,
                names
                | {
                    "sha256": result.sha256,
                    "lines_read": result.lines_read,
                    "loaded": result.loaded,
                    "duplicates": result.duplicates,
                    "quarantined": result.quarantined,
                },
            )
    return result


def load_landing_folder(url: str, landing_dir: Path) -> list[LoadResult]:
    """Load every *.jsonl file of the folder that the ledger doesn't list yet, in name order.

    Files are matched to the ledger by name only, so a sensor tick doesn't hash the whole folder: a changed
    file under a loaded name is reported only by a direct load_export_file call. Writers must land a file
    complete under its final name (export_live writes a temporary name and renames).
    """
    if not landing_dir.is_dir():
        raise FileNotFoundError(f"Mixpanel landing folder {landing_dir} does not exist")
    with connect(url) as conn:
        loaded_names = {name for (name,) in conn.execute("select source_file from raw_mixpanel.loaded_files")}
    candidates = [path for path in landing_dir.glob(EXPORT_FILE_PATTERN) if path.is_file()]
    pending = sorted((path for path in candidates if path.name not in loaded_names), key=lambda p: p.name)
    return [load_export_file(url, path) for path in pending]
