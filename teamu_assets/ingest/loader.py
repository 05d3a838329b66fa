"""Mixpanel export files -> raw_mixpanel.events, with quarantine and a ledger; nothing read is ever lost.

How a file is loaded (load_export_file):
1. The file is opened without following a symbolic link, and only a regular file is read: a link in the
   landing folder to /proc/self/environ or /etc/passwd would otherwise put that file's text into
   events_quarantine.raw_line.
2. A transaction-scoped advisory lock on the file name, then the ledger (raw_mixpanel.loaded_files): how many
   bytes and lines of the file were read before, and the sha256 of those bytes. The file must still begin with
   exactly those bytes; then only what follows is read, so a file that was copied in while still being written
   loads the rest once it is complete. A file that changed in any other way (shorter, or other bytes: a
   re-export under the same name) raises IngestError and writes nothing: it is never skipped in silence.
3. The file is read in chunks and split into lines (memory doesn't grow with file size or line length: a line
   over MAX_LINE_BYTES is quarantined, keeping its first MAX_LINE_BYTES bytes); each line is validated in
   Python, and blocks of lines go by COPY into a temporary staging table: valid lines as jsonb, invalid ones as
   raw text with their reason. A UTF-8 byte order mark before the first line is dropped.
4. Per block, `insert ... on conflict do nothing` moves the valid rows into raw_mixpanel.events, so a
   duplicate of an event in this file or in an earlier one is counted, not loaded (the first line wins),
   and the invalid rows go to raw_mixpanel.events_quarantine. Each block runs in a savepoint: should Postgres
   refuse a line the validator let through, the block is halved until that line is alone, and it goes to
   quarantine with Postgres' reason instead of failing the file. A worker thread does this for one block while
   Python validates the next. Last, the ledger row; one commit for everything.

The last line: a file that doesn't end in a newline may be cut mid-line (still being written). Such a last line
is loaded when it is a valid event (a JSON object can't be a valid line and the start of a longer one);
otherwise it is quarantined with a reason that says so and the ledger remembers it, so when the file grows the
line is read again, complete, and its quarantine row is withdrawn.

Counting: lines_read = loaded + duplicates + quarantined, per call and in the ledger's totals. Blank lines
(empty or whitespace only, e.g. a trailing empty line) carry no event: they are not counted in lines_read,
LoadResult.blank_lines reports them, and line numbers stay physical line numbers of the file so a quarantined
line can be found in it.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg

from teamu_assets.db.connection import connect
from teamu_assets.ingest.validation import FUTURE_TOLERANCE_SECONDS, InvalidLine, decode_line, validate_line

EXPORT_FILE_PATTERN = "*.jsonl"
# Mixpanel refuses events over 1 MB of JSON, so a longer line was never one; the cap also bounds the memory
# a line without newlines (a binary file named *.jsonl) can take.
MAX_LINE_BYTES = 1 << 20
_READ_CHUNK_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
# Lines per staging block: large enough that the per-block statements are noise, small enough that the
# block stays in temp_buffers and the sort for `order by line_number` in work_mem.
_BLOCK_LINES = 20_000
_SESSION_SETTINGS = "set temp_buffers = '64MB'; set work_mem = '64MB'"
_LOCK_NAMESPACE = "teamu.ingest.mixpanel:"
# O_NOFOLLOW: a symbolic link is refused (ELOOP), never followed. O_NONBLOCK: a FIFO named *.jsonl can't
# block the open; fstat then refuses it as not a regular file.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What Postgres raises for one bad value (22xxx, e.g. a number numeric can't hold) or one oversized key
# (54000, an index row over the btree limit): errors of a line, not of the file.
_LINE_ERRORS = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded)
_OPEN_TAIL_NOTE = " (last line of the file, no newline yet: read again when the file grows)"

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
_READ_LEDGER = """
select sha256, size_bytes, line_count, open_tail_bytes from raw_mixpanel.loaded_files where source_file = %s
"""
# The counts of a call are added to the file's totals: the ledger row always describes the whole file read.
_WRITE_LEDGER = """
insert into raw_mixpanel.loaded_files as ledger (
    source_file, sha256, size_bytes, mtime_ns, line_count, open_tail_bytes,
    lines_read, loaded, duplicates, quarantined
)
values (
    %(source_file)s, %(sha256)s, %(size_bytes)s, %(mtime_ns)s, %(line_count)s, %(open_tail_bytes)s,
    %(lines_read)s, %(loaded)s, %(duplicates)s, %(quarantined)s
)
on conflict (source_file) do update set
    sha256 = excluded.sha256,
    size_bytes = excluded.size_bytes,
    mtime_ns = excluded.mtime_ns,
    line_count = excluded.line_count,
    open_tail_bytes = excluded.open_tail_bytes,
    lines_read = ledger.lines_read + excluded.lines_read,
    loaded = ledger.loaded + excluded.loaded,
    duplicates = ledger.duplicates + excluded.duplicates,
    quarantined = ledger.quarantined + excluded.quarantined,
    updated_at = now()
