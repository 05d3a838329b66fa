"""Benchmark: the Mixpanel loader against a plain COPY of the same lines, in one run, on one server.

Generates an export file of --lines Teamu-shaped events (with a few percent invalid lines and a few percent
exact duplicates), then measures, each from the file to committed rows:
  baseline  COPY of the raw lines into a one-column text table (no parsing, no index, no validation);
  loader    teamu_assets.ingest.load_export_file (validation, jsonb, dedup on the primary key, quarantine,
            ledger).
Prints both throughputs (lines/s) and loader/baseline, and for context the rate of a COPY of the final rows
straight into a table shaped like raw_mixpanel.events (the ceiling that table sets). The server is
TEAMU_DATABASE_URL's or the embedded one; the benchmark works in a scratch database of its own and drops it
at the end.

    .venv/bin/python bench/bench_ingest.py [--lines 1000000] [--bad-percent 2] [--duplicate-percent 2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from teamu_assets.db import schema
from teamu_assets.db.connection import connect, drop_database, resolve_url, with_database
from teamu_assets.ingest import LoadResult, load_export_file
from teamu_assets.settings import Settings

_READ_CHUNK_BYTES = 1 << 20
_FIRST_EVENT_TIME = 1_717_200_000  # 2024-06-01
_CITIES = ("Berlin", "Lisbon", "Austin", "Nairobi", "Osaka", "Lima")
_CLIENTS = (
    '"$os":"iOS","$browser":"Mobile Safari"',
    '"$os":"Android","$browser":"Chrome"',
    '"$os":"Mac OS X","$browser":"Firefox"',
)
# One of each kind of invalid line the validator meets in practice.
_BAD_LINES = (
    '{"event":"Post Viewed","properties":{"time":1717200000,"distinct_id":"12","$insert_id":"x1","post_id":',
    '{"event":"Post Viewed","properties":{"time":1717200000,"$insert_id":"x2","post_id":5,"duration_ms":10}}',
    '{"event":"Post Viewed","properties":{"time":1717200000,"distinct_id":"$device:9f","$insert_id":"x3",'
    '"post_id":5,"duration_ms":10}}',
    '{"event":"Recommendation Clicked","properties":{"time":1717200000,"distinct_id":"12","$insert_id":"x4",'
    '"post_id":"5","request_id":"r"}}',
)


@dataclass(frozen=True)
class GeneratedExport:
    path: Path
    lines: int
    bad_lines: int
    duplicate_lines: int


def _event_line(rng: random.Random, number: int) -> str:
    time_s = _FIRST_EVENT_TIME + number // 4
    insert_id = f"{number:016x}{rng.getrandbits(64):016x}"
    common = (
        f'"time":{time_s},"distinct_id":"{rng.randrange(1, 200_000)}","$insert_id":"{insert_id}",'
        f'{rng.choice(_CLIENTS)},"$city":"{rng.choice(_CITIES)}","mp_lib":"web","$lib_version":"2.55.0"'
    )
    kind = rng.random()
    if kind < 0.6:
        post_id = rng.randrange(1, 500_000)
        return (
            f'{{"event":"Post Viewed","properties":{{{common},"post_id":{post_id},'
            f'"duration_ms":{rng.randrange(0, 120_000)},"$current_url":"https://teamu.app/p/{post_id}"}}}}'
        )
    request = f'"request_id":"{rng.getrandbits(96):024x}"'
    if kind < 0.85:
        post_ids = ",".join(str(rng.randrange(1, 500_000)) for _ in range(20))
        return (
            f'{{"event":"Recommendation Shown","properties":{{{common},"post_ids":[{post_ids}],{request},'
            f'"model_version":"m-2024-06-01"}}}}'
        )
    clicked = rng.randrange(1, 500_000)
    return f'{{"event":"Recommendation Clicked","properties":{{{common},"post_id":{clicked},{request}}}}}'


def generate_export(folder: Path, lines: int, bad_percent: float, dup_percent: float) -> GeneratedExport:
    rng = random.Random(20240601)
    path = folder / "bench_export.jsonl"
    bad = duplicates = 0
    recent: list[str] = []
    with path.open("w", encoding="utf-8") as export_file:
        for number in range(lines):
            draw = rng.random() * 100
            if draw < bad_percent:
                line = _BAD_LINES[number % len(_BAD_LINES)]
                bad += 1
            elif draw < bad_percent + dup_percent and recent:
                line = rng.choice(recent)
                duplicates += 1
            else:
                line = _event_line(rng, number)
                if len(recent) < 1000:
                    recent.append(line)
                else:
                    recent[rng.randrange(1000)] = line
            export_file.write(line + "\n")
    return GeneratedExport(path, lines, bad, duplicates)


def raw_copy_seconds(url: str, path: Path) -> float:
    """COPY the lines as they are into one text column: csv mode with a delimiter and quote that JSON lines
    never hold, so the file streams through unchanged, with no escaping."""
    started = time.perf_counter()
    with connect(url) as conn:
        conn.execute("create table bench_raw_lines (line text)")
        copy_sql = r"copy bench_raw_lines from stdin with (format csv, delimiter e'\x01', quote e'\x02')"
        with conn.cursor() as cursor, cursor.copy(copy_sql) as copy, path.open("rb") as export_file:
            while chunk := export_file.read(_READ_CHUNK_BYTES):
                copy.write(chunk)
    return time.perf_counter() - started


def table_floor_seconds(url: str, folder: Path) -> float:
    """COPY the rows the loader stored, already in their final form, into a fresh copy of raw_mixpanel.events
    (same primary key and indexes, jsonb parsed): no validation, staging or dedup. It is the cost the target
    table itself imposes, to read the loader's figure against. Only the COPY in is timed."""
    rows_path = folder / "events_rows.copy"
    columns = "insert_id, event, distinct_id, event_time, properties, source_file"
    with connect(url) as conn, conn.cursor() as cursor, rows_path.open("wb") as rows_file:
        conn.execute("create table bench_events_floor (like raw_mixpanel.events including all)")
        with cursor.copy(f"copy (select {columns} from raw_mixpanel.events) to stdout") as copy:
            for data in copy:
                rows_file.write(data)
    started = time.perf_counter()
    copy_in = f"copy bench_events_floor ({columns}) from stdin"
    with (
        connect(url) as conn,
        conn.cursor() as cursor,
        cursor.copy(copy_in) as copy,
        rows_path.open("rb") as rows_file,
    ):
        while chunk := rows_file.read(_READ_CHUNK_BYTES):
            copy.write(chunk)
    return time.perf_counter() - started


