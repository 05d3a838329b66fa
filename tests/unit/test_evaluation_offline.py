"""One offline evaluation end to end on a small hand-made world: every baseline, paired intervals, samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from teamu_assets.evaluation.offline import Embeddings, evaluate_embeddings


def test_evaluate_embeddings_with_every_baseline_and_intervals() -> None:
    rng = np.random.default_rng(2)
    n_users, n_posts, dim = 120, 60, 8
    # Two taste groups, each consuming its own half of the posts; the model's vectors know the groups.
    group = np.arange(n_users) % 2
    post_group = np.arange(n_posts) % 2
    rows = []
    for user in range(n_users):
        own_half = np.flatnonzero(post_group == group[user])
        for post in rng.choice(own_half, 8, replace=False):
            rows.append(
                (user, int(post), pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(hours=int(rng.integers(0, 48))))
            )
    interactions = pd.DataFrame(rows, columns=["user_id", "post_id", "occurred_at"])
    cutoff = pd.Timestamp("2026-01-02 12:00", tz="UTC")
    posts = pd.DataFrame(
        {
            "post_id": np.arange(n_posts),
            "user_id": np.full(n_posts, 10_000),
            "created_at": pd.Timestamp("2025-12-01", tz="UTC"),
            "is_local": False,
        }
    )
    centres = rng.normal(size=(2, dim))
    users = Embeddings(np.arange(n_users), centres[group] + 0.1 * rng.normal(size=(n_users, dim)))
    items = Embeddings(np.arange(n_posts), centres[post_group] + 0.1 * rng.normal(size=(n_posts, dim)))

    result = evaluate_embeddings(
        train=interactions.loc[interactions["occurred_at"] < cutoff],
        evaluation=interactions.loc[interactions["occurred_at"] >= cutoff],
        posts=posts,
        cutoff=cutoff,
        users=users,
        items=items,
        previous=(users, items),
        oracle_scores={
            "oracle": lambda user_ids, post_ids: (group[user_ids][:, None] == post_group[post_ids][None, :]) * 1.0,
            "knowable_oracle": lambda user_ids, post_ids: np.ones((len(user_ids), len(post_ids))),
        },
    )
    assert list(result.baselines) == ["popularity", "itemitem", "random", "oracle", "knowable_oracle", "previous"]
    # Each oracle is its own ranker: the one that knows the groups finds what a constant can't.
    assert result.baselines["oracle"]["recall@20"] > result.baselines["knowable_oracle"]["recall@20"] + 0.2
    # The model knows the groups: far above popularity and random, like the oracle; EASE learns the groups from
    # co-occurrence and is far above popularity too.
    assert result.metrics["recall@20"] > result.baselines["popularity"]["recall@20"] + 0.2
    assert result.baselines["itemitem"]["recall@20"] > result.baselines["popularity"]["recall@20"] + 0.2
    assert result.baselines["previous"]["recall@20"] == pytest.approx(result.metrics["recall@20"])
    intervals = result.intervals
    assert intervals is not None and intervals.users == result.users_evaluated > 50
    assert intervals.model_minus["popularity"]["recall@20"].low > 0
    # The previous model is the candidate itself: the paired difference is exactly 0.
    assert intervals.model_minus["previous"]["recall@20"].as_json() == [0.0, 0.0]
    assert len(result.score_samples.relevant) > 0
    assert result.score_samples.relevant.mean() > result.score_samples.random.mean()
