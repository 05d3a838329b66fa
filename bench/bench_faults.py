"""Benchmark: hostile Mixpanel export files through the loader, every line accounted for.

Each case writes its files into a landing folder of its own, loads the folder with
teamu_assets.ingest.load_landing_folder into a scratch database, and checks the accounting: for every file the
ledger's lines_read is the file's non-blank line count (counted here, independently of the loader), lines_read
= loaded + duplicates + quarantined, raw_mixpanel.events holds `loaded` rows of the file and
raw_mixpanel.events_quarantine `quarantined` rows; plus what the case itself expects (links refused, a changed
file reported as failed, ...). Prints one line per case (the accounting and the seconds the loads took) and a
final line `faults: <n> cases, all lines accounted for`, or the failures (exit status 1).

    .venv/bin/python bench/bench_faults.py [--lines 1000000]

--lines sizes the file of mostly bad lines. The server is TEAMU_DATABASE_URL's or the embedded one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from teamu_assets.db import schema
from teamu_assets.db.connection import connect, resolve_url, scratch_database
from teamu_assets.ingest import FolderLoad, load_landing_folder
from teamu_assets.ingest.loader import MAX_LINE_BYTES, ledger_name
from teamu_assets.settings import Settings

TIME = 1_717_200_000  # 2024-06-01
FAR_FUTURE = 4_102_444_799  # 2099-12-31


@dataclass
class Case:
    """What a case did: the loads, the files whose accounting to check (name -> the bytes that were loaded),
    and failures of the case's own expectations."""

    name: str
    seconds: float = 0.0
    loads: list[FolderLoad] = field(default_factory=list)
    loaded_bytes: dict[str, bytes] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def load(self, url: str, landing: Path) -> FolderLoad:
        started = time.perf_counter()
        folder = load_landing_folder(url, landing)
        self.seconds += time.perf_counter() - started
        self.loads.append(folder)
        return folder

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)


def event(insert_id: str, *, name: str = "Post Viewed", **extra: object) -> bytes:
    properties = {"time": TIME, "distinct_id": "42", "$insert_id": insert_id, "post_id": 1_000_001, "duration_ms": 900}
    return json.dumps({"event": name, "properties": properties | extra}).encode()


