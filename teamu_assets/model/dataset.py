"""Training data: a temporal split of the interactions with leakage-free per-example history, as Parquet.

Every example is one interaction (user, post, kind, time). Its history is the user's engaged post ids strictly
before that time, newest first, and its activity counts are the user's counts strictly before that time: the
query tower sees what a live system would have seen at that moment, never the future.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from teamu_assets.model.features import (
    ACTIVITY_COUNT_COLUMNS,
    FEATURES_AS_OF_COLUMN,
    HISTORY_PADDING_ID,
    PostFeatureTable,
    UserFeatureTable,
    epoch_days,
)

if TYPE_CHECKING:
    import tensorflow as tf

INTERACTION_KINDS: tuple[str, ...] = ("view", "upvote", "comment")
SPLITS: tuple[str, ...] = ("train", "validation", "evaluation")
MANIFEST_FILE = "manifest.json"
# Where each kind's running count goes in the example's activity counts (same order as the user mart columns).
_KIND_COUNT_COLUMN = dict(zip(INTERACTION_KINDS, ACTIVITY_COUNT_COLUMNS, strict=True))
_EXAMPLE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("post_id", pa.int64()),
        ("kind", pa.string()),
        ("occurred_at", pa.timestamp("ns", tz="UTC")),
        ("history", pa.list_(pa.int64())),
        *[(column, pa.int64()) for column in ACTIVITY_COUNT_COLUMNS],
        *[(column, pa.int64()) for column in ("post_view_count", "post_vote_count")],
    ]
)
# The post's view and upvote counts (by everyone) strictly before the example: its popularity at that moment.
POST_COUNT_COLUMNS: tuple[str, ...] = ("post_view_count", "post_vote_count")


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
    # A total order (ties broken by kind and post) makes histories and the split reproducible.
    return frame.sort_values(["user_id", "occurred_at", "kind", "post_id"], kind="stable").reset_index(drop=True)


def _histories_before(frame: pd.DataFrame, history_length: int) -> tuple[list[list[int]], np.ndarray]:
    """For each row of a (user, time)-sorted frame: distinct post ids engaged strictly before, newest first,
    and the per-kind counts strictly before. Rows at the same instant see the same state."""
    users = frame["user_id"].to_numpy()
    times = frame["occurred_at"].to_numpy()
    posts = frame["post_id"].to_numpy()
    kind_columns = frame["kind"].map({k: i for i, k in enumerate(INTERACTION_KINDS)}).to_numpy()
    histories: list[list[int]] = [[] for _ in range(len(frame))]
    counts = np.zeros((len(frame), len(INTERACTION_KINDS)), dtype=np.int64)
    start = 0
    while start < len(frame):
        user = users[start]
        recent: OrderedDict[int, None] = OrderedDict()  # oldest first; trimmed to history_length
        running = np.zeros(len(INTERACTION_KINDS), dtype=np.int64)
        row = start
        while row < len(frame) and users[row] == user:
            group_end = row
            while group_end < len(frame) and users[group_end] == user and times[group_end] == times[row]:
                group_end += 1
            snapshot = [int(post) for post in reversed(recent)]
            for member in range(row, group_end):
                histories[member] = snapshot
                counts[member] = running
            for member in range(row, group_end):
                recent.pop(posts[member], None)
                recent[posts[member]] = None
                if len(recent) > history_length:
                    recent.popitem(last=False)
                running[kind_columns[member]] += 1
            row = group_end
        start = row
    return histories, counts


def _post_counts_before(frame: pd.DataFrame) -> np.ndarray:
    """[n, 2] views and upvotes of each row's post strictly before the row's time (same-instant rows excluded)."""
    counts = np.zeros((len(frame), 2), dtype=np.int64)
    if len(frame) == 0:
        return counts
    keys = frame[["post_id", "occurred_at"]].reset_index(drop=True)
    for column, kind in enumerate(("view", "upvote")):
        hits = (frame["kind"].to_numpy() == kind).astype(np.int64)
        per_instant = keys.assign(hits=hits).groupby(["post_id", "occurred_at"], sort=True)["hits"].sum()
        before = per_instant.groupby(level="post_id").cumsum() - per_instant
        counts[:, column] = before.reindex(pd.MultiIndex.from_frame(keys)).to_numpy(np.int64)
    return counts


def build_training_examples(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame,
    post_features: pd.DataFrame,
    cutoff: pd.Timestamp,
    *,
    history_length: int = 50,
    validation_fraction: float = 0.1,
) -> TrainingData:
    """Temporal split: train before `cutoff`, evaluation from it on; validation is the last
    `validation_fraction` of the training period (by time, whole instants kept together)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    cutoff = pd.Timestamp(cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    frame = _clean_interactions(interactions, user_features, post_features)
    histories, counts = _histories_before(frame, history_length)
    frame["history"] = histories
    for column_index, column in enumerate(ACTIVITY_COUNT_COLUMNS):
        frame[column] = counts[:, column_index]
    post_counts = _post_counts_before(frame)
    for column_index, column in enumerate(POST_COUNT_COLUMNS):
        frame[column] = post_counts[:, column_index]

    before_cutoff = frame["occurred_at"] < cutoff
    training_period = frame.loc[before_cutoff]
    validation_start: pd.Timestamp | None = None
    validation_rows = int(round(len(training_period) * validation_fraction))
    in_validation = pd.Series(False, index=frame.index)
    if validation_rows > 0:
        times = training_period["occurred_at"].sort_values(kind="stable")
        validation_start = times.iloc[len(times) - validation_rows]
        in_validation = before_cutoff & (frame["occurred_at"] >= validation_start)

    def by_time(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.sort_values(["occurred_at", "user_id", "kind", "post_id"], kind="stable").reset_index(drop=True)

    return TrainingData(
        train=by_time(frame.loc[before_cutoff & ~in_validation]),
        validation=by_time(frame.loc[in_validation]),
        evaluation=by_time(frame.loc[~before_cutoff]),
        cutoff=cutoff,
        validation_start=validation_start,
        history_length=history_length,
    )


def user_features_as_of(
    interactions: pd.DataFrame,
    user_features: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    history_length: int = 50,
) -> pd.DataFrame:
    """The user mart as it would have read at `as_of`: recent_post_ids and activity counts from interactions
    strictly before it (profile columns are kept: they carry no time). For evaluating at a cutoff."""
    frame = interactions.loc[pd.to_datetime(interactions["occurred_at"], utc=True) < as_of]
    frame = _clean_interactions(frame, user_features, pd.DataFrame({"post_id": frame["post_id"].unique()}))
    result = user_features.copy()
    newest_first = frame.sort_values("occurred_at", ascending=False, kind="stable")
    recent = (
        newest_first.drop_duplicates(["user_id", "post_id"])
        .groupby("user_id")["post_id"]
        .agg(lambda ids: [int(i) for i in ids[:history_length]])
    )
    result["recent_post_ids"] = [recent.get(user, []) for user in result["user_id"]]
    per_kind = frame.groupby(["user_id", "kind"]).size().unstack(fill_value=0)
    for kind, column in _KIND_COUNT_COLUMN.items():
        counts = per_kind[kind] if kind in per_kind else pd.Series(dtype=np.int64)
        result[column] = result["user_id"].map(counts).fillna(0).astype(np.int64)
    return result


def post_features_as_of(
    post_counts: pd.DataFrame, post_features: pd.DataFrame, *, as_of: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The post mart with popularity (view_count, vote_count) replaced by `post_counts` (post_id, view,
    upvote), e.g. counts from before a cutoff, so training and evaluation never see later popularity. With
    `as_of` (the cutoff), post ages are measured at that moment too (a features_as_of column records it);
    without, they are measured when the frame is embedded (now)."""
    result = post_features.copy()
    if as_of is not None:
        as_of = pd.Timestamp(as_of)
        result[FEATURES_AS_OF_COLUMN] = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    counts = post_counts.set_index("post_id")
    result["view_count"] = result["post_id"].map(counts["view"]).fillna(0).astype(np.int64)
    result["vote_count"] = result["post_id"].map(counts["upvote"]).fillna(0).astype(np.int64)
    return result


def write_dataset(data: TrainingData, out_dir: Path, *, seed: int = 0, row_group_rows: int = 8192) -> DatasetManifest:
    """Writes train/validation/evaluation Parquet files and manifest.json. Training rows are written in a
    seeded random order so that streaming row groups with a small shuffle buffer gives well-mixed batches
    (in-batch negatives from one period only would teach recency, not taste)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name in SPLITS:
        rows = data.split(name)
        if name == "train":
            order = np.random.default_rng(seed).permutation(len(rows))
            rows = rows.iloc[order].reset_index(drop=True)
        table = pa.Table.from_pandas(rows[_EXAMPLE_SCHEMA.names], schema=_EXAMPLE_SCHEMA, preserve_index=False)
        files[name] = f"{name}.parquet"
        pq.write_table(table, out_dir / files[name], row_group_size=row_group_rows)
    every_split = pd.concat([data.split(name)[["user_id", "post_id"]] for name in SPLITS])
    manifest = DatasetManifest(
        directory=str(out_dir.resolve()),
        files=files,
        rows={name: len(data.split(name)) for name in SPLITS},
        users=int(every_split["user_id"].nunique()),
        posts=int(every_split["post_id"].nunique()),
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
    post_counts: np.ndarray | None = None  # [n, 2] float32 post views and upvotes before the example

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


def iter_example_batches(
    paths: Sequence[Path], *, batch_rows: int = 4096, history_length: int = 50
) -> Iterator[ExampleBatch]:
    """Streams examples from Parquet files a record batch at a time: memory is bounded by batch_rows."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=batch_rows):
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


def count_posts_by_kind(paths: Sequence[Path], *, batch_rows: int = 65536) -> pd.DataFrame:
    """Per post: rows of each kind and in total, streamed from example files (post_id, view, upvote, comment,
    total). Memory grows with the number of posts only."""
    totals: dict[tuple[int, str], int] = {}
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["post_id", "kind"]):
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
        for batch in iter_example_batches(paths, batch_rows=read_rows, history_length=history_length):
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
