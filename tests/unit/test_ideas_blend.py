"""The ideas ranker's blend (teamu_assets.ideas.blend): chosen on a validation slice, the tower where it predicts
engagement and the author's record where only that does; applied to a team's ideas without reordering them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from teamu_assets.evaluation.metrics import roc_auc
from teamu_assets.ideas.blend import TOWER_ONLY, RankerBlend, author_priors, choose_blend
from teamu_assets.ideas.generate import Idea
from teamu_assets.ideas.rank import rank_ideas
from tests.unit.test_ideas import SUCCESSFUL_CONTENTS, make_context

POSTS = 60


def slice_where(*, tower_informative: bool) -> pd.DataFrame:
    """Validation posts whose engagement one predictor orders exactly and the other not at all (noise spread
    over orders of magnitude, so any weight on it costs)."""
    rng = np.random.default_rng(5)
    engagement = rng.permutation(POSTS).astype(float)
    exact, noise = np.exp(engagement / 10.0), np.exp(rng.normal(0.0, 3.0, POSTS))
    if tower_informative:
        return pd.DataFrame({"engagement": engagement, "tower": exact, "prior": noise * 100})
    return pd.DataFrame({"engagement": engagement, "tower": noise, "prior": engagement})


def test_the_validation_picks_the_author_prior_when_the_tower_is_uninformative() -> None:
    blend = choose_blend(slice_where(tower_informative=False), slice_label="fixture")
    assert blend.tower_weight == 0.0
    figures = blend.validation["by_tower_weight"]
    assert figures["0"]["auc"] == 1.0 and figures["1"]["auc"] < 0.75
    assert "tower weight 0 on the 60 new posts of fixture" in blend.reason


def test_the_validation_picks_the_tower_when_it_is_informative() -> None:
    posts = slice_where(tower_informative=True)
    blend = choose_blend(posts)
    assert blend.tower_weight == 1.0
    assert blend.validation["by_tower_weight"]["0"]["auc"] < 0.75
    # The tower alone is its own figures, the engagements it predicts.
    np.testing.assert_array_equal(blend.score(posts["tower"].to_numpy(), posts["prior"].to_numpy()), posts["tower"])


def test_too_few_validation_posts_leave_the_tower_alone() -> None:
    posts = slice_where(tower_informative=False).head(10)
    blend = choose_blend(posts)
    assert blend.tower_weight == 1.0 and "too few" in blend.reason
    flat = slice_where(tower_informative=False).assign(engagement=1.0)
    assert choose_blend(flat).tower_weight == 1.0


def test_the_prior_is_put_in_the_towers_units() -> None:
    posts = slice_where(tower_informative=False)
    blend = choose_blend(posts)
    tower, prior = posts["tower"].to_numpy(), posts["prior"].to_numpy()
    # Prior alone, its scores agree with the tower's in geometric mean over the validation posts, and rank as it.
    scores = blend.score(tower, prior)
    assert np.log(scores).mean() == pytest.approx(np.log(tower).mean())
    high = posts["engagement"] > posts["engagement"].median()
    assert roc_auc(high, scores) == roc_auc(high, prior) == 1.0
    half = replace(blend, tower_weight=0.5).score(tower, prior)
    assert half == pytest.approx(np.sqrt(tower * scores))


def test_author_priors_count_distinct_engaged_users_per_earlier_post() -> None:
    live = pd.DataFrame({"post_id": [1, 2, 3], "user_id": [7, 7, 8]})
    before = pd.DataFrame({"post_id": [1, 1, 1, 2, 3, 9], "user_id": [20, 20, 21, 22, 23, 24], "kind": ["view"] * 6})
    per_post, total = author_priors(before, live, pd.Series([7, 8, 5]))
    # Author 7: users 20 and 21 on post 1 (20 twice), 22 on post 2: 3 over 2 posts. Author 5 posted nothing.
    assert per_post.tolist() == [1.5, 1.0, 0.0] and total.tolist() == [3.0, 1.0, 0.0]


def test_a_prior_only_blend_keeps_the_towers_order_within_a_team() -> None:
    context = make_context()
    ideas = [Idea("Low", ""), Idea("High", "")]
    vectors = {"Low": [0, 1, 0, 0, 0, 0], "High": [1, 0, 0, 0, 0, 0], **SUCCESSFUL_CONTENTS}
    audience = np.tile([1.0, 0, 0, 0, 0, 0, 0.0, 1.0], (5, 1)).astype(np.float32)
    context = replace(context, audience=replace(context.audience, vectors=audience))

    def embed(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
        return np.array([[*vectors[title], 1.0, 0.0] for title in frame["title"]], np.float32)

    prior_only = RankerBlend(0.0, 2.0, "fixture")
    ranked = rank_ideas(ideas, context, embed, np.zeros(5), prior_only, prior=3.0)
    assert [r.idea.title for r in ranked] == ["High", "Low"]
    # Both scored by the team's record alone (2 x (1 + 3)); the tower's own figures are kept beside.
    assert [r.score for r in ranked] == pytest.approx([8.0, 8.0])
    assert ranked[0].tower_score == pytest.approx(5 * np.e) and ranked[1].tower_score == pytest.approx(5.0)
    tower_only = rank_ideas(ideas, context, embed, np.zeros(5), TOWER_ONLY, prior=3.0)
    assert [r.score for r in tower_only] == [r.tower_score for r in tower_only]


def test_one_author_leaves_the_tower_and_a_json_record() -> None:
    # Every post by one account (Last.fm's catalogue): the prior is one constant, the prior alone ties every post.
    posts = slice_where(tower_informative=True).assign(prior=4.0)
    blend = choose_blend(posts)
    assert blend.tower_weight == 1.0
    figures = blend.validation["by_tower_weight"]
    assert figures["0"] == {"auc": 0.5, "spearman": None}
    assert RankerBlend(**json.loads(json.dumps(blend.to_dict(), allow_nan=False))) == blend


def test_the_cold_start_scores_new_posts_with_the_users_as_they_were_and_weighed_by_engagement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cold_start embeds the users as of the slice's start (the projects they started later trimmed from their
    profiles) and weighs each user's share by their engagement before it. Every post, live or new, gets the same
    vector here, so each user's share of a new post is 1 / live posts (the softmax is over the live ones)."""
    from teamu_assets.ideas.blend import cold_start
    from teamu_assets.ideas.context import engagement_rates
    from teamu_assets.model import train
    from tests.unit.model_fixtures import make_world

    world = make_world(warm_users=20, cold_users=5, posts=60, events_per_user=8)
    start = world.cutoff
    planner = int(world.user_features["user_id"].iloc[0])
    users = world.user_features.copy()
    users["project_titles"] = [["Early lab", "Later lab"] if u == planner else [] for u in users["user_id"]]
    projects = pd.DataFrame(
        {
            "project_id": [1, 2],
            "user_id": [planner, planner],
            "title": ["Early lab", "Later lab"],
            "created_at": [start - pd.Timedelta(days=30), start + pd.Timedelta(days=1)],
        }
    )
    seen: dict[str, pd.DataFrame] = {}

    def embed_users(model_dir: object, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        seen["users"] = frame
        return frame["user_id"].to_numpy(np.int64), np.zeros((len(frame), 4), np.float32)

    def embed_posts(model_dir: object, frame: pd.DataFrame, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        return frame["post_id"].to_numpy(np.int64), np.zeros((len(frame), 4), np.float32)

    monkeypatch.setattr(train, "embed_users", embed_users)
    monkeypatch.setattr(train, "embed_posts", embed_posts)
    end = world.interactions["occurred_at"].max()
    result = cold_start(
        Path("unused"), world.interactions, users, world.post_features, start, end, pd.Timedelta(days=3), None, projects
    )
    profile = seen["users"].set_index("user_id")["project_titles"]
    assert list(profile[planner]) == ["Early lab"]
    assert not result.posts.empty
    before = world.interactions.loc[world.interactions["occurred_at"] < start]
    rates = engagement_rates(before, seen["users"]["user_id"].to_numpy(np.int64), start)
    assert rates.sum() != pytest.approx(result.users)  # not one engagement each: the weighing shows
    np.testing.assert_allclose(result.posts["tower"], rates.sum() / result.live_posts, rtol=1e-9)
    np.testing.assert_allclose(result.posts["tower_alike"], result.users / result.live_posts, rtol=1e-9)
