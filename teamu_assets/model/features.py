"""Feature encoding shared by training and inference: mart rows -> fixed-shape numpy arrays for the towers.

No TensorFlow here: the same encoding feeds the tf.data training pipeline and batch inference, so a feature is
computed the same way in both places (no training/serving skew). Memory grows with the number of users and
posts, never with the number of interactions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import h3
import numpy as np
import pandas as pd

from teamu_assets.contract import HISTORY_LENGTH

# Coarse (~1,800 km^2) and city-scale (~36 km^2) cells: the coarse one generalizes across a region, the finer
# one separates neighbourhoods once enough users live there.
H3_RESOLUTIONS: tuple[int, ...] = (4, 6)
UNKNOWN_H3_CELL = "unknown"
HISTORY_PADDING_ID = -1
ACTIVITY_COUNT_COLUMNS: tuple[str, ...] = ("viewed_count", "upvoted_count", "commented_count")
POST_NUMERIC_FEATURES: tuple[str, ...] = (
    "log_post_length",
    "is_local",
    "log_vote_count",
    "log_view_count",
    "log_avg_time_viewed_seconds",
)
# Optional column of a post frame: the moment its popularity columns and post ages refer to (see
# PostFeatureTable); written by dataset.post_features_as_of(..., as_of=...).
FEATURES_AS_OF_COLUMN = "features_as_of"
SECONDS_PER_DAY = 86_400.0
VOTE_COUNT_INDEX = POST_NUMERIC_FEATURES.index("log_vote_count")
VIEW_COUNT_INDEX = POST_NUMERIC_FEATURES.index("log_view_count")
VIEW_TIME_INDEX = POST_NUMERIC_FEATURES.index("log_avg_time_viewed_seconds")


def epoch_days(values: Any) -> np.ndarray:
    """Timestamps (UTC or naive-as-UTC) as float64 days since the Unix epoch; missing ones become NaN."""
    times = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    seconds = (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return (seconds / SECONDS_PER_DAY).to_numpy(np.float64)


def user_h3_feature(resolution: int) -> str:
    return f"user_h3_res{resolution}"


def post_h3_feature(resolution: int) -> str:
    return f"post_h3_res{resolution}"


def h3_cell(latitude: Any, longitude: Any, resolution: int) -> str:
    """The H3 cell of a point, or the reserved unknown cell for missing or out-of-range coordinates."""
    try:
        lat, lng = float(latitude), float(longitude)
    except (TypeError, ValueError):
        return UNKNOWN_H3_CELL
    if not (math.isfinite(lat) and math.isfinite(lng)) or abs(lat) > 90 or abs(lng) > 180:
        return UNKNOWN_H3_CELL
    return h3.latlng_to_cell(lat, lng, resolution)


def h3_cells(latitudes: Iterable[Any], longitudes: Iterable[Any], resolution: int) -> np.ndarray:
    return np.array([h3_cell(lat, lng, resolution) for lat, lng in zip(latitudes, longitudes, strict=True)], object)


def as_list(value: Any) -> list[Any]:
    """A mart list cell as a Python list: None/NaN (missing) becomes empty; arrays and tuples become lists."""
    if value is None:
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    if isinstance(value, float) and math.isnan(value):
        return []
    return [value]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# The towers read at most 64 words of a text (towers.TEXT_TOKENS): 1,000 characters hold them, and tokenizing
# more is wasted work.
# Joining a prolific author's every post title (or a long thread's every comment) in full would make memory grow
# with the longest text: one account with thousands of posts took a 22 GB machine down.
MAX_TEXT_CHARS = 1_000


def _join_texts(values: Iterable[Any], max_chars: int = MAX_TEXT_CHARS) -> str:
    """The non-empty texts joined by spaces, stopping once max_chars is reached (the last text cut there)."""
    kept: list[str] = []
    length = 0
    for text in (_text(v) for v in values):
        if not text:
            continue
        kept.append(text[: max_chars - length])
        length += len(kept[-1]) + 1
        if length >= max_chars:
            break
    return " ".join(kept)


def _log_counts(values: pd.Series) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").fillna(0.0).to_numpy(np.float64)
    return np.log1p(np.clip(numbers, 0.0, None)).astype(np.float32)


def pad_id_lists(id_lists: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """[n, width] int64, each row the first `width` ids of its list, padded with HISTORY_PADDING_ID."""
    padded = np.full((len(id_lists), width), HISTORY_PADDING_ID, dtype=np.int64)
    for row, ids in enumerate(id_lists):
        kept = list(ids)[:width]
        padded[row, : len(kept)] = kept
    return padded


def _pad_strings(lists: Sequence[Sequence[str]], width: int) -> np.ndarray:
    padded = np.full((len(lists), width), "", dtype=object)
    for row, values in enumerate(lists):
        kept = values[:width]
        padded[row, : len(kept)] = kept
    return padded


def normalized_passions(value: Any) -> list[str]:
    """Passions lower-cased and stripped, duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for passion in as_list(value):
        if isinstance(passion, str) and passion.strip():
            seen.setdefault(passion.strip().lower(), None)
    return list(seen)