"""
_WRITE_LEDGER_STAT = """
update raw_mixpanel.loaded_files set size_bytes = %s, mtime_ns = %s, line_count = %s, open_tail_bytes = %s
where source_file = %s
"""


class IngestError(RuntimeError):
    """An export file whose (new) lines can't be loaded: nothing of them is written. The message starts with
    the file's name, and with the line when one line is to blame."""

    def __init__(self, source_file: str, message: str, line: int | None = None) -> None:
        where = source_file if line is None else f"{source_file}, line {line}"
        super().__init__(f"{where}: {message}")
        self.source_file = source_file
        self.line = line


@dataclass(frozen=True)
class LoadResult:
    """What one call read of one file; lines_read = loaded + duplicates + quarantined over those lines.

    skipped: nothing new since the last load (all counts 0). A file that grew since it was loaded is read from
    first_line on; withdrawn is 1 when first_line is a last line that had no newline and was quarantined for
    it, and is now read again (its quarantine row replaced), so the ledger's lines_read and quarantined grow by
    this call's counts minus withdrawn. incomplete_last_line: the file ends in a line without newline that is
    no event (yet); it is read again when the file grows.
    """

    source_file: str
    sha256: str  # of the file's first size_bytes bytes: all of it, as read by this call
    size_bytes: int
    first_line: int
    lines_read: int
    loaded: int
    duplicates: int
    quarantined: int
    withdrawn: int
    blank_lines: int
    incomplete_last_line: bool
    skipped: bool


@dataclass(frozen=True)
class FileProblem:
    """A landing-folder entry that was not loaded, and why; the message names the file (and line)."""

    source_file: str
    message: str


@dataclass(frozen=True)
class FolderLoad:
    """What load_landing_folder did: the files it read (in name order), the files it could not load (their
    new lines are not written; the files after them were loaded all the same), and the entries it refused to
    open (symbolic links, directories, FIFOs...). Anything in failed or refused needs an operator."""

    results: list[LoadResult]
    failed: list[FileProblem]
    refused: list[FileProblem]


@dataclass(frozen=True)
class LandedFile:
    """A regular *.jsonl file of the landing folder, as the ledger names it."""

    source_file: str
    path: Path
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class _Ledger:
    sha256: str
    size_bytes: int | None  # None: a row of the loader before sizes were kept, covering the whole file
    line_count: int | None
    open_tail_bytes: int


@dataclass
class _FileScan:
    """Where reading starts, and what it found; final once _staging_blocks is exhausted."""

    digest: hashlib._Hash  # of the file's bytes before hashed_to; reading adds the rest
    hashed_to: int
    start: int  # byte offset where reading starts
    line_number: int  # lines before start; then the line being read
    continues_line: bool = False  # start is inside a line that was loaded complete, without its newline
    size: int = 0
    accepted: int = 0
    quarantined: int = 0
    blank_lines: int = 0
    open_tail_bytes: int = 0


