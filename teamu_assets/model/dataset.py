"""Training data: a temporal split of the interactions with leakage-free per-example history, as Parquet.

Every example is one interaction (user, post, kind, time). Its history is the user's engaged post ids strictly
before that time, newest first, and its activity counts are the user's counts strictly before that time: the
query tower sees what a live system would have seen at that moment, never the future.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from teamu_assets.contract import HISTORY_LENGTH
from teamu_assets.model.features import (
    ACTIVITY_COUNT_COLUMNS,
    FEATURES_AS_OF_COLUMN,
    HISTORY_PADDING_ID,
    PostFeatureTable,
    UserFeatureTable,
    as_list,
    epoch_days,
)

if TYPE_CHECKING:
    import tensorflow as tf

INTERACTION_KINDS: tuple[str, ...] = ("view", "upvote", "comment")
SPLITS: tuple[str, ...] = ("train", "validation", "evaluation")
MANIFEST_FILE = "manifest.json"
_EXAMPLE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("post_id", pa.int64()),
        ("kind", pa.string()),
        ("occurred_at", pa.timestamp("ns", tz="UTC")),
        ("history", pa.list_(pa.int64())),
        *[(column, pa.int64()) for column in ACTIVITY_COUNT_COLUMNS],
        *[(column, pa.int64()) for column in ("post_view_count", "post_vote_count", "post_comment_count")],
        ("first_engagement", pa.bool_()),
    ]
)
# The post's view, upvote and comment counts (by everyone) strictly before the example: its popularity at that
# moment, and whether it had comments and views yet (PostFeatureTable.inputs).
POST_COUNT_COLUMNS: tuple[str, ...] = ("post_view_count", "post_vote_count", "post_comment_count")
POST_COUNT_KINDS: tuple[str, ...] = ("view", "upvote", "comment")


@dataclass(frozen=True)
class TrainingData:
    """Examples per split; columns: user_id, post_id, kind, occurred_at, history, *activity counts."""

    train: pd.DataFrame
    validation: pd.DataFrame
    evaluation: pd.DataFrame
    cutoff: pd.Timestamp
    validation_start: pd.Timestamp | None
    history_length: int

    def split(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "validation": self.validation, "evaluation": self.evaluation}[name]

    def positives_per_kind(self) -> dict[str, dict[str, int]]:
        return {
            name: {kind: int((self.split(name)["kind"] == kind).sum()) for kind in INTERACTION_KINDS} for name in SPLITS
        }


@dataclass(frozen=True)
class DatasetManifest:
    """What write_dataset wrote: the versioned artifact's metadata (also manifest.json next to the files)."""

    directory: str
    files: dict[str, str]
    rows: dict[str, int]
    users: int
    posts: int
    cutoff: str
    validation_start: str | None
    history_length: int
    positives_per_kind: dict[str, dict[str, int]]
    row_group_rows: int = field(default=8192)

    def path(self, split: str) -> Path:
        return Path(self.directory) / self.files[split]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _clean_interactions(
    interactions: pd.DataFrame, user_features: pd.DataFrame, post_features: pd.DataFrame
) -> pd.DataFrame:
    known = (
        interactions["user_id"].isin(user_features["user_id"])
        & interactions["post_id"].isin(post_features["post_id"])
        & interactions["kind"].isin(INTERACTION_KINDS)
    )
    frame = interactions.loc[known, ["user_id", "post_id", "kind", "occurred_at"]].copy()
    frame["user_id"] = frame["user_id"].astype(np.int64)
    frame["post_id"] = frame["post_id"].astype(np.int64)
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    # A total order makes histories and the split reproducible. Ties at one instant go by post id, so that the
    # newest-first history puts the higher id first, as marts.user_features does (macros/user_features.sql).
    frame = frame.sort_values(["user_id", "occurred_at", "post_id", "kind"], kind="stable").reset_index(drop=True)
    # The row that first engages the user with the post: a history gains a post there (_histories_before).
    frame["first_engagement"] = ~frame.duplicated(["user_id", "post_id"], keep="first")
    return frame


# Users whose histories _histories_before replays together: its working arrays hold this many x history_length.
_HISTORY_USER_BLOCK = 8192
# Rows per chunk of the history column: a list array's int32 offsets overflow past 2**31 post ids in one chunk.
_HISTORY_CHUNK_ROWS = 1 << 20


