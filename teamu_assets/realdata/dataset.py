"""RealDataset: a public data set in the raw contract's shapes, and the per-user temporal holdout cut on it.

Pure pandas/numpy: no database, no clock, no randomness beyond seeded hashes, so the same files give the same
rows and the same split every time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from teamu_assets.contract import POST_VIEWED
from teamu_assets.synthetic.generator import CONTRACT_COLUMNS, TIMESTAMP_DTYPE

VIEW_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "post_id": "int64",
    "occurred_at": TIMESTAMP_DTYPE,
    "duration_ms": "int64",
}
ENGAGEMENT_COLUMNS: dict[str, str] = {"user_id": "int64", "post_id": "int64", "occurred_at": TIMESTAMP_DTYPE}
# None of the sources tracks view time; "Post Viewed" requires one, so every view gets the same value, which
# carries no signal either way.
VIEW_DURATION_MS = 10_000
# How many of a post's most used tags make its description when descriptions come from tags (Last.fm).
DESCRIPTION_TAGS = 10
_PAIR_KEY = ["user_id", "post_id"]


@dataclass(frozen=True, eq=False)
class RealDataset:
    """One public data set mapped onto the raw contract.

    users, projects, project_members, posts, comments, votes: the raw_supabase tables, columns and dtypes exactly as
    CONTRACT_COLUMNS. views: (user_id, post_id, occurred_at, duration_ms), written as Mixpanel "Post Viewed"
    events. engagements: each user's distinct engaged posts with the time of first engagement, one row per
    (user_id, post_id), sorted by user, time, post: what per_user_holdout cuts on.
    descriptions_from_tags: the posts' descriptions are their most used comment bodies (Last.fm's tags), so a
    split recomputes them from the comments it keeps (no held-out tag reaches a description)."""

    name: str
    users: pd.DataFrame
    projects: pd.DataFrame
    posts: pd.DataFrame
    comments: pd.DataFrame
    votes: pd.DataFrame
    views: pd.DataFrame
    engagements: pd.DataFrame
    descriptions_from_tags: bool = False
    # The public data sets have no projects, so no teams either.
    project_members: pd.DataFrame = field(
        default_factory=lambda: contract_frame("project_members", {c: [] for c in CONTRACT_COLUMNS["project_members"]})
    )

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The Supabase tables by name, parents before children (the synthetic writer's input)."""
        return {name: getattr(self, name) for name in CONTRACT_COLUMNS}

    @property
    def events(self) -> list[dict]:
        """The views as Mixpanel raw export events, in time order. $insert_id is a hash of the event's content
        and its position among equal ones, so a rewrite of the same data gives the same ids."""
        views = self.views.sort_values(["occurred_at", "user_id", "post_id"], kind="stable")
        micros = views["occurred_at"].dt.as_unit("us").astype("int64").to_numpy()
        events: list[dict] = []
        seen: dict[tuple[int, int, int], int] = {}
        for user_id, post_id, time_us, duration_ms in zip(
            views["user_id"].tolist(),
            views["post_id"].tolist(),
            micros.tolist(),
            views["duration_ms"].tolist(),
            strict=True,
        ):
            key = (user_id, post_id, time_us)
            repeat = seen.get(key, 0)
            seen[key] = repeat + 1
            insert_id = hashlib.blake2b(f"{self.name}:{user_id}:{post_id}:{time_us}:{repeat}".encode(), digest_size=16)
            # Whole seconds stay integers; sub-second times keep their milliseconds.
            time: int | float = time_us // 1_000_000 if time_us % 1_000_000 == 0 else round(time_us / 1e6, 3)
            properties = {
                "time": time,
                "distinct_id": str(user_id),
                "$insert_id": insert_id.hexdigest(),
                "post_id": post_id,
                "duration_ms": duration_ms,
            }
            events.append({"event": POST_VIEWED, "properties": properties})
        return events

    def row_counts(self) -> dict[str, int]:
        counts = {name: len(frame) for name, frame in self.tables.items()}
        counts["views"] = len(self.views)
        counts["engagements"] = len(self.engagements)
        return counts


def contract_frame(name: str, columns: dict[str, object]) -> pd.DataFrame:
    """A raw table (CONTRACT_COLUMNS[name]) from column values, in contract order and dtypes."""
    return typed_frame(CONTRACT_COLUMNS[name], columns)