def ledger_name(name: str) -> str:
    """A file name as the ledger, events and quarantine store it. Postgres text is UTF-8; a name that isn't
    (Python gives its bytes as lone surrogates) keeps those bytes as \\xNN, so its file loads like any other."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


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


def _quarantine_row(line_number: int, raw: bytes, reason: str) -> bytes:
    return b"%d\t\\N\t\\N\t%s\t%s\n" % (line_number, _copy_text(_quarantine_text(raw)), _copy_text(reason.encode()))


def _lines(export_file: BinaryIO, scan: _FileScan) -> Iterator[tuple[bytes, int, bool]]:
    """The physical lines from scan.start on: (the line, at most MAX_LINE_BYTES + 1 bytes of it; its length;
    whether a newline ends it). Bytes at or past scan.hashed_to go into scan.digest, so it ends as the sha256
    of the file's first scan.size bytes."""
    export_file.seek(scan.start)
    position = scan.start
    carry, carry_length = b"", 0
    while chunk := export_file.read(_READ_CHUNK_BYTES):
        if position + len(chunk) > scan.hashed_to:
            scan.digest.update(chunk[max(scan.hashed_to - position, 0) :])
        position += len(chunk)
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            if carry_length:
                yield carry + piece[: MAX_LINE_BYTES + 1 - len(carry)], carry_length + len(piece), True
                carry, carry_length = b"", 0
            else:
                yield piece, len(piece), True
        if rest:
            carry += rest[: MAX_LINE_BYTES + 1 - len(carry)]
            carry_length += len(rest)
    scan.size = position
    if carry_length:
        yield carry, carry_length, False


def _staging_blocks(
    export_file: BinaryIO, scan: _FileScan, source_file: str, latest: float
) -> Iterator[tuple[list[bytes], int, int]]:
    """The lines as COPY text rows for mixpanel_staging, _BLOCK_LINES rows a block, with the block's first and
    last line numbers."""
    rows: list[bytes] = []
    first_line = scan.line_number + 1
    for raw, length, terminated in _lines(export_file, scan):
        if scan.continues_line:
            # The rest of a line loaded before without its newline: only the newline (or whitespace) may follow.
            if raw.strip():
                raise IngestError(
                    source_file,
                    "was loaded when it ended in this complete event without a newline, and the line has "
                    "grown since: a landed export must not change; give a new export a new file name",
                    line=scan.line_number,
                )
            scan.continues_line = not terminated
            continue
        scan.line_number += 1
        if scan.line_number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        note = "" if terminated else _OPEN_TAIL_NOTE
        if length > MAX_LINE_BYTES:
            reason = f"line is longer than {MAX_LINE_BYTES} bytes ({length} bytes); raw_line holds its start"
            rows.append(_quarantine_row(scan.line_number, raw[:MAX_LINE_BYTES], reason + note))
            scan.quarantined += 1
            scan.open_tail_bytes = 0 if terminated else length
        else:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw or raw.isspace():
                scan.blank_lines += 1
                scan.open_tail_bytes = 0 if terminated else length
                continue
            try:
                valid = validate_line(decode_line(raw), latest)
            except InvalidLine as invalid:
                rows.append(_quarantine_row(scan.line_number, raw, invalid.reason + note))
                scan.quarantined += 1
                scan.open_tail_bytes = 0 if terminated else length
            else:
                rows.append(b"%d\t%a\t%s\t\\N\t\\N\n" % (scan.line_number, valid.epoch_seconds, _copy_text(raw)))
                scan.accepted += 1
        if len(rows) == _BLOCK_LINES:
            yield rows, first_line, scan.line_number
            rows, first_line = [], scan.line_number + 1
    if rows:
        yield rows, first_line, scan.line_number


def _move_rows(cursor: psycopg.Cursor, block: bytes, names: dict[str, str]) -> int:
    """Stage rows, move them on to events and quarantine; returns the events added."""
    with cursor.copy("copy mixpanel_staging from stdin") as copy:
        copy.write(block)
    loaded = cursor.execute(_INSERT_EVENTS, names).rowcount
    cursor.execute(_INSERT_QUARANTINE, names)
    cursor.execute("truncate mixpanel_staging")
    return loaded