def write(folder: Path, name: str | bytes, lines: list[bytes]) -> Path:
    path = folder / os.fsdecode(name)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def counted_lines(data: bytes) -> int:
    """The lines the loader must account for: all but blank ones (whitespace only), a byte order mark before
    the first line and a \\r before each newline not counting as content; an overlong line counts whatever
    it holds."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return sum(1 for line in data.split(b"\n") if len(line) > MAX_LINE_BYTES or line.strip())


def account(url: str, case: Case) -> tuple[int, int, int, int]:
    """Check every file the case loaded against the ledger, events and quarantine; the ledger totals."""
    totals = [0, 0, 0, 0]
    with connect(url) as conn:
        for source_file, data in case.loaded_bytes.items():
            row = conn.execute(
                "select lines_read, loaded, duplicates, quarantined from raw_mixpanel.loaded_files "
                "where source_file = %s",
                (source_file,),
            ).fetchone()
            if row is None:
                case.failures.append(f"{source_file}: no ledger row")
                continue
            lines_read, loaded, duplicates, quarantined = row
            events, quarantine = conn.execute(
                "select (select count(*) from raw_mixpanel.events where source_file = %(f)s), "
                "(select count(*) from raw_mixpanel.events_quarantine where source_file = %(f)s)",
                {"f": source_file},
            ).fetchone()
            expected = counted_lines(data)
            case.expect(lines_read == expected, f"{source_file}: ledger read {lines_read}, the file has {expected}")
            case.expect(
                lines_read == loaded + duplicates + quarantined,
                f"{source_file}: {lines_read} read != {loaded} + {duplicates} + {quarantined}",
            )
            case.expect(events == loaded, f"{source_file}: {events} rows in events, ledger says {loaded}")
            case.expect(
                quarantine == quarantined, f"{source_file}: {quarantine} quarantined rows, ledger {quarantined}"
            )
            for index, value in enumerate(row):
                totals[index] += value
    return totals[0], totals[1], totals[2], totals[3]


def invalid_utf8(url: str, landing: Path, case: Case) -> None:
    lines = [event(f"utf8-{n}") if n % 3 else b'{"event": "Post Viewed", "note": "\xff\xfe\xc3"}' for n in range(999)]
    case.loaded_bytes["invalid-utf8.jsonl"] = write(landing, "invalid-utf8.jsonl", lines).read_bytes()
    case.load(url, landing)


def nul_bytes(url: str, landing: Path, case: Case) -> None:
    raw_nul = event("nul-raw").replace(b'"Post Viewed"', b'"Post\x00Viewed"')
    escaped_nul = event("nul-escaped", note="a\x00b")
    lines = [raw_nul, escaped_nul, b"\x00" * 64, event("nul-ok")]
    case.loaded_bytes["nul.jsonl"] = write(landing, "nul.jsonl", lines).read_bytes()
    case.load(url, landing)


def long_line(url: str, landing: Path, case: Case) -> None:
    huge = event("huge", blob="x" * 10_000_000)  # a 10 MB line
    lines = [event("long-1"), huge, event("long-2")]
    case.loaded_bytes["long-line.jsonl"] = write(landing, "long-line.jsonl", lines).read_bytes()
    folder = case.load(url, landing)
    case.expect(folder.results[0].quarantined == 1, "the 10 MB line was not quarantined")


def mostly_bad(lines: int) -> Callable[[str, Path, Case], None]:
    def run(url: str, landing: Path, case: Case) -> None:
        bad_kinds = [
            b"not json at all",
            b'{"event": "Post Viewed", "properties": {"time": 17172',  # cut mid-line
            event("x", time=FAR_FUTURE),
            event("x", distinct_id="$device:abc"),
            event("x", name="Recommendation Shown", post_ids=[1], request_id="r", post_id="x"),
            event("x").replace(b'"duration_ms": 900', b'"duration_ms": 1e999999'),
            b'{"event": "\xff\xfe", "properties": {}}',
            event("x").replace(b"Post Viewed", b"Post\x00Viewed"),
        ]
        path = landing / "mostly-bad.jsonl"
        with path.open("wb") as export_file:
            good = None
            for n in range(lines):
                kind = n % 10
                if kind == 0:
                    good = event(f"good-{n}")
                    line = good
                elif kind == 1 and good is not None:
                    line = good  # a duplicate
                else:
                    line = bad_kinds[n % len(bad_kinds)]
                export_file.write(line + b"\n")
        case.loaded_bytes[path.name] = path.read_bytes()
        case.load(url, landing)

    return run


def symlinks_out(url: str, landing: Path, case: Case) -> None:
    outside = write(landing.parent, "outside.jsonl", [event("outside")])
    links = {"passwd.jsonl": "/etc/passwd", "environ.jsonl": "/proc/self/environ", "outside.jsonl": str(outside)}
    for name, target in links.items():
        (landing / name).symlink_to(target)
    case.loaded_bytes["regular.jsonl"] = write(landing, "regular.jsonl", [event("regular")]).read_bytes()
    folder = case.load(url, landing)
    case.expect(sorted(problem.source_file for problem in folder.refused) == sorted(links), "links not refused")
    with connect(url) as conn:
        for name in links:
            for table in ("events", "events_quarantine", "loaded_files"):
                query = f"select count(*) from raw_mixpanel.{table} where source_file = %s"
                rows = conn.execute(query, (name,)).fetchone()[0]
                case.expect(rows == 0, f"{name}: {rows} rows in {table}, from a link")


def truncated_then_completed(url: str, landing: Path, case: Case) -> None:
    lines = [event(f"cut-{n}") + b"\n" for n in range(20)]
    path = landing / "truncated.jsonl"
    path.write_bytes(b"".join(lines[:10]) + lines[10][:40])  # cut mid-line, as a copy still being written
    case.load(url, landing)
    path.write_bytes(b"".join(lines))
    folder = case.load(url, landing)
    case.loaded_bytes[path.name] = path.read_bytes()
    case.expect(folder.results[0].withdrawn == 1, "the cut line was not read again")
    with connect(url) as conn:
        loaded = conn.execute("select loaded from raw_mixpanel.loaded_files where source_file = %s", (path.name,))
        case.expect(loaded.fetchone()[0] == 20, "not all 20 events loaded after completion")


def same_name_new_content(url: str, landing: Path, case: Case) -> None:
    path = write(landing, "reexport.jsonl", [event(f"old-{n}") for n in range(7)])
    case.loaded_bytes[path.name] = path.read_bytes()
    case.load(url, landing)
    write(landing, "reexport.jsonl", [event(f"new-{n}") for n in range(7)])
    case.loaded_bytes["reexport2.jsonl"] = write(landing, "reexport2.jsonl", [event("after")]).read_bytes()
    folder = case.load(url, landing)
    failed = [problem.source_file for problem in folder.failed]
    case.expect(failed == [path.name], f"the changed file was not reported as failed ({failed})")
    case.expect([result.source_file for result in folder.results] == ["reexport2.jsonl"], "later file not loaded")


def odd_name_and_bom(url: str, landing: Path, case: Case) -> None:
    name = b"odd-\xff-name.jsonl"
    path = write(landing, name, [event("odd-1")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    case.loaded_bytes[ledger_name(os.fsdecode(name))] = path.read_bytes()
    folder = case.load(url, landing)
    case.expect([result.loaded for result in folder.results] == [1], "the BOM-prefixed event was not loaded")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the mostly-bad file")
    args = parser.parse_args()

    cases: dict[str, Callable[[str, Path, Case], None]] = {
        "invalid UTF-8": invalid_utf8,
        "NUL bytes": nul_bytes,
        "a 10 MB line": long_line,
        f"{args.lines:,} mostly bad lines": mostly_bad(args.lines),
        "symlinks out of the folder": symlinks_out,
        "truncated, then completed": truncated_then_completed,
        "same name, new content": same_name_new_content,
        "non-UTF-8 name, BOM, CRLF": odd_name_and_bom,
    }
    settings = Settings.from_env()
    server_url = resolve_url(settings.database_url, settings.pgdata)
    failures: list[str] = []
    with scratch_database(server_url, "teamu_bench_faults") as url, tempfile.TemporaryDirectory() as scratch:
        schema.apply(url, "raw_mixpanel")
        print(
            f"{'case':<34} {'read':>9} {'loaded':>8} {'dups':>8} {'quarant.':>9} {'refused':>7} {'failed':>6}  seconds"
        )
        for index, (name, run) in enumerate(cases.items()):
            landing = Path(scratch) / f"case-{index}" / "landing"
            landing.mkdir(parents=True)
            case = Case(name)
            run(url, landing, case)
            lines_read, loaded, duplicates, quarantined = account(url, case)
            refused = sum(len(folder.refused) for folder in case.loads)
            failed = sum(len(folder.failed) for folder in case.loads)
            print(
                f"{name:<34} {lines_read:>9,} {loaded:>8,} {duplicates:>8,} {quarantined:>9,} {refused:>7} "
                f"{failed:>6}  {case.seconds:7.2f}" + ("" if not case.failures else "  FAILED")
            )
            failures += [f"{name}: {failure}" for failure in case.failures]
    if failures:
        print(f"faults: {len(cases)} cases, {len(failures)} failures:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"faults: {len(cases)} cases, all lines accounted for")


if __name__ == "__main__":
    main()
