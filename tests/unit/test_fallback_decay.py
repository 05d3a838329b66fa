"""The popularity fallback's decay chosen on validation: steep where people engage with what is new, none where
they engage with the catalogue's hits; the user's own posts and history never count as hits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from teamu_assets.evaluation.fallback import FALLBACK_DECAYS, choose_fallback_decay, fallback_scores

AS_OF = pd.Timestamp("2026-06-01", tz="UTC")


def _posts(ages_days: list[float], author: int = 999) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "post_id": np.arange(1, len(ages_days) + 1, dtype=np.int64),
            "user_id": np.full(len(ages_days), author, dtype=np.int64),
            "created_at": [AS_OF - pd.Timedelta(days=age) for age in ages_days],
        }
    )


def _views(counts: dict[int, int], first_user: int = 1000) -> pd.DataFrame:
    """counts[post] views of it by distinct users numbered from first_user."""
    rows = [(first_user + i, post, "view") for post, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["user_id", "post_id", "kind"])


# 40 old hits (a year old, 50 views each) and 40 new posts (a day old, 5 views each).
OLD, NEW = list(range(1, 41)), list(range(41, 81))
POSTS = _posts([365.0] * 40 + [1.0] * 40)
HISTORY = _views({**dict.fromkeys(OLD, 50), **dict.fromkeys(NEW, 5)})


def _targets(posts: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.arange(1, len(posts) + 1, dtype=np.int64), "post_id": posts})


def test_engagement_with_new_posts_chooses_a_decay() -> None:
    choice = choose_fallback_decay(HISTORY, _targets(NEW[:20]), POSTS, AS_OF)
    assert choice is not None
    assert choice.decay == 0.5  # the smallest of the decays that rank the new posts first
    assert choice.recalls[0.0] == 0.0  # all-time popularity ranks the 40 old hits first
    assert choice.recalls[choice.decay] == 1.0
    assert set(choice.recalls) == set(FALLBACK_DECAYS)
    assert choice.users == 20


def test_engagement_with_old_hits_chooses_all_time_popularity() -> None:
    choice = choose_fallback_decay(HISTORY, _targets(OLD[:20]), POSTS, AS_OF)
    assert choice is not None
    assert choice.decay == 0.0
    assert choice.recalls[0.0] == 1.0
    assert choice.recalls[3.0] == 0.0


def test_own_posts_history_and_later_posts_are_no_candidates() -> None:
    """The user's own post and the posts they engaged with before are skipped, as serving skips them; so is a post
    created after the cutoff (however popular it became), which no validation engagement could have reached."""
    posts = pd.concat(
        [_posts([10.0] * 25), pd.DataFrame({"post_id": [26], "user_id": [999], "created_at": [AS_OF]})],
        ignore_index=True,
    )
    posts.loc[posts["post_id"] == 1, "user_id"] = 7
    # Post p has 200 - p views: post 1 is the most viewed; post 26 (created at the cutoff) more than any.
    history = pd.concat(
        [_views({p: 200 - p for p in range(1, 26)}), _views({26: 500}), _views({2: 1}, first_user=7)],
        ignore_index=True,
    )
    # User 7 wrote post 1 and viewed post 2: their top 20 is posts 3 to 22, so post 22 is a hit and 23 is not.
    hit = choose_fallback_decay(history, pd.DataFrame({"user_id": [7], "post_id": [22]}), posts, AS_OF, k=20)
    miss = choose_fallback_decay(history, pd.DataFrame({"user_id": [7], "post_id": [23]}), posts, AS_OF, k=20)
    assert hit is not None and miss is not None
    assert set(hit.recalls.values()) == {1.0}
    assert set(miss.recalls.values()) == {0.0}


def test_no_target_among_the_posts_before_the_cutoff_gives_no_choice() -> None:
    later = pd.DataFrame({"post_id": [81], "user_id": [999], "created_at": [AS_OF + pd.Timedelta(days=1)]})
    posts = pd.concat([POSTS, later], ignore_index=True)
    assert choose_fallback_decay(HISTORY, pd.DataFrame({"user_id": [1], "post_id": [81]}), posts, AS_OF) is None


def test_fallback_scores_are_the_served_formula() -> None:
    assert fallback_scores(np.array([10.0, 10.0]), np.array([-2.0, 3.0]), 1.5) == pytest.approx([10.0, 10.0 / 8.0])


def test_a_person_counts_once_however_often_they_engage() -> None:
    """Post 1 has one reader who came back 30 times, posts 2 to 21 two readers each: by engaged users post 1 is
    last, so post 21 is in the top 20 (counting rows, post 1 would lead and push it out)."""
    posts = _posts([10.0] * 21)
    one_reader = pd.DataFrame({"user_id": [500] * 30, "post_id": [1] * 30, "kind": ["view"] * 30})
    history = pd.concat([one_reader, _views(dict.fromkeys(range(2, 22), 2))], ignore_index=True)
    choice = choose_fallback_decay(history, pd.DataFrame({"user_id": [7], "post_id": [21]}), posts, AS_OF, k=20)
    assert choice is not None and set(choice.recalls.values()) == {1.0}