@dataclass(frozen=True)
class FeatureLayout:
    """Shapes the towers are fed with; saved with the model so inference pads exactly like training."""

    history_length: int = HISTORY_LENGTH
    max_passions: int = 8


class _IdIndex:
    """Row positions of ids in a feature table."""

    def __init__(self, ids: np.ndarray) -> None:
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        positions = np.searchsorted(self._sorted, ids)
        positions = np.clip(positions, 0, max(len(self._sorted) - 1, 0))
        if len(self._sorted) == 0 or not np.array_equal(self._sorted[positions], ids):
            missing = ids[(len(self._sorted) == 0) | (self._sorted[positions] != ids)]
            raise KeyError(f"ids missing from the feature table: {missing[:10].tolist()}")
        return self._order[positions]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._sorted) == 0:
            return np.zeros(len(ids), dtype=bool)
        positions = np.clip(np.searchsorted(self._sorted, ids), 0, len(self._sorted) - 1)
        return self._sorted[positions] == ids


class UserFeatureTable:
    """The static part of the query tower's inputs (profile, location), one row per user."""

    def __init__(self, user_features: pd.DataFrame, layout: FeatureLayout) -> None:
        self.layout = layout
        self.user_ids = user_features["user_id"].to_numpy(np.int64)
        self._index = _IdIndex(self.user_ids)
        self.passions = _pad_strings([normalized_passions(v) for v in user_features["passions"]], layout.max_passions)
        self.h3 = {res: h3_cells(user_features["latitude"], user_features["longitude"], res) for res in H3_RESOLUTIONS}
        self.profile_text = np.array(
            [
                _join_texts([bio, *as_list(projects), *as_list(created)])
                for bio, projects, created in zip(
                    user_features["bio"],
                    user_features["project_titles"],
                    user_features["created_post_titles"],
                    strict=True,
                )
            ],
            dtype=object,
        )
        self.recent_post_ids = [as_list(v) for v in user_features["recent_post_ids"]]
        self.activity_counts = np.stack(
            [
                pd.to_numeric(user_features[c], errors="coerce").fillna(0).to_numpy(np.float32)
                for c in ACTIVITY_COUNT_COLUMNS
            ],
            axis=1,
        ).reshape(len(user_features), len(ACTIVITY_COUNT_COLUMNS))

    def contains(self, user_ids: np.ndarray) -> np.ndarray:
        return self._index.contains(user_ids)

    def blank(self) -> np.ndarray:
        """[n] bool: the users with nothing for the query tower to read, as the frame has them (no history or
        activity counts, no profile text, passions or location). The tower reads no user id, so it gives them all
        one vector: a global ranking, nothing personal. ml.recommend_posts serves them its popularity fallback
        instead (serving_functions.sql applies the same rule to the mart's row), and the evaluation ranks them so."""
        no_history = np.array([len(ids) == 0 for ids in self.recent_post_ids], dtype=bool)
        no_text = np.array([not text.strip() for text in self.profile_text], dtype=bool)
        return (
            no_history
            & (self.activity_counts == 0).all(axis=1)
            & no_text
            & (self.passions == "").all(axis=1)
            & np.all([self.h3[res] == UNKNOWN_H3_CELL for res in H3_RESOLUTIONS], axis=0)
        )

    def inputs(self, user_ids: np.ndarray, histories: np.ndarray, activity_counts: np.ndarray) -> dict[str, np.ndarray]:
        """Query-tower inputs for users at a moment: history ([n, H] padded ids) and activity counts then."""
        rows = self._index.rows(user_ids)
        features: dict[str, np.ndarray] = {
            "user_id": np.asarray(user_ids, dtype=np.int64),
            "history": np.asarray(histories, dtype=np.int64),
            "passions": self.passions[rows],
            "profile_text": self.profile_text[rows],
            "activity_counts": np.log1p(np.clip(np.asarray(activity_counts, np.float32), 0, None)),
        }
        for res in H3_RESOLUTIONS:
            features[user_h3_feature(res)] = self.h3[res][rows]
        return features

    def serving_inputs(self) -> dict[str, np.ndarray]:
        """Every user as of now: history from recent_post_ids (newest first), counts from the mart."""
        histories = pad_id_lists(self.recent_post_ids, self.layout.history_length)
        return self.inputs(self.user_ids, histories, self.activity_counts)