def typed_frame(dtypes: dict[str, str], columns: dict[str, object]) -> pd.DataFrame:
    frame = pd.DataFrame({column: columns[column] for column in dtypes})
    for column, dtype in dtypes.items():
        if column == "passions":
            frame[column] = frame[column].astype(object)
        else:
            frame[column] = frame[column].astype(dtype)
    return frame.reset_index(drop=True)


def engagements_from(events: pd.DataFrame) -> pd.DataFrame:
    """(user_id, post_id, occurred_at) rows of engagement events -> one row per pair at its first time, sorted
    by user, time, post."""
    first = events.groupby(_PAIR_KEY, as_index=False)["occurred_at"].min()
    first = first.sort_values(["user_id", "occurred_at", "post_id"], kind="stable")
    return typed_frame(ENGAGEMENT_COLUMNS, first)


def views_at(engagement_events: pd.DataFrame) -> pd.DataFrame:
    """One "Post Viewed" per engagement event, at its time."""
    views = engagement_events[["user_id", "post_id", "occurred_at"]].assign(duration_ms=VIEW_DURATION_MS)
    views = views.sort_values(["occurred_at", "user_id", "post_id"], kind="stable")
    return typed_frame(VIEW_COLUMNS, views)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a well-spread uint64 per input, the same on every machine."""
    z = np.asarray(values, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def pair_hash(user_ids: np.ndarray, item_ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded uint64 hash of each (user, item) pair."""
    users = mix64(np.asarray(user_ids, dtype=np.int64).astype(np.uint64) ^ mix64(np.full(1, seed, np.uint64)))
    return mix64(users ^ np.asarray(item_ids, dtype=np.int64).astype(np.uint64))


def tag_descriptions(posts: pd.DataFrame, comments: pd.DataFrame, top: int = DESCRIPTION_TAGS) -> pd.Series:
    """Each post's `top` most used comment bodies (tags), most used first (ties by name), joined by ", ";
    missing for a post without comments. Aligned with posts."""
    counts = comments.groupby(["post_id", "body"]).size().rename("uses").reset_index()
    counts = counts.sort_values(["post_id", "uses", "body"], ascending=[True, False, True], kind="stable")
    joined = counts.groupby("post_id", sort=False).head(top).groupby("post_id")["body"].agg(", ".join)
    return posts["post_id"].map(joined).astype("str")


def _without_pairs(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """frame minus every row whose (user_id, post_id) is one of pairs."""
    marked = frame.merge(pairs[_PAIR_KEY].assign(_held=True), on=_PAIR_KEY, how="left")
    return frame.loc[marked["_held"].isna().to_numpy()].reset_index(drop=True)


def per_user_holdout(
    dataset: RealDataset, fraction: float = 0.2, min_items: int = 2
) -> tuple[RealDataset, pd.DataFrame]:
    """Leave-last-out per user: each user with at least min_items distinct engaged posts holds out the last
    floor(fraction x items) of them by first-engagement time (ties by post id), at least one and never all;
    users with fewer items keep everything in training.

    Returns (train, holdout). train is the dataset with every row of a held-out (user, post) pair removed
    (views, votes, comments, engagements; descriptions recomputed when they come from tags); everything else
    stays, other users' later activity included. holdout: (user_id, post_id, occurred_at) sorted by user and
    time."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be within (0, 1), got {fraction}")
    if min_items < 2:
        raise ValueError(f"min_items must be at least 2 (a held-out user keeps one training item), got {min_items}")
    engagements = dataset.engagements.sort_values(["user_id", "occurred_at", "post_id"], kind="stable")
    items = engagements.groupby("user_id")["post_id"].transform("size").to_numpy()
    position = engagements.groupby("user_id").cumcount().to_numpy()
    # The small epsilon keeps 0.2 x 5 from flooring to 0 through float error.
    held_count = np.where(items >= min_items, np.maximum(1, np.floor(fraction * items + 1e-9)), 0)
    held_count = np.minimum(held_count, items - 1)
    is_held = position >= items - held_count
    holdout = typed_frame(ENGAGEMENT_COLUMNS, engagements.loc[is_held])

    posts = dataset.posts
    comments = _without_pairs(dataset.comments, holdout)
    if dataset.descriptions_from_tags:
        posts = posts.assign(description=tag_descriptions(posts, comments))
    train = dataclasses.replace(
        dataset,
        posts=posts,
        comments=comments,
        votes=_without_pairs(dataset.votes, holdout),
        views=_without_pairs(dataset.views, holdout),
        engagements=typed_frame(ENGAGEMENT_COLUMNS, engagements.loc[~is_held]),
    )
    return train, holdout