def _refused_row(row: bytes, error: psycopg.Error) -> bytes | None:
    """An accepted staging row as a quarantine row with Postgres' reason; None for a quarantine row."""
    line_number, _, event, _, _ = row.rstrip(b"\n").split(b"\t")
    if event == b"\\N":
        return None
    reason = f"Postgres refused the line: {error.diag.message_primary or type(error).__name__}"
    return b"%s\t\\N\t\\N\t%s\t%s\n" % (line_number, event, _copy_text(reason.encode()))


def _load_rows(cursor: psycopg.Cursor, rows: list[bytes], names: dict[str, str]) -> tuple[int, int]:
    """Rows into events and quarantine in a savepoint: (events added, lines Postgres refused). A refused
    block is halved until the refused line is alone, which goes to quarantine instead."""
    try:
        with cursor.connection.transaction():
            return _move_rows(cursor, b"".join(rows), names), 0
    except _LINE_ERRORS as error:
        if len(rows) > 1:
            half = len(rows) // 2
            loaded_first, refused_first = _load_rows(cursor, rows[:half], names)
            loaded_second, refused_second = _load_rows(cursor, rows[half:], names)
            return loaded_first + loaded_second, refused_first + refused_second
        refused = _refused_row(rows[0], error)
        if refused is None:
            raise
        _move_rows(cursor, refused, names)
        return 0, 1


def _load_block(
    cursor: psycopg.Cursor, rows: list[bytes], lines: tuple[int, int], names: dict[str, str]
) -> tuple[int, int]:
    try:
        return _load_rows(cursor, rows, names)
    except psycopg.OperationalError:
        raise  # the connection, not the file: no later file would load either
    except psycopg.Error as error:
        message = f"Postgres failed on lines {lines[0]}-{lines[1]}: {type(error).__name__}: {error}"
        raise IngestError(names["source_file"], message) from error


def _load_blocks(
    cursor: psycopg.Cursor, export_file: BinaryIO, scan: _FileScan, names: dict[str, str], latest: float
) -> tuple[int, int]:
    """All blocks of the file, each loaded by a worker thread while this thread validates the next one:
    Postgres (jsonb parsing, index upkeep) and Python validation then use a core each. The worker and this
    thread never use the connection at the same time. Returns the events added and the lines Postgres
    refused."""
    loaded = refused = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mixpanel-load") as worker:
        in_flight: Future[tuple[int, int]] | None = None
        for rows, first_line, last_line in _staging_blocks(export_file, scan, names["source_file"], latest):
            if in_flight is not None:
                block_loaded, block_refused = in_flight.result()
                loaded, refused = loaded + block_loaded, refused + block_refused
            in_flight = worker.submit(_load_block, cursor, rows, (first_line, last_line), names)
        if in_flight is not None:
            block_loaded, block_refused = in_flight.result()
            loaded, refused = loaded + block_loaded, refused + block_refused
    return loaded, refused


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as export_file:
        while chunk := export_file.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _open_regular(path: Path, source_file: str) -> BinaryIO:
    """The file at path, only when it is a regular file itself: a symbolic link (even to a regular file) or a
    FIFO, device or directory named like an export is refused, and never read."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise IngestError(source_file, "refused: a symbolic link; only regular files are read") from None
        raise IngestError(source_file, f"cannot be opened: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise IngestError(source_file, "refused: not a regular file")
    return os.fdopen(descriptor, "rb")


def _changed(source_file: str, detail: str) -> IngestError:
    return IngestError(
        source_file,
        f"changed since it was loaded ({detail}): a landed export must not change, only grow; give a new "
        "export a new file name",
    )


def _verified_scan(export_file: BinaryIO, ledger: _Ledger, file_size: int, source_file: str) -> tuple[_FileScan, int]:
    """Where to go on reading a file loaded before, and its line count as loaded, after checking that it still
    begins with the bytes read then (their sha256). A ledger row without a size (older loader) covered the whole
    file: only the same content passes, and the row's missing figures are then taken from it."""
    digest = hashlib.sha256()
    expected = file_size if ledger.size_bytes is None else ledger.size_bytes
    if file_size < expected:
        raise _changed(source_file, f"{file_size} bytes now, {expected} bytes were loaded")
    remaining, newlines, last = expected, 0, b"\n"
    while remaining:
        chunk = export_file.read(min(_READ_CHUNK_BYTES, remaining))
        if not chunk:
            raise _changed(source_file, f"it shrank while being read, {expected} bytes were loaded")
        digest.update(chunk)
        newlines += chunk.count(b"\n")
        remaining -= len(chunk)
        last = chunk[-1:]
    if digest.hexdigest() != ledger.sha256:
        if ledger.size_bytes is None:
            # The row doesn't say how much of the file it covered, so growth can't be told from change.
            raise _changed(source_file, f"it no longer has the sha256 {ledger.sha256}; its ledger row has no size")
        raise _changed(source_file, f"its first {expected} bytes no longer have the sha256 {ledger.sha256}")
    # The older loader read a last line without newline as a line, complete.
    line_count = newlines + (last != b"\n") if ledger.line_count is None else ledger.line_count
    open_tail = ledger.open_tail_bytes
    scan = _FileScan(
        digest=digest,
        hashed_to=expected,
        start=expected - open_tail,
        line_number=line_count - (1 if open_tail else 0),
        continues_line=last != b"\n" and not open_tail,
    )
    return scan, line_count


