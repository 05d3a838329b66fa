"""One offline evaluation end to end on a small hand-made world: every baseline, paired intervals, samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from teamu_assets.contract import RECOMMENDATION_CLICKED, RECOMMENDATION_SHOWN
from teamu_assets.evaluation.offline import Embeddings, evaluate_embeddings


def _two_group_world() -> dict[str, Any]:
    """evaluate_embeddings' arguments on a world of two taste groups, each consuming its own half of the posts,
    whose embeddings know the groups; and the oracles."""
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

    return {
        "train": interactions.loc[interactions["occurred_at"] < cutoff],
        "evaluation": interactions.loc[interactions["occurred_at"] >= cutoff],
        "posts": posts,
        "cutoff": cutoff,
        "users": users,
        "items": items,
        "oracle_scores": {
            "oracle": lambda user_ids, post_ids: (group[user_ids][:, None] == post_group[post_ids][None, :]) * 1.0,
            "knowable_oracle": lambda user_ids, post_ids: np.ones((len(user_ids), len(post_ids))),
        },
    }


def test_evaluate_embeddings_with_every_baseline_and_intervals() -> None:
    world = _two_group_world()
    result = evaluate_embeddings(**world, previous=(world["users"], world["items"]))
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


def test_the_click_replay_counts_the_clicks_after_the_cutoff_only() -> None:
    """Lists ranked at the cutoff are credited with the evaluation period's clicks, not with the clicks before
    it, which the model trained on; the observed CTR reads the whole log."""
    world = _two_group_world()
    cutoff = world["cutoff"]
    # User 0 (group 0) was shown posts 0 and 2 (group 0: at the top of its list) twice and clicked each time.
    rows = [
        (RECOMMENDATION_SHOWN, "0", "before", [0, 2], None, "v1", cutoff - pd.Timedelta(hours=2)),
        (RECOMMENDATION_CLICKED, "0", "before", None, 0, None, cutoff - pd.Timedelta(hours=1)),
        (RECOMMENDATION_SHOWN, "0", "after", [0, 2], None, "v1", cutoff + pd.Timedelta(hours=1)),
        (RECOMMENDATION_CLICKED, "0", "after", None, 2, None, cutoff + pd.Timedelta(hours=2)),
    ]
    events = pd.DataFrame(
        rows, columns=["event", "distinct_id", "request_id", "post_ids", "post_id", "model_version", "time"]
    )
    result = evaluate_embeddings(**world, recommendation_events=events)
    assert result.ctr is not None
    assert result.ctr.observed.set_index("model_version").loc["v1", "clicks"] == 2
    assert result.ctr.replay.logged_clicks == 1


def test_the_fallback_as_served_is_a_baseline_at_the_cutoff() -> None:
    """With the decay the fallback serves with, the evaluation ranks by it too: engaged users before the cutoff
    over the age at the cutoff ** decay. A decay of 0 is engaged users alone; a steep one puts the young posts
    first."""
    world = _two_group_world()
    posts = world["posts"].copy()
    # Half the posts a year older: a steep decay ranks the younger half above them whatever their engagement.
    posts.loc[posts["post_id"] >= 30, "created_at"] = pd.Timestamp("2024-12-01", tz="UTC")
    world["posts"] = posts
    flat = evaluate_embeddings(**world, fallback_decay=0.0)
    steep = evaluate_embeddings(**world, fallback_decay=3.0)
    assert "fallback" in flat.baselines and "fallback" in flat.intervals.model_minus
    # Decay 0 ranks by distinct engaged users: the popularity baseline counts interaction rows, one per user here.
    assert flat.baselines["fallback"]["recall@20"] == pytest.approx(flat.baselines["popularity"]["recall@20"])
    assert steep.baselines["fallback"]["recall@20"] != pytest.approx(flat.baselines["fallback"]["recall@20"])
    relevant_old = set(world["evaluation"].loc[world["evaluation"]["post_id"] >= 30, "post_id"])
    assert relevant_old, "the world has held-out engagements with the older posts"
    # The steep fallback's top 20 holds the younger posts only (30 of them): none of the older half.
    assert steep.baselines["fallback"]["coverage@20"] <= 30 / 60


def test_users_served_by_the_fallback_are_ranked_by_it_for_the_model_and_the_previous_model() -> None:
    """fallback_users get the fallback's ranking in the model's and the previous model's rows, as
    ml.recommend_posts serves blank users whatever model is promoted; every other user keeps the model's. Naming
    every user makes the model's figures the fallback's; naming them without a fallback is an error."""
    world = _two_group_world()
    own = evaluate_embeddings(**world, fallback_decay=1.0, previous=(world["users"], world["items"]))
    everyone = np.asarray(world["users"].ids)
    served = evaluate_embeddings(
        **world, fallback_decay=1.0, previous=(world["users"], world["items"]), fallback_users=everyone.tolist()
    )
    assert own.metrics["recall@20"] > own.baselines["fallback"]["recall@20"] + 0.2, "the vectors know the groups"
    for metric in ("recall@20", "ndcg@10", "hitrate@20", "mrr"):
        assert served.metrics[metric] == served.baselines["fallback"][metric] == served.baselines["previous"][metric]
    assert served.intervals.model_minus["fallback"]["recall@20"].value == 0.0
    assert (own.users_served_by_fallback, served.users_served_by_fallback) == (0, served.users_evaluated)

    half = everyone[everyone % 4 == 0]
    mixed = evaluate_embeddings(**world, fallback_decay=1.0, fallback_users=half.tolist())
    assert served.metrics["recall@20"] < mixed.metrics["recall@20"] < own.metrics["recall@20"]
    with pytest.raises(ValueError, match="fallback_decay"):
        evaluate_embeddings(**world, fallback_users=half.tolist())