def _exclusive_cumsum(flags: np.ndarray) -> np.ndarray:
    """[n + 1]: element i is the sum of flags[:i]."""
    total = np.zeros(len(flags) + 1, dtype=np.int64)
    np.cumsum(flags, out=total[1:])
    return total


def _run_starts(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by keys: whether each row begins a run of equal keys, and the row its run begins at."""
    starts = np.arange(len(keys[0])) == 0
    for key in keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts, np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))


def _histories_before(
    frame: pd.DataFrame, history_length: int, order: np.ndarray
) -> tuple[pd.arrays.ArrowExtensionArray, np.ndarray]:
    """For each row of a (user, time)-sorted frame with its first_engagement column: distinct post ids engaged
    strictly before, newest first, and the per-kind counts strictly before. Rows at the same instant see the same
    state. The histories come in the order of `order` (the examples' order: the frame's positions, each once), the
    counts in the frame's. Rows left out of `order` are replayed but get no history; a row in it must come first at
    its instant, or have the instant's first row in it too (the others copy that row's record).

    The histories are an Arrow list column over one flat int64 array, written in place in the examples' order:
    8 bytes a post id, where a Python list of ints per row took about 40 (and most of the dataset's memory)."""
    rows = len(frame)
    users = frame["user_id"].to_numpy()
    user_starts, user_start = _run_starts(users)
    _, instant_start = _run_starts(users, frame["occurred_at"].to_numpy(dtype="datetime64[ns]"))
    counts = np.empty((rows, len(INTERACTION_KINDS)), dtype=np.int64)
    for column, kind in enumerate(INTERACTION_KINDS):
        before = _exclusive_cumsum((frame["kind"] == kind).to_numpy())
        counts[:, column] = before[instant_start] - before[user_start]
    # A row's history holds the user's distinct posts before its instant, at most history_length of them.
    distinct = _exclusive_cumsum(frame["first_engagement"].to_numpy())
    lengths = np.zeros(rows, dtype=np.int64)
    lengths[order] = np.minimum(distinct[instant_start] - distinct[user_start], history_length)[order]
    del distinct, user_start
    offsets = _exclusive_cumsum(lengths[order])
    starts = np.zeros(rows, dtype=np.int64)  # where each row's history goes in values (rows with none: unused)
    starts[order] = offsets[:-1]
    values = np.empty(offsets[-1], dtype=np.int64)
    if history_length > 0:
        firsts = np.flatnonzero(user_starts)
        row_counts = np.diff(np.append(firsts, rows))
        posts = frame["post_id"].to_numpy(np.int64)
        _replay_recent_posts(posts, firsts, row_counts, instant_start, history_length, starts, lengths, values)
    chunks = []
    for start in range(0, len(order), _HISTORY_CHUNK_ROWS):
        end = min(start + _HISTORY_CHUNK_ROWS, len(order))
        chunk_offsets = (offsets[start : end + 1] - offsets[start]).astype(np.int32)
        chunks.append(pa.ListArray.from_arrays(chunk_offsets, values[offsets[start] : offsets[end]]))
    return pd.arrays.ArrowExtensionArray(pa.chunked_array(chunks, type=pa.list_(pa.int64()))), counts


def _replay_recent_posts(
    posts: np.ndarray,
    firsts: np.ndarray,
    row_counts: np.ndarray,
    instant_start: np.ndarray,
    history_length: int,
    starts: np.ndarray,
    lengths: np.ndarray,
    values: np.ndarray,
) -> None:
    """Writes each row's history into values[starts[row]:starts[row] + lengths[row]]: every user's distinct recent
    posts (newest first) are replayed row by row, a block of users at a time. The work is rows x history length
    whatever the data (a user who re-engages with the same posts again and again included), the working memory
    a block's users x history length."""
    positions = np.arange(history_length)
    longest_first = np.argsort(-row_counts, kind="stable")
    firsts, row_counts = firsts[longest_first], row_counts[longest_first]
    for block in range(0, len(firsts), _HISTORY_USER_BLOCK):
        block_firsts = firsts[block : block + _HISTORY_USER_BLOCK]
        block_counts = row_counts[block : block + _HISTORY_USER_BLOCK]
        recent = np.zeros((len(block_firsts), history_length), dtype=np.int64)
        filled = np.zeros(len(block_firsts), dtype=np.int64)  # the first `filled` entries of a user's row are valid
        for step in range(int(block_counts[0])):
            active = int(np.count_nonzero(block_counts > step))  # longest first: the active users are a prefix
            at = block_firsts[:active] + step
            state, known = recent[:active], filled[:active]
            targets = starts[at, None] + positions
            written = positions < lengths[at, None]
            # The first row of an instant records the state; the others at that instant copy its record.
            opening = instant_start[at] == at
            values[targets[opening][written[opening]]] = state[opening][written[opening]]
            sources = starts[instant_start[at[~opening]], None] + positions
            values[targets[~opening][written[~opening]]] = values[sources[written[~opening]]]
            # Then the row's post moves to the front: the entries before its old place (all, if new) shift back.
            post = posts[at]
            match = (state == post[:, None]) & (positions < known[:, None])
            seen = match.any(axis=1)
            place = np.where(seen, match.argmax(axis=1), history_length - 1)
            shifted = np.empty_like(state)
            shifted[:, 0] = post
            shifted[:, 1:] = state[:, :-1]
            recent[:active] = np.where(positions > place[:, None], state, shifted)
            filled[:active] = np.minimum(known + ~seen, history_length)


def _post_counts_before(frame: pd.DataFrame) -> np.ndarray:
    """[n, 3] views, upvotes and comments of each row's post strictly before the row's time (same-instant rows
    excluded)."""
    counts = np.zeros((len(frame), len(POST_COUNT_KINDS)), dtype=np.int64)
    if len(frame) == 0:
        return counts
    times = frame["occurred_at"].to_numpy(dtype="datetime64[ns]")
    posts = frame["post_id"].to_numpy()
    order = np.lexsort((times, posts))
    _, post_start = _run_starts(posts[order])
    _, instant_start = _run_starts(posts[order], times[order])
    for column, kind in enumerate(POST_COUNT_KINDS):
        before = _exclusive_cumsum((frame["kind"] == kind).to_numpy()[order])
        counts[order, column] = before[instant_start] - before[post_start]
    return counts


# A user needs this many first engagements before one of them is held out for validation.
MIN_ENGAGEMENTS_FOR_VALIDATION = 3


def _last_engagements_per_user(frame: pd.DataFrame, fraction: float) -> pd.Series:
    """Leave-last-out: True on each user's last `fraction` of first engagements (at least one, for users with
    MIN_ENGAGEMENTS_FOR_VALIDATION or more), the way recommendations are judged: by what a user turns to next."""
    firsts = frame.loc[frame["first_engagement"]]
    if fraction == 0 or firsts.empty:
        return pd.Series(False, index=frame.index)
    by_user = firsts.groupby("user_id", sort=False)
    counts = by_user["post_id"].transform("size").to_numpy()
    # frame is sorted by user and time, so the cumulative count is each engagement's place in the user's order.
    position = by_user.cumcount().to_numpy()
    held = np.where(counts >= MIN_ENGAGEMENTS_FOR_VALIDATION, np.maximum(1, np.floor(fraction * counts + 1e-9)), 0)
    return pd.Series(position >= counts - held, index=firsts.index).reindex(frame.index, fill_value=False)


def _rows_of_pairs(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.Series:
    """True on the rows of frame whose (user_id, post_id) is one of pairs."""
    marked = frame[["user_id", "post_id"]].merge(pairs.assign(_held=True), on=["user_id", "post_id"], how="left")
    return pd.Series(marked["_held"].notna().to_numpy(), index=frame.index)


def build_training_examples(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame,
    post_features: pd.DataFrame,
    cutoff: pd.Timestamp,
    *,
    history_length: int = HISTORY_LENGTH,
    validation_fraction: float = 0.1,
) -> TrainingData:
    """Temporal split: train before `cutoff`, evaluation from it on. Validation is each user's last
    `validation_fraction` of first engagements before the cutoff (leave-last-out, as the product is judged);
    training keeps everything else, other users' later activity included."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    cutoff = pd.Timestamp(cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    frame = _clean_interactions(interactions, user_features, post_features)

    # Serving never recommends a post the user already engaged with, so an example whose post is already in the
    # user's past (the upvote after the view, the second comment) would teach the towers to score the history
    # highest: the one thing never shown. Training and validation read only first engagements (the frame's
    # first_engagement rows); every row still counts in histories, activity and popularity.
    before_cutoff = frame["occurred_at"] < cutoff
    held = _last_engagements_per_user(
        frame.loc[before_cutoff, ["user_id", "post_id", "first_engagement"]], validation_fraction
    )
    # Every row of a held-out (user, post) pair goes to validation (the upvote and the comment with the view), or
    # the post's popularity in training would count the very engagement validation asks the model to predict.
    held_pairs = frame.loc[held[held].index, ["user_id", "post_id"]].drop_duplicates()
    in_validation = before_cutoff & _rows_of_pairs(frame, held_pairs)
    validation_start = frame.loc[in_validation, "occurred_at"].min() if in_validation.any() else None

    # Each split by time, user, kind and post: the frame is sorted by user, time, kind and post, so a stable sort
    # of its positions by time and user is enough. The histories, most of the examples' memory, are written once,
    # straight in that order, and each split's rows are copied once.
    times, users = frame["occurred_at"].to_numpy(dtype="datetime64[ns]"), frame["user_id"].to_numpy()
    split_rows = {"train": before_cutoff & ~in_validation, "validation": in_validation, "evaluation": ~before_cutoff}
    orders = {}
    for name, rows in split_rows.items():
        positions = np.flatnonzero(rows.to_numpy())
        orders[name] = positions[np.lexsort((users[positions], times[positions]))]
    del times, users
    histories, counts = _histories_before(frame, history_length, np.concatenate(list(orders.values())))
    for column_index, column in enumerate(ACTIVITY_COUNT_COLUMNS):
        frame[column] = counts[:, column_index]
    del counts
    post_counts = _post_counts_before(frame)
    for column_index, column in enumerate(POST_COUNT_COLUMNS):
        frame[column] = post_counts[:, column_index]
    del post_counts
    # The splits take the frame's columns one at a time, each dropped once taken: the frame and the splits are
    # never both whole in memory. The histories are sliced, not copied.
    ends = np.cumsum([len(order) for order in orders.values()])
    split_columns = {
        name: {"history": histories[end - len(order) : end]}
        for (name, order), end in zip(orders.items(), ends, strict=True)
    }
    for column in _EXAMPLE_SCHEMA.names:
        if column in frame:
            values = frame.pop(column).array
            for name, order in orders.items():
                split_columns[name][column] = values.take(order)
            del values
    examples = {
        name: pd.DataFrame({column: columns[column] for column in _EXAMPLE_SCHEMA.names}, copy=False)
        for name, columns in split_columns.items()
    }
    return TrainingData(**examples, cutoff=cutoff, validation_start=validation_start, history_length=history_length)


def user_features_as_of(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    history_length: int = HISTORY_LENGTH,
) -> pd.DataFrame:
    """The user mart as it would have read at `as_of`: recent_post_ids and activity counts from interactions
    strictly before it. For evaluating at a cutoff. The same history as a training example's: each user gets a
    probe row at `as_of`, and _histories_before gives the probes' histories (only theirs: memory grows with the
    users, not with the interactions). The profile columns are kept as given (profile_as_of trims the titles)."""
    frame = interactions.loc[pd.to_datetime(interactions["occurred_at"], utc=True) < as_of]
    frame = _clean_interactions(frame, user_features, pd.DataFrame({"post_id": frame["post_id"].unique()}))
    user_ids = user_features["user_id"].to_numpy(np.int64)
    # A probe sorts after its user's rows (it is later than all of them) and is no interaction of any kind.
    probes = pd.DataFrame(
        {
            "user_id": user_ids,
            "post_id": np.int64(HISTORY_PADDING_ID),
            "kind": "",
            "occurred_at": pd.Timestamp(as_of).tz_convert("UTC"),
            "first_engagement": False,
        }
    )
    frame = pd.concat([frame, probes], ignore_index=True).sort_values(["user_id", "occurred_at"], kind="stable")
    frame = frame.reset_index(drop=True)
    # Each probe is alone at its instant, so it may be asked for alone; in user_ids' order.
    at_probe = np.flatnonzero((frame["kind"] == "").to_numpy())
    rows = pd.Series(at_probe, index=frame["user_id"].to_numpy()[at_probe]).loc[user_ids].to_numpy()
    histories, counts = _histories_before(frame, history_length, rows)
    result = user_features.copy()
    result["recent_post_ids"] = [[int(post) for post in history] for history in histories.to_numpy()]
    for column_index, column in enumerate(ACTIVITY_COUNT_COLUMNS):
        result[column] = counts[rows, column_index]
    return result


def profile_as_of(
    user_features: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    posts: pd.DataFrame | None = None,
    projects: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The user mart's profile titles as they read at `as_of`: with `posts` (user_id, title, created_at: the post
    mart), created_post_titles keeps the titles of the posts created before it; with `projects` (user_id, title,
    created_at: features.read_projects), project_titles those of the projects. The mart lists each user's titles by
    creation time, so those are its first ones. A title written later tells the user tower what the user went on
    to post or start, which a model judged at `as_of` must not know."""
    result = user_features.copy()
    for column, frame in (("created_post_titles", posts), ("project_titles", projects)):
        if frame is None:
            continue
        earlier = frame.loc[(pd.to_datetime(frame["created_at"], utc=True) < as_of) & frame["title"].notna()]
        written = result["user_id"].map(earlier.groupby("user_id").size()).fillna(0).astype(int)
        result[column] = [as_list(titles)[:count] for titles, count in zip(result[column], written, strict=True)]
    return result


def post_features_as_of(
    post_counts: pd.DataFrame,
    post_features: pd.DataFrame,
    *,
    as_of: pd.Timestamp | None = None,
    activity: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The post mart with popularity (view_count, vote_count) replaced by `post_counts` (post_id, view,
    upvote), e.g. counts from before a cutoff, so training and evaluation never see later popularity. With
    `as_of` (the cutoff), post ages are measured at that moment too (a features_as_of column records it), and a
    post created at or after it has no comments and no view time yet (the mart has gathered them since: they
    would mark the new posts people went on to engage with); without, ages are measured when the frame is
    embedded (now). With `activity` (features.read_post_activity_before at the same moment), every post's
    comments and view time are those from before it (with_activity)."""
    result = post_features if activity is None else with_activity(post_features, activity)
    result = result.copy()
    if as_of is not None:
        as_of = pd.Timestamp(as_of)
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
        result[FEATURES_AS_OF_COLUMN] = as_of
        later = (pd.to_datetime(result["created_at"], utc=True) >= as_of).to_numpy()
        if "comments" in result:
            result["comments"] = [
                [] if new else comments for new, comments in zip(later, result["comments"], strict=True)
            ]
        if "avg_time_viewed_seconds" in result:
            result["avg_time_viewed_seconds"] = result["avg_time_viewed_seconds"].where(~later)
    counts = post_counts.set_index("post_id")
    result["view_count"] = result["post_id"].map(counts["view"]).fillna(0).astype(np.int64)
    result["vote_count"] = result["post_id"].map(counts["upvote"]).fillna(0).astype(np.int64)
    return result


def with_activity(post_features: pd.DataFrame, activity: pd.DataFrame) -> pd.DataFrame:
    """The post mart with its comments and avg_time_viewed_seconds taken from `activity` (post_id, comments,
    avg_time_viewed_seconds: features.read_post_activity_before), a post it lacks having none: the mart as it
    read at that moment. Comments a post gathered later tell which older posts people went on to engage with."""
    result = post_features.copy()
    by_post = activity.set_index("post_id")
    comments = result["post_id"].map(by_post["comments"])
    result["comments"] = [as_list(value) for value in comments]
    result["avg_time_viewed_seconds"] = result["post_id"].map(by_post["avg_time_viewed_seconds"]).astype(float)
    return result


# Rows written at a time by write_dataset (a whole number of row groups, so the files' row groups are those of one
# write): the examples are in Arrow without a copy, and only a chunk of them is copied (into the file's order).
_WRITE_CHUNK_ROWS = 1 << 15


def _write_rows(rows: pd.DataFrame, order: np.ndarray, path: Path, row_group_rows: int) -> None:
    """Writes rows.iloc[order] to Parquet, in the example schema."""
    table = pa.Table.from_pandas(rows, schema=_EXAMPLE_SCHEMA, preserve_index=False)
    # The pandas metadata of a history column of Python lists, as the files always had: the histories are Arrow
    # lists in memory, and readers of the files (pd.read_parquet) get what they got before.
    empty = rows.iloc[:0].astype({"history": object})
    schema = pa.Table.from_pandas(empty, schema=_EXAMPLE_SCHEMA, preserve_index=False).schema
    chunk_rows = row_group_rows * max(1, _WRITE_CHUNK_ROWS // row_group_rows)
    with pq.ParquetWriter(path, schema) as writer:
        # An empty split is still written once: an empty row group, as a single write gives.
        for start in range(0, max(len(order), 1), chunk_rows):
            chunk = table.take(order[start : start + chunk_rows])
            writer.write_table(chunk.replace_schema_metadata(schema.metadata), row_group_size=row_group_rows)


def _distinct(columns: Iterator[pd.Series]) -> int:
    return len(np.unique(np.concatenate([column.unique() for column in columns])))


def write_dataset(data: TrainingData, out_dir: Path, *, seed: int = 0, row_group_rows: int = 8192) -> DatasetManifest:
    """Writes train/validation/evaluation Parquet files and manifest.json. Training rows are written in a
    seeded random order so that streaming row groups with a small shuffle buffer gives well-mixed batches
    (in-batch negatives from one period only would teach recency, not taste)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name in SPLITS:
        rows = data.split(name)
        order = np.random.default_rng(seed).permutation(len(rows)) if name == "train" else np.arange(len(rows))
        files[name] = f"{name}.parquet"
        _write_rows(rows[_EXAMPLE_SCHEMA.names], order, out_dir / files[name], row_group_rows)
    manifest = DatasetManifest(
        directory=str(out_dir.resolve()),
        files=files,
        rows={name: len(data.split(name)) for name in SPLITS},
        users=_distinct(data.split(name)["user_id"] for name in SPLITS),
        posts=_distinct(data.split(name)["post_id"] for name in SPLITS),
        cutoff=data.cutoff.isoformat(),
        validation_start=None if data.validation_start is None else data.validation_start.isoformat(),
        history_length=data.history_length,
        positives_per_kind=data.positives_per_kind(),
        row_group_rows=row_group_rows,
    )
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


def read_manifest(dataset_dir: Path) -> DatasetManifest:
    """The manifest of a written dataset; its directory is where it lies now (the artifact may have moved)."""
    raw = json.loads((Path(dataset_dir) / MANIFEST_FILE).read_text())
    raw["directory"] = str(Path(dataset_dir).resolve())
    return DatasetManifest(**raw)


@dataclass(frozen=True)
class ExampleBatch:
    user_ids: np.ndarray
    post_ids: np.ndarray
    kinds: np.ndarray
    histories: np.ndarray  # [n, history_length] int64, padded with HISTORY_PADDING_ID
    activity_counts: np.ndarray  # [n, 3] float32, the user's counts before the example
    occurred_days: np.ndarray | None = None  # [n] float64 epoch days of the example
    post_counts: np.ndarray | None = None  # [n, 3] float32 post views, upvotes and comments before the example
    first_engagement: np.ndarray | None = None  # [n] bool: the user's first row with this post

    def __len__(self) -> int:
        return len(self.user_ids)


def _padded_histories(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = lists.offsets.to_numpy()
    values = lists.values.to_numpy(zero_copy_only=False)
    starts = offsets[:-1]
    lengths = np.minimum(np.diff(offsets), width)
    padded = np.full((len(lists), width), HISTORY_PADDING_ID, dtype=np.int64)
    positions = np.arange(width)
    valid = positions[None, :] < lengths[:, None]
    padded[valid] = values[(starts[:, None] + positions[None, :])[valid]]
    return padded


def _first_engagements(batch: pa.RecordBatch) -> pa.RecordBatch:
    if "first_engagement" not in batch.schema.names:
        return batch
    return batch.filter(batch.column("first_engagement"))


def iter_example_batches(
    paths: Sequence[Path],
    *,
    batch_rows: int = 4096,
    history_length: int = HISTORY_LENGTH,
    first_engagements_only: bool = False,
) -> Iterator[ExampleBatch]:
    """Streams examples from Parquet files a record batch at a time: memory is bounded by batch_rows. With
    first_engagements_only, only each user's first row with a post (what training and validation learn from)."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            if first_engagements_only:
                batch = _first_engagements(batch)
            yield ExampleBatch(
                user_ids=batch.column("user_id").to_numpy().astype(np.int64),
                post_ids=batch.column("post_id").to_numpy().astype(np.int64),
                kinds=np.asarray(batch.column("kind").to_pylist(), dtype=object),
                histories=_padded_histories(batch.column("history"), history_length),
                activity_counts=np.stack(
                    [batch.column(c).to_numpy().astype(np.float32) for c in ACTIVITY_COUNT_COLUMNS], axis=1
                ),
                occurred_days=epoch_days(batch.column("occurred_at").to_pandas()),
                post_counts=(
                    np.stack([batch.column(c).to_numpy().astype(np.float32) for c in POST_COUNT_COLUMNS], axis=1)
                    if all(c in batch.schema.names for c in POST_COUNT_COLUMNS)
                    else None
                ),
            )


def count_posts_by_kind(
    paths: Sequence[Path], *, batch_rows: int = 65536, first_engagements_only: bool = False
) -> pd.DataFrame:
    """Per post: rows of each kind and in total, streamed from example files (post_id, view, upvote, comment,
    total); with first_engagements_only, the training examples only. Memory grows with the number of posts."""
    totals: dict[tuple[int, str], int] = {}
    for path in paths:
        parquet = pq.ParquetFile(path)
        columns = ["post_id", "kind", *(["first_engagement"] if "first_engagement" in parquet.schema.names else [])]
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            if first_engagements_only:
                batch = _first_engagements(batch)
            counted = batch.to_pandas().groupby(["post_id", "kind"]).size()
            for key, count in counted.items():
                totals[key] = totals.get(key, 0) + int(count)
    frame = pd.Series(totals, dtype=np.int64).rename_axis(["post_id", "kind"]).unstack(fill_value=0)
    frame = frame.reindex(columns=list(INTERACTION_KINDS), fill_value=0).reset_index()
    frame["total"] = frame[list(INTERACTION_KINDS)].sum(axis=1)
    return frame.astype(np.int64)


def tf_example_dataset(
    paths: Sequence[Path],
    users: UserFeatureTable,
    posts: PostFeatureTable,
    sampling_probability: dict[int, float],
    *,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int = 0,
    id_dropout: float = 0.0,
    history_dropout: float = 0.0,
    read_rows: int = 4096,
) -> tf.data.Dataset:
    """A tf.data pipeline that streams example files: Parquet record batches are joined with the user and post
    feature tables in a generator, then unbatched, shuffled within a bounded buffer and rebatched.

    Each element holds the query- and candidate-tower inputs plus `candidate_id` (the true post id, for
    removing accidental hits) and `sampling_probability` (the post's share of training examples, for logQ
    correction). With id_dropout > 0, that share of post ids fed to the candidate tower is replaced by an
    unknown id, so the tower's out-of-vocabulary id embedding learns what a post without history looks like
    (cold start). With history_dropout > 0, that share of examples loses the user's history and activity
    counts, so the query tower also learns to place a user from the profile alone (all a new user has)."""
    import tensorflow as tf

    from teamu_assets.model.towers import post_input_signature, user_input_signature

    history_length = users.layout.history_length
    epochs_started = [0]
    probability_by_post = pd.Series(sampling_probability, dtype=np.float32)

    def probability_of(post_ids: np.ndarray) -> np.ndarray:
        return probability_by_post.reindex(post_ids, fill_value=0.0).to_numpy(np.float32)

    def generate() -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng([seed, epochs_started[0]])
        epochs_started[0] += 1
        batches = iter_example_batches(
            paths, batch_rows=read_rows, history_length=history_length, first_engagements_only=True
        )
        for batch in batches:
            histories, activity_counts = batch.histories, batch.activity_counts
            if history_dropout > 0:
                forgotten = rng.random(len(batch)) < history_dropout
                histories = np.where(forgotten[:, None], HISTORY_PADDING_ID, histories)
                activity_counts = np.where(forgotten[:, None], 0.0, activity_counts).astype(np.float32)
            features = users.inputs(batch.user_ids, histories, activity_counts)
            features.update(posts.inputs(batch.post_ids, as_of_days=batch.occurred_days, popularity=batch.post_counts))
            features["query_day"] = batch.occurred_days.astype(np.float32)
            features["post_created_day"] = posts.created_days(batch.post_ids).astype(np.float32)
            if id_dropout > 0:
                dropped = rng.random(len(batch)) < id_dropout
                features["post_id"] = np.where(dropped, HISTORY_PADDING_ID, batch.post_ids)
            features["candidate_id"] = batch.post_ids
            features["sampling_probability"] = probability_of(batch.post_ids)
            yield features

    signature = {**user_input_signature(), **post_input_signature()}
    signature["candidate_id"] = tf.TensorSpec([None], tf.int64)
    signature["sampling_probability"] = tf.TensorSpec([None], tf.float32)
    signature["query_day"] = tf.TensorSpec([None], tf.float32)
    signature["post_created_day"] = tf.TensorSpec([None], tf.float32)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(2)