def _read_ledger(conn: psycopg.Connection, source_file: str) -> _Ledger | None:
    row = conn.execute(_READ_LEDGER, (source_file,)).fetchone()
    return None if row is None else _Ledger(*row)


def load_export_file(url: str, path: Path) -> LoadResult:
    """Load one export file, or what it gained since its last load, in one transaction; see the module
    docstring for the rules."""
    source_file = ledger_name(path.name)
    latest = time.time() + FUTURE_TOLERANCE_SECONDS
    with _open_regular(path, source_file) as export_file, connect(url) as conn:
        # Two loaders of one file (a sensor and a manual run) queue here instead of racing on the ledger.
        lock_key = _LOCK_NAMESPACE + source_file
        conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
        # Taken before reading: should the file grow while it is read, its mtime moves past this one and the
        # next folder scan looks at it again.
        file_stat = os.fstat(export_file.fileno())
        ledger = _read_ledger(conn, source_file)
        scan = _FileScan(digest=hashlib.sha256(), hashed_to=0, start=0, line_number=0)
        try:
            if ledger is not None:
                scan, line_count = _verified_scan(export_file, ledger, file_stat.st_size, source_file)
                if file_stat.st_size == scan.hashed_to:
                    # Nothing new; the mtime (or an older loader's row) is brought up to date, so the next
                    # folder scan doesn't hash the file again.
                    figures = (scan.hashed_to, file_stat.st_mtime_ns, line_count, ledger.open_tail_bytes)
                    conn.execute(_WRITE_LEDGER_STAT, (*figures, source_file))
                    return LoadResult(
                        source_file=source_file,
                        sha256=ledger.sha256,
                        size_bytes=scan.hashed_to,
                        first_line=scan.line_number + 1,
                        lines_read=0,
                        loaded=0,
                        duplicates=0,
                        quarantined=0,
                        withdrawn=0,
                        blank_lines=0,
                        incomplete_last_line=ledger.open_tail_bytes > 0,
                        skipped=True,
                    )
            first_line = scan.line_number + 1
            withdrawn = 0
            if ledger is not None and ledger.open_tail_bytes:
                withdrawn = conn.execute(
                    "delete from raw_mixpanel.events_quarantine where source_file = %s and line_number = %s",
                    (source_file, first_line),
                ).rowcount
            conn.execute(_SESSION_SETTINGS)
            conn.execute(_CREATE_STAGING)
            with conn.cursor() as cursor:
                names = {"source_file": source_file}
                loaded, refused = _load_blocks(cursor, export_file, scan, names, latest)
        except (IngestError, psycopg.OperationalError):
            raise
        except Exception as error:
            # Anything else stops this file only (a read error, a validator bug): say where.
            line = scan.line_number or None
            raise IngestError(source_file, f"{type(error).__name__}: {error}", line=line) from error
        result = LoadResult(
            source_file=source_file,
            sha256=scan.digest.hexdigest(),
            size_bytes=scan.size,
            first_line=first_line,
            lines_read=scan.accepted + scan.quarantined,
            loaded=loaded,
            duplicates=scan.accepted - refused - loaded,
            quarantined=scan.quarantined + refused,
            withdrawn=withdrawn,
            blank_lines=scan.blank_lines,
            incomplete_last_line=scan.open_tail_bytes > 0,
            skipped=False,
        )
        conn.execute(
            _WRITE_LEDGER,
            {
                "source_file": source_file,
                "sha256": result.sha256,
                "size_bytes": result.size_bytes,
                "mtime_ns": file_stat.st_mtime_ns,
                "line_count": scan.line_number,
                "open_tail_bytes": scan.open_tail_bytes,
                "lines_read": result.lines_read - withdrawn,
                "loaded": result.loaded,
                "duplicates": result.duplicates,
                "quarantined": result.quarantined - withdrawn,
            },
        )
    return result