def loader_seconds(url: str, path: Path) -> tuple[float, LoadResult]:
    started = time.perf_counter()
    result = load_export_file(url, path)
    return time.perf_counter() - started, result


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--bad-percent", type=float, default=2.0)
    parser.add_argument("--duplicate-percent", type=float, default=2.0)
    args = parser.parse_args()

    settings = Settings.from_env()
    server_url = resolve_url(settings.database_url, settings.pgdata)
    scratch = f"teamu_bench_ingest_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="teamu_bench_ingest_") as folder:
        started = time.perf_counter()
        export = generate_export(Path(folder), args.lines, args.bad_percent, args.duplicate_percent)
        size_mb = export.path.stat().st_size / 1e6
        print(
            f"generated {export.lines:,} lines ({size_mb:.0f} MB; {export.bad_lines:,} invalid, "
            f"{export.duplicate_lines:,} duplicates) in {time.perf_counter() - started:.1f} s"
        )
        with connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
        try:
            url = with_database(server_url, scratch)
            schema.apply(url, "raw_mixpanel")
            baseline_s = raw_copy_seconds(url, export.path)
            loader_s, result = loader_seconds(url, export.path)
            floor_s = table_floor_seconds(url, Path(folder))
        finally:
            drop_database(server_url, scratch)
    baseline_rate = export.lines / baseline_s
    loader_rate = export.lines / loader_s
    print(f"baseline  plain COPY into one text column: {baseline_s:6.2f} s  {baseline_rate:>10,.0f} lines/s")
    print(f"loader    load_export_file:                {loader_s:6.2f} s  {loader_rate:>10,.0f} lines/s")
    print(
        f"          read {result.lines_read:,} = loaded {result.loaded:,} + duplicates {result.duplicates:,}"
        f" + quarantined {result.quarantined:,}"
    )
    print(f"ratio     loader / baseline = {loader_rate / baseline_rate:.2f}x")
    floor_rate = export.lines / floor_s
    print(
        f"context   COPY of the final rows into raw_mixpanel.events' shape: {floor_s:.2f} s"
        f" ({floor_rate:,.0f} lines/s, {floor_rate / baseline_rate:.2f}x of the baseline):"
        " the most any loader into this table can reach"
    )


if __name__ == "__main__":
    main()
