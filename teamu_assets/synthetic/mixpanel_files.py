"""The dataset's Mixpanel events as raw export files in a landing folder, one JSON-lines file a UTC day, with
bad lines injected on request so the ingester's validation, deduplication and quarantine have work to do."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from teamu_assets.contract import POST_VIEWED
from teamu_assets.synthetic.generator import SyntheticDataset
from teamu_assets.synthetic.truth import SECONDS_PER_DAY

FILE_PREFIX = "mixpanel-export-"
FILE_SUFFIX = ".jsonl"
# The kinds of bad line, in the order the injected count is spread over them.
MALFORMED_JSON = "malformed_json"
MISSING_DISTINCT_ID = "missing_distinct_id"
UNKNOWN_POST_ID = "unknown_post_id"
DUPLICATE_INSERT_ID = "duplicate_insert_id"
OUT_OF_ORDER = "out_of_order"
BAD_KINDS = (MALFORMED_JSON, MISSING_DISTINCT_ID, UNKNOWN_POST_ID, DUPLICATE_INSERT_ID, OUT_OF_ORDER)


@dataclass(frozen=True)
class MixpanelFilesSummary:
    """What write_mixpanel_files wrote, for tests that reconcile the ingester against it.

    Every dataset event is written exactly once. Injected lines:
    - malformed_json: an extra line that is a truncated event (not valid JSON);
    - missing_distinct_id: an extra copy of an event with a fresh $insert_id and no distinct_id;
    - unknown_post_id: an extra copy of a "Post Viewed" with a fresh $insert_id and a post_id no post has;
    - duplicate_insert_id: an extra line identical to the line before it;
    - out_of_order: a dataset event moved to the end of its day's file, after later events (no extra line).
    """

    files: tuple[Path, ...]
    lines: int
    events: int  # dataset events written (each once)
    injected: dict[str, int]


def export_file_name(day: dt.date) -> str:
    return f"{FILE_PREFIX}{day.isoformat()}{FILE_SUFFIX}"


def _line(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def write_mixpanel_files(
    dataset: SyntheticDataset, landing_dir: Path, *, bad_fraction: float = 0.0, seed: int = 0
) -> MixpanelFilesSummary:
    """Write one file per day of the dataset's events (events in time order), each atomically (a hidden temp
    file renamed into place), so a loader watching the folder never reads half a file. With bad_fraction > 0,
    round(bad_fraction * events) bad lines are spread evenly over BAD_KINDS (see MixpanelFilesSummary)."""
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be within [0, 1], got {bad_fraction}")
    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    events = dataset.events
    rng = np.random.default_rng(seed)
    times = np.array([event["properties"]["time"] for event in events], dtype=np.int64)
    days = times // SECONDS_PER_DAY
    n_bad = round(bad_fraction * len(events))
    per_kind, remainder = divmod(n_bad, len(BAD_KINDS))
    wanted = {kind: per_kind + (i < remainder) for i, kind in enumerate(BAD_KINDS)}

    # Each injected line comes from its own source event; sources never overlap.
    day_last_time = np.full(days.max(initial=0) + 1, np.iinfo(np.int64).min)
    np.maximum.at(day_last_time, days, times)
    is_view = np.array([event["event"] == POST_VIEWED for event in events], dtype=bool)
    eligible = {
        MALFORMED_JSON: np.ones(len(events), dtype=bool),
        MISSING_DISTINCT_ID: np.ones(len(events), dtype=bool),
        UNKNOWN_POST_ID: is_view,
        DUPLICATE_INSERT_ID: np.ones(len(events), dtype=bool),
        # Moved after an event of the same day with a later time, so it really is out of order.
        OUT_OF_ORDER: times < day_last_time[days],
    }
    taken = np.zeros(len(events), dtype=bool)
    sources: dict[str, set[int]] = {}
    for kind in BAD_KINDS:
        candidates = rng.permutation(np.flatnonzero(eligible[kind] & ~taken))[: wanted[kind]]
        taken[candidates] = True
        sources[kind] = set(candidates.tolist())
    fresh_hex = rng.bytes(16 * (len(sources[MISSING_DISTINCT_ID]) + len(sources[UNKNOWN_POST_ID]))).hex()
    fresh_insert_ids = iter(fresh_hex[offset : offset + 32] for offset in range(0, len(fresh_hex), 32))
    unknown_post_id = int(dataset.posts["post_id"].max()) + 1 if len(dataset.posts) else 1

    lines_by_day: dict[int, list[str]] = {}
    moved_by_day: dict[int, list[str]] = {}
    for index, (event, day) in enumerate(zip(events, days.tolist(), strict=True)):
        line = _line(event)
        if index in sources[OUT_OF_ORDER]:
            moved_by_day.setdefault(day, []).append(line)
            continue
        lines = lines_by_day.setdefault(day, [])
        lines.append(line)
        if index in sources[MALFORMED_JSON]:
            lines.append(line[: len(line) // 2])
        elif index in sources[MISSING_DISTINCT_ID]:
            properties = {k: v for k, v in event["properties"].items() if k != "distinct_id"}
            properties["$insert_id"] = next(fresh_insert_ids)
            lines.append(_line({"event": event["event"], "properties": properties}))
        elif index in sources[UNKNOWN_POST_ID]:
            properties = dict(event["properties"], post_id=unknown_post_id)
            properties["$insert_id"] = next(fresh_insert_ids)
            lines.append(_line({"event": event["event"], "properties": properties}))
            unknown_post_id += 1
        elif index in sources[DUPLICATE_INSERT_ID]:
            lines.append(line)

    files = []
    total_lines = 0
    for day in sorted(lines_by_day.keys() | moved_by_day.keys()):
        lines = lines_by_day.get(day, []) + moved_by_day.get(day, [])
        path = landing_dir / export_file_name(dt.date(1970, 1, 1) + dt.timedelta(days=day))
        _write_atomically(path, "".join(f"{line}\n" for line in lines))
        files.append(path)
        total_lines += len(lines)
    return MixpanelFilesSummary(
        files=tuple(files),
        lines=total_lines,
        events=len(events),
        injected={kind: len(sources[kind]) for kind in BAD_KINDS},
    )


def _write_atomically(path: Path, content: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
