"""Live Mixpanel raw export through mixpanel-utils into the landing folder, where the loader picks it up;
ingest_landing_folder does both, as the mixpanel/events asset runs them.

mixpanel-utils builds the export URL as `<client.raw_api>/2.0/export`; raw_api is a plain attribute set from
`residency` in the constructor, so another server (an EU/IN residency host, a proxy, the test fake) is reached
by setting that attribute, without touching the library's code paths.

Secrets: the library logs request headers (the Basic credentials) at DEBUG, so its logger is held at WARNING
for the duration of the call; errors raised here name the host, dates and HTTP status, never the secret.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path

from mixpanel_utils import MixpanelUtils

from teamu_assets.contract import TEAMU_EVENTS
from teamu_assets.db.connection import connect
from teamu_assets.ingest.loader import FolderLoad, LoadResult, load_landing_folder
from teamu_assets.settings import MixpanelCredentials

_COPY_BUFFER_BYTES = 1 << 20
# A day's live export lands as mixpanel-live-<YYYY-MM-DD>.jsonl, and once the day has settled, again as
# mixpanel-live-<YYYY-MM-DD>-settled.jsonl.
_LIVE_FILE = re.compile(r"^mixpanel-live-(\d{4}-\d{2}-\d{2})(-settled)?\.jsonl$")
# How far back a run fills the exports no run made (Dagster down, Mixpanel out all day): the days since the first
# live export, within this many days before today (before the day that settles today, for the settled exports).
CATCH_UP_DAYS = 7
# Mixpanel's /track, the endpoint of its client SDKs, still ingests an event up to 5 days after the event's time
# (an app offline flushes its queue when it is back), and the export serves events by their time: events that
# reach Mixpanel after their day's first export are in no file. The day is exported once more when that can no
# longer happen, 6 days on; the loader counts the events the first export already held as duplicates ($insert_id).
SETTLE_DAYS = 5
_COUNTS = ("lines_read", "loaded", "duplicates", "quarantined")


class MixpanelExportError(RuntimeError):
    """The export API could not be read; the message never holds the service account secret."""


class _ErrorCollector(logging.Handler):
    """mixpanel-utils reports HTTP failures only through its logger (and then returns None): keep them."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def export_live(
    credentials: MixpanelCredentials,
    from_date: date,
    to_date: date,
    out_path: Path,
    *,
    api_base: str | None = None,
    events: Sequence[str] | None = TEAMU_EVENTS,
) -> Path:
    """Write Mixpanel's raw export of [from_date, to_date] (inclusive, UTC) as JSON lines to out_path.

    api_base is the export server, e.g. "https://data-eu.mixpanel.com" (default: Mixpanel's US server);
    events limits the export to those event names (None: every event). The file appears under its final name
    only when complete, so a landing-folder scan never loads half an export (an answer cut short is an error,
    and the day is exported again by the next run); an existing file is never overwritten (a landed export is
    immutable).
    """
    if out_path.suffix != ".jsonl":
        raise ValueError(f"export file {out_path} must end in .jsonl, the landing folder's pattern")
    if to_date < from_date:
        raise ValueError(f"to_date {to_date} is before from_date {from_date}")
    if out_path.exists():
        raise FileExistsError(f"export file {out_path} already exists; landed exports are never overwritten")
    client = MixpanelUtils(
        credentials.service_account_secret,
        service_account_username=credentials.service_account_username,
        project_id=credentials.project_id,
        max_retries=3,
    )
    if api_base is not None:
        client.raw_api = api_base.rstrip("/") + "/api"
    params = {"from_date": from_date.isoformat(), "to_date": to_date.isoformat()}
    if events is not None:
        params["event"] = json.dumps(list(events))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = out_path.with_name(out_path.name + ".partial")
    library_logger = MixpanelUtils.LOGGER
    previous_level = library_logger.level
    collector = _ErrorCollector()
    library_logger.setLevel(logging.WARNING)
    library_logger.addHandler(collector)
    try:
        # The library's own export_events copies the answer the same way, but can't tell a complete answer from
        # one cut short: http.client ends a read at the connection's end without an error when fewer bytes came
        # than Content-Length promised (a chunked answer cut short does raise IncompleteRead), and the bytes it
        # still expected stay in the response's `length`.
        response = client.query_export(params, raw_stream=True)
        if response is None:  # the library logged why and gave up
            raise MixpanelExportError("no answer")
        with response, partial_path.open("wb") as out:
            shutil.copyfileobj(response, out, _COPY_BUFFER_BYTES)
            missing = getattr(response, "length", None)
        if missing:
            raise http.client.IncompleteRead(b"", missing)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the library raises a bare BaseException once its retries run out
        partial_path.unlink(missing_ok=True)
        detail = "; ".join(collector.messages) or f"{type(exc).__name__}: {exc}"
        raise MixpanelExportError(
            f"Mixpanel export {from_date}..{to_date} of project {credentials.project_id} from "
            f"{client.raw_api} failed: {detail}"
        ) from None
    finally:
        library_logger.removeHandler(collector)
        library_logger.setLevel(previous_level)
    partial_path.replace(out_path)
    return out_path


