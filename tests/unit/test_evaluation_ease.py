"""The EASE item-item baseline: hand-checkable co-occurrence, the closed form, the item cap, users without
history."""

from __future__ import annotations

import numpy as np
import pytest

from teamu_assets.evaluation.rankers import EASE_POPULARITY_TIE_BREAK, ease_scores, fit_ease, top_k_positions


def test_items_always_consumed_together_rank_each_other_first() -> None:
    # Items 10/20 always go together, and so do 30/40; every user saw one pair. 50 is seen once, alone.
    users = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    items = [10, 20, 10, 20, 30, 40, 30, 40, 30, 40, 50]
    # User 7 saw only 10, user 8 only 40 (scored, not in training).
    scores = ease_scores(
        np.array(users + [7, 8]), np.array(items + [10, 40]), np.array([7, 8]), np.array([10, 20, 30, 40, 50]), l2=1.0
    )
    assert scores.dtype == np.float32 and scores.shape == (2, 5)
    # An item's own weight is 0 (diag(B) = 0): 10's best next item for user 7 is 20, 40's for user 8 is 30.
    assert abs(scores[0, 0]) < 1e-5
    assert scores[0, 1] > max(scores[0, 2], scores[0, 3], scores[0, 4])
    assert scores[1, 2] > max(scores[1, 0], scores[1, 1], scores[1, 4])


def test_matches_the_closed_form() -> None:
    rng = np.random.default_rng(4)
    n_users, n_items, l2 = 40, 12, 3.0
    dense = (rng.random((n_users, n_items)) < 0.3).astype(np.float64)
    rows, columns = np.nonzero(dense)
    # Repeated interactions count once: add every pair a second time.
    train_users, train_items = np.r_[rows, rows], np.r_[columns, columns]
    precision = np.linalg.inv(dense.T @ dense + l2 * np.eye(n_items))
    weights = np.eye(n_items) - precision / np.diag(precision)
    expected = dense @ weights
    scores = ease_scores(train_users, train_items, np.arange(n_users), np.arange(n_items), l2=l2)
    counts = np.bincount(columns, minlength=n_items)
    tie_break = EASE_POPULARITY_TIE_BREAK * counts / counts.max()
    np.testing.assert_allclose(scores, expected + tie_break, atol=1e-5)
    np.testing.assert_allclose(np.diag(weights), 0.0, atol=1e-12)


def test_max_items_keeps_the_most_interacted_items_and_unknown_users_get_popularity() -> None:
    # Interaction counts: 10 -> 4, 20 -> 3, 30 -> 2, 40 -> 1.
    users = np.array([1, 2, 3, 4, 1, 2, 3, 1, 2, 1])
    items = np.array([10, 10, 10, 10, 20, 20, 20, 30, 30, 40])
    scores = ease_scores(users, items, np.array([1, 99]), np.array([40, 30, 20, 10, 77]), max_items=2)
    # Only 10 and 20 are covered: 40, 30 and the never-seen 77 are -inf for everyone.
    assert np.isneginf(scores[:, [0, 1, 4]]).all()
    assert np.isfinite(scores[:, [2, 3]]).all()
    # User 99 has no history: the popularity tie-break alone, 10 above 20.
    assert scores[1, 3] > scores[1, 2] > 0
    np.testing.assert_array_equal(top_k_positions(scores[1:], 3), [[3, 2, -1]])
    with pytest.raises(ValueError, match="max_items"):
        ease_scores(users, items, np.array([1]), np.array([10]), max_items=0)


def test_no_training_interactions_scores_nothing() -> None:
    scores = ease_scores(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([1]), np.array([10, 20]))
    assert np.isneginf(scores).all() and scores.shape == (1, 2)


def test_score_rows_in_blocks_equal_the_whole_matrix() -> None:
    rng = np.random.default_rng(9)
    train_users, train_items = rng.integers(0, 50, 600), rng.integers(0, 40, 600)
    users, items = np.arange(-5, 60), np.arange(45)  # users and items outside training too
    whole = ease_scores(train_users, train_items, users, items, l2=10.0)
    rows = fit_ease(train_users, train_items, l2=10.0).score_rows(users, items)
    np.testing.assert_array_equal(np.vstack([rows(0, 7), rows(7, 40), rows(40, 65)]), whole)
    # Users -5..-1 and 50..59 have no history: their rows are the popularity tie-break alone.
    np.testing.assert_array_equal(whole[0], whole[-1])