def landed_files(landing_dir: Path) -> tuple[list[LandedFile], list[FileProblem]]:
    """The regular *.jsonl files directly in the folder, in name order, and the entries named like one that
    are refused: a symbolic link (wherever it points) or anything that isn't a regular file. Nothing is opened
    here; subfolders are not scanned."""
    files: list[LandedFile] = []
    refused: list[FileProblem] = []
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if not fnmatch.fnmatchcase(entry.name, EXPORT_FILE_PATTERN):
                continue
            source_file = ledger_name(entry.name)
            try:
                if entry.is_symlink():
                    target = ledger_name(os.readlink(entry.path))
                    message = f"{source_file}: refused: a symbolic link (to {target})"
                    refused.append(FileProblem(source_file, message))
                elif not entry.is_file(follow_symlinks=False):
                    refused.append(FileProblem(source_file, f"{source_file}: refused: not a regular file"))
                else:
                    entry_stat = entry.stat(follow_symlinks=False)
                    landed = LandedFile(source_file, Path(entry.path), entry_stat.st_size, entry_stat.st_mtime_ns)
                    files.append(landed)
            except FileNotFoundError:
                continue  # removed since the folder was listed: nothing left to load or refuse
    files.sort(key=lambda landed: landed.source_file)
    refused.sort(key=lambda problem: problem.source_file)
    return files, refused


def pending_files(url: str, files: list[LandedFile]) -> list[LandedFile]:
    """The files with something the ledger doesn't reflect: never loaded, or not of the size and mtime they
    were last loaded at (grown, rewritten, touched). Size and mtime only, so a sensor tick hashes nothing; the
    load itself checks the content."""
    with connect(url) as conn:
        ledger = {
            name: (size, mtime)
            for name, size, mtime in conn.execute(
                "select source_file, size_bytes, mtime_ns from raw_mixpanel.loaded_files"
            )
        }
    return [landed for landed in files if ledger.get(landed.source_file) != (landed.size_bytes, landed.mtime_ns)]


def load_landing_folder(url: str, landing_dir: Path) -> FolderLoad:
    """Load every pending *.jsonl file of the folder (see pending_files), in name order.

    A file that fails is recorded in FolderLoad.failed with the reason, and the files after it are loaded all
    the same; the caller must surface failed and refused entries (the mixpanel/events asset fails its check).
    Writers should land a file complete under its final name (export_live writes a temporary name and
    renames); one copied in while being written loads in parts, as it grows.
    """
    if not landing_dir.is_dir():
        raise FileNotFoundError(f"Mixpanel landing folder {landing_dir} does not exist")
    files, refused = landed_files(landing_dir)
    results: list[LoadResult] = []
    failed: list[FileProblem] = []
    for landed in pending_files(url, files):
        try:
            results.append(load_export_file(url, landed.path))
        except IngestError as error:
            failed.append(FileProblem(error.source_file, str(error)))
    return FolderLoad(results, failed, refused)