@dataclass(frozen=True)
class LandingIngest:
    """What ingest_landing_folder did: the live export's error (None: it ran, or had nothing to do) and the
    folder load. problems: everything that needs an operator, the export's error first."""

    export_error: str | None
    folder: FolderLoad

    @cached_property
    def read(self) -> list[LoadResult]:
        """The files this call read lines of (a file unchanged since its last load is left out)."""
        return [result for result in self.folder.results if not result.skipped]

    @cached_property
    def totals(self) -> dict[str, int]:
        """lines_read, loaded, duplicates and quarantined summed over the files read."""
        return {count: sum(getattr(result, count) for result in self.read) for count in _COUNTS}

    @property
    def reconciles(self) -> bool:
        """Every line read is accounted for: loaded, a duplicate or quarantined."""
        totals = self.totals
        return totals["lines_read"] == totals["loaded"] + totals["duplicates"] + totals["quarantined"]

    @property
    def problems(self) -> list[str]:
        errors = [] if self.export_error is None else [self.export_error]
        return errors + [problem.message for problem in self.folder.failed + self.folder.refused]

    def files_markdown(self) -> str:
        """The files read as a markdown table: where each was read from and what became of its lines."""
        return "| file | from line | read | loaded | duplicates | quarantined |\n|---|---|---|---|---|---|\n" + "".join(
            f"| {r.source_file} | {r.first_line} | {r.lines_read} | {r.loaded} | {r.duplicates} | {r.quarantined} |\n"
            for r in self.read
        )


@dataclass(frozen=True)
class LiveExport:
    """One export of one day (UTC): its first, or the one made once the day has settled (SETTLE_DAYS)."""

    day: date
    settled: bool = False

    @property
    def file_name(self) -> str:
        return f"mixpanel-live-{self.day.isoformat()}{'-settled' if self.settled else ''}.jsonl"


def owed_live_exports(exported: Iterable[str], today: date) -> list[LiveExport]:
    """The exports the live export owes, oldest day first, given `exported` (the names of the live files landed
    or loaded). A first export of yesterday and of each day of the CATCH_UP_DAYS before today that no file holds,
    from the first day ever exported on (a first export starts with yesterday, not a week back); one of a day that
    has already settled (SETTLE_DAYS passed since its end) is its settled export. And the settled export of each
    day exported before it settled, within CATCH_UP_DAYS of the day that settles today."""
    names = set(exported)
    matches = [match for name in names if (match := _LIVE_FILE.match(name))]
    held = {date.fromisoformat(match[1]) for match in matches}
    settled = {date.fromisoformat(match[1]) for match in matches if match[2]}
    yesterday = today - timedelta(days=1)
    if not held:
        return [LiveExport(yesterday)]
    settles_today = yesterday - timedelta(days=SETTLE_DAYS)
    window = [yesterday - timedelta(days=back) for back in reversed(range(CATCH_UP_DAYS))]
    owed = [LiveExport(day, settled=day <= settles_today) for day in window if day >= min(held) and day not in held]
    settling = [settles_today - timedelta(days=back) for back in reversed(range(CATCH_UP_DAYS))]
    owed += [LiveExport(day, settled=True) for day in settling if day in held and day not in settled]
    return sorted(owed, key=lambda export: export.day)


def _exported_names(url: str, landing_dir: Path) -> set[str]:
    """The live files in the landing folder, and those the ledger loaded (a folder may be cleared after loads)."""
    with connect(url) as conn:
        loaded = {
            name
            for (name,) in conn.execute(
                "select source_file from raw_mixpanel.loaded_files where source_file like 'mixpanel-live-%'"
            )
        }
    return loaded | {path.name for path in landing_dir.glob("mixpanel-live-*.jsonl")}


def ingest_landing_folder(
    url: str,
    landing_dir: Path,
    credentials: MixpanelCredentials | None,
    log: logging.Logger,
    *,
    api_base: str | None = None,
) -> LandingIngest:
    """With credentials, each live export it owes (owed_live_exports: yesterday (UTC), the days of the last week
    no run exported, and the days that have settled since their first export) into the landing folder as
    mixpanel-live-<date>.jsonl (mixpanel-live-<date>-settled.jsonl); then every pending
    file of the folder loaded (load_landing_folder). api_base: the export server (export_live).

    Nothing here raises for one bad file or a Mixpanel outage: those are logged and returned in problems, so
    the other files, and everything downstream of them, still load; the caller reports them. An export that
    fails stops the days after it, which the next run exports."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    export_error = None
    if credentials is not None:
        for owed in owed_live_exports(_exported_names(url, landing_dir), datetime.now(UTC).date()):
            target = landing_dir / owed.file_name
            try:
                export_live(credentials, owed.day, owed.day, target, api_base=api_base)
            except MixpanelExportError as error:
                log.error(str(error))
                export_error = str(error)
                break
            log.info(f"exported {owed.day} from Mixpanel into {target.name}")
    ingest = LandingIngest(export_error, load_landing_folder(url, landing_dir))
    for problem in ingest.folder.refused:
        log.warning(problem.message)
    for problem in ingest.folder.failed:
        log.error(problem.message)
    if ingest.totals["quarantined"]:
        log.warning(f"{ingest.totals['quarantined']} lines quarantined in raw_mixpanel.events_quarantine")
    return ingest