class PostFeatureTable:
    """The candidate tower's inputs, one row per post.

    Post age (days from created_at to a reference time, 0 for posts created later) is part of the inputs: the
    reference time is `reference_time`, else the frame's features_as_of column, else now. Evaluate at a cutoff
    with the cutoff as reference; serve with now."""

    def __init__(self, post_features: pd.DataFrame, reference_time: pd.Timestamp | None = None) -> None:
        if reference_time is None and FEATURES_AS_OF_COLUMN in post_features and len(post_features):
            reference_time = pd.Timestamp(post_features[FEATURES_AS_OF_COLUMN].iloc[0])
        if reference_time is None:
            reference_time = pd.Timestamp.now(tz="UTC")
        self.reference_day = float(epoch_days([reference_time])[0])
        created = (
            epoch_days(post_features["created_at"].to_numpy())
            if "created_at" in post_features
            else np.full(len(post_features), np.nan)
        )
        # Unknown creation time: treated as created at the reference time (age 0).
        self.created_day = np.where(np.isnan(created), self.reference_day, created)
        self.post_ids = post_features["post_id"].to_numpy(np.int64)
        self._index = _IdIndex(self.post_ids)
        self.title = np.array([_text(v) for v in post_features["title"]], dtype=object)
        self.description = np.array([_text(v) for v in post_features["description"]], dtype=object)
        self.comments = np.array([_join_texts(as_list(v)) for v in post_features["comments"]], dtype=object)
        self.h3 = {res: h3_cells(post_features["latitude"], post_features["longitude"], res) for res in H3_RESOLUTIONS}
        avg_time = (
            post_features["avg_time_viewed_seconds"]
            if "avg_time_viewed_seconds" in post_features
            else pd.Series(0.0, index=post_features.index)
        )
        self.numeric = np.stack(
            [
                _log_counts(post_features["post_length"]),
                post_features["is_local"].fillna(False).astype(bool).to_numpy(np.float32),
                _log_counts(post_features["vote_count"]),
                _log_counts(post_features["view_count"]),
                _log_counts(avg_time),
            ],
            axis=1,
        ).reshape(len(post_features), len(POST_NUMERIC_FEATURES))

    def contains(self, post_ids: np.ndarray) -> np.ndarray:
        return self._index.contains(post_ids)

    def inputs(
        self,
        post_ids: np.ndarray,
        *,
        as_of_days: np.ndarray | None = None,
        popularity: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Candidate-tower inputs. as_of_days (epoch days per row) overrides the reference time for the ages;
        popularity ([n, 3] view, upvote and comment counts per row) overrides the table's counts, and a row whose
        post had no comment (no view) by then gets no comments (no view time): both for training examples, where
        a post is seen as it was when the user engaged with it. (The table's comments and view time are those
        of the cutoff; given to a post's first viewers as well, they taught the towers that a post without any,
        as every new post is, is one nobody engages with.)"""
        rows = self._index.rows(post_ids)
        reference = self.reference_day if as_of_days is None else np.asarray(as_of_days, np.float64)
        numeric = self.numeric[rows].copy()
        comments = self.comments[rows]
        if popularity is not None:
            counts = np.clip(np.asarray(popularity, np.float32), 0, None)
            logs = np.log1p(counts)
            numeric[:, VIEW_COUNT_INDEX] = logs[:, 0]
            numeric[:, VOTE_COUNT_INDEX] = logs[:, 1]
            numeric[counts[:, 0] == 0, VIEW_TIME_INDEX] = 0.0
            comments = np.where(counts[:, 2] > 0, comments, "")
        features: dict[str, np.ndarray] = {
            "post_id": np.asarray(post_ids, dtype=np.int64),
            "title": self.title[rows],
            "description": self.description[rows],
            "comments": comments,
            "post_numeric": numeric,
            "post_age_days": np.clip(reference - self.created_day[rows], 0.0, None).astype(np.float32),
        }
        for res in H3_RESOLUTIONS:
            features[post_h3_feature(res)] = self.h3[res][rows]
        return features

    def created_days(self, post_ids: np.ndarray) -> np.ndarray:
        """Creation times in epoch days (the reference time where unknown)."""
        return self.created_day[self._index.rows(post_ids)]

    def serving_inputs(self) -> dict[str, np.ndarray]:
        return self.inputs(self.post_ids)


def slice_inputs(inputs: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: values[start:stop] for name, values in inputs.items()}


def blank_user_ids(user_features: pd.DataFrame) -> np.ndarray:
    """The ids of a user-mart frame's blank users (UserFeatureTable.blank): those served the popularity fallback."""
    table = UserFeatureTable(user_features, FeatureLayout())
    return table.user_ids[table.blank()]
