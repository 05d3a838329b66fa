"""The popularity fallback's decay, chosen on validation.

`ml.recommend_posts` serves popularity to users the model has no vector for and to everyone while no model is
promoted: a post's engaged users (distinct people who viewed, upvoted or commented) over (1 + its age in days) **
decay. Which decay ranks best is a property of the data, not of the code: where people engage with what is new (a
feed of project ideas, a Q&A site's open questions) a steep one, where they engage with a catalogue (artists,
films) none at all (docs/BENCHMARKS.md, "Real data": quantumcomputing chooses 0, cardano 1.5).

So the evaluation chooses it as the model's serving terms are chosen (teamu_assets.model.train): on each user's
last engagements before the cutoff (the dataset's validation split), ranked among the posts created before the
cutoff as they were at it (engaged users from the training split, ages at the cutoff), without the user's own posts
and the posts of their history, recall@k averaged per user. The choice is recorded in ml.popularity_fallback,
which the fallback reads; the evaluation period is never looked at.

The chooser ranks as the fallback does, up to what validation can't reproduce: the scores are compared in float64
(the SQL sorts them as real, so scores equal to 7 digits tie there and go to the lower post id), and the local-post
radius is not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from teamu_assets.evaluation.rankers import popularity_scores, score_evaluation, seen_or_own

# The decays tried, 0 (all-time popularity) first: among equal recalls the smallest wins.
FALLBACK_DECAYS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
SECONDS_PER_DAY = 86_400.0
# The decay ml.recommend_posts uses before any evaluation chose one (teamu_assets/db/sql/serving_functions.sql).
SERVING_DEFAULT_DECAY = 1.5


@dataclass(frozen=True)
class FallbackChoice:
    """The decay chosen, and the validation recall@k of every decay tried (users: those with a validation
    engagement with a post that existed before the cutoff)."""

    decay: float
    recalls: dict[float, float]
    k: int
    users: int

    def as_json(self) -> dict[str, object]:
        return {
            "decay": self.decay,
            "k": self.k,
            "users": self.users,
            "recalls": {f"{decay:g}": recall for decay, recall in self.recalls.items()},
        }


def fallback_scores(engaged_users: np.ndarray, age_days: np.ndarray, decay: float) -> np.ndarray:
    """engaged users / (1 + age in days) ** decay, ages below 0 counted as 0: the fallback's score."""
    ages = np.clip(np.asarray(age_days, np.float64), 0.0, None)
    return np.asarray(engaged_users, np.float64) / (1.0 + ages) ** decay


def engagement_and_age(
    history: pd.DataFrame, posts: pd.DataFrame, post_ids: np.ndarray, as_of: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """(engaged users, age in days at `as_of`) of post_ids, aligned with them: the distinct users of each post in
    `history` (user_id, post_id) and its age from `posts` (post_id, created_at); a post without a creation time is
    of age 0."""
    engaged = history.groupby("post_id")["user_id"].nunique().reindex(post_ids, fill_value=0).to_numpy(np.float64)
    created = pd.to_datetime(posts.drop_duplicates("post_id").set_index("post_id")["created_at"], utc=True)
    age_days = (as_of - created.reindex(post_ids)).dt.total_seconds().fillna(0.0).to_numpy() / SECONDS_PER_DAY
    return engaged, age_days


def choose_fallback_decay(
    history: pd.DataFrame,
    targets: pd.DataFrame,
    posts: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    k: int = 20,
    decays: Sequence[float] = FALLBACK_DECAYS,
) -> FallbackChoice | None:
    """The decay of highest recall@k on `targets` (user_id, post_id: the validation engagements), ranking the
    posts (post_id, user_id as author, created_at) created before `as_of` by their engaged users in `history`
    (user_id, post_id: the interactions before the validation engagements) at their age at `as_of`, each
    user's own posts and history excluded. None when no target is a post that existed before `as_of`."""
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    created = pd.to_datetime(posts["created_at"], utc=True)
    # In post id order: rank() breaks ties by the lower column, as the fallback does by the lower post id.
    existing = posts.assign(created_at=created).loc[(created < as_of).to_numpy()].sort_values("post_id")
    post_ids = existing["post_id"].to_numpy(np.int64)
    targets = targets.loc[targets["post_id"].isin(post_ids)]
    if targets.empty:
        return None
    engagement, age_days = engagement_and_age(history, existing, post_ids, as_of)
    relevant = {int(user): set(map(int, group)) for user, group in targets.groupby("user_id")["post_id"]}
    user_ids = np.array(sorted(relevant), dtype=np.int64)
    exclude = seen_or_own(history, existing)
    recalls = {
        float(decay): float(
            score_evaluation(
                user_ids,
                post_ids,
                popularity_scores(len(user_ids), fallback_scores(engagement, age_days, decay)),
                relevant,
                exclude,
                (k,),
            ).metrics[f"recall@{k}"]
        )
        for decay in decays
    }
    best = max(recalls, key=lambda decay: (recalls[decay], -decay))
    return FallbackChoice(decay=best, recalls=recalls, k=k, users=len(user_ids))
