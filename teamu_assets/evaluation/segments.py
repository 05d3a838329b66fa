"""Metrics per segment: cold-start vs warm users, and new / existing, local / global posts.

A user segment evaluates the lists of its users only. An item segment keeps every user's whole list but counts
only the relevant items of the segment (recall@K of new posts = the share of the new posts a user went on to
engage with that the top K holds); users with no relevant item of the segment are left out, and coverage@K is
measured against the segment's items (the share of new posts anyone is shown at all).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from teamu_assets.evaluation.metrics import DEFAULT_K_VALUES, Metrics, RankedItems, evaluate_ranked


def segment_users(train_interactions: pd.DataFrame, eval_users: Iterable[Hashable]) -> dict[str, set[Hashable]]:
    """{"warm": users with at least one training interaction, "cold_start": users with none}, both within
    eval_users. train_interactions needs a user_id column."""
    trained = set(train_interactions["user_id"].tolist())
    users = set(eval_users)
    return {"warm": users & trained, "cold_start": users - trained}


def segment_items(posts: pd.DataFrame, cutoff: dt.datetime, *, id_column: str = "post_id") -> dict[str, set[Hashable]]:
    """{"new_posts": created at or after the cutoff (the model never saw them in training), "existing_posts",
    "local_posts": is_local true, "global_posts"}. posts needs id_column, created_at and is_local columns."""
    ids = posts[id_column]
    created_after = (pd.to_datetime(posts["created_at"], utc=True) >= pd.Timestamp(cutoff)).to_numpy()
    is_local = posts["is_local"].fillna(False).astype(bool).to_numpy()
    return {
        "new_posts": set(ids[created_after].tolist()),
        "existing_posts": set(ids[~created_after].tolist()),
        "local_posts": set(ids[is_local].tolist()),
        "global_posts": set(ids[~is_local].tolist()),
    }


def evaluate_segments(
    ranked: RankedItems,
    relevant: Mapping[Hashable, Collection[Hashable]],
    user_segments: Mapping[str, Collection[Hashable]],
    item_segments: Mapping[str, Collection[Hashable]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> dict[str, Metrics]:
    """{segment name: metrics} for every user and item segment (names must not collide)."""
    overlap = set(user_segments) & set(item_segments)
    if overlap:
        raise ValueError(f"segment names used for both users and items: {sorted(overlap)}")
    results: dict[str, Metrics] = {}
    user_list = ranked.user_ids.tolist()
    for name, members in user_segments.items():
        member_set = set(members)
        mask = np.fromiter((user in member_set for user in user_list), dtype=bool, count=len(user_list))
        results[name] = evaluate_ranked(ranked.subset(mask), relevant, k_values)
    item_list = ranked.item_ids.tolist()
    for name, members in item_segments.items():
        member_set = set(members)
        in_segment = np.fromiter((item in member_set for item in item_list), dtype=bool, count=len(item_list))
        segment_relevant = {user: set(items) & member_set for user, items in relevant.items()}
        results[name] = evaluate_ranked(ranked, segment_relevant, k_values, coverage_mask=in_segment)
    return results
