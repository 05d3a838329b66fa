"""Top-K from score matrices, exclusion of seen items, baselines and segments."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from teamu_assets.evaluation.metrics import ranked_from_lists, ranking_metrics
from teamu_assets.evaluation.rankers import (
    embedding_score_rows,
    evaluate_baselines,
    popularity_counts,
    popularity_scores,
    random_score_rows,
    rank,
    score_evaluation,
    top_k_positions,
)
from teamu_assets.evaluation.rankers import index_pairs as index_pairs_of
from teamu_assets.evaluation.segments import evaluate_segments, segment_items, segment_users


def test_top_k_orders_by_score_and_breaks_ties_by_column() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(top_k_positions(scores, 3), [[1, 3, 2], [0, 1, 2]])


def test_top_k_keeps_the_lowest_columns_of_scores_tied_across_the_kth_place() -> None:
    """A popularity row is mostly ties: the top k is then the same whatever the row's length or layout (before,
    argpartition kept an arbitrary subset of the tied columns)."""
    scores = np.zeros((3, 200))
    scores[:, 150] = 1.0
    scores[1, 7] = -np.inf
    positions = top_k_positions(scores, 20)
    np.testing.assert_array_equal(positions[0], [150, *range(19)])
    np.testing.assert_array_equal(positions[1], [150, *range(7), *range(8, 20)])
    np.testing.assert_array_equal(positions[2], positions[0])


def test_top_k_skips_excluded_and_nan_and_pads() -> None:
    scores = np.array([[0.1, 0.9, np.nan, 0.5]])
    positions = top_k_positions(scores, 6, excluded_rows=np.array([0]), excluded_columns=np.array([1]))
    # Column 1 excluded, column 2 NaN: two recommendable columns, then empty slots.
    np.testing.assert_array_equal(positions, [[3, 0, -1, -1, -1, -1]])


def test_rank_excludes_each_users_seen_items() -> None:
    scores = np.array([[5.0, 4.0, 3.0], [5.0, 4.0, 3.0]])
    ranked = rank([1, 2], [10, 20, 30], scores, exclude={1: {10}, 2: {20, 99}}, k=2)
    np.testing.assert_array_equal(ranked.positions, [[1, 2], [0, 2]])
    with pytest.raises(ValueError, match="shape"):
        rank([1], [10, 20, 30], scores, exclude={}, k=2)


def test_score_evaluation_exclusion_changes_the_hits() -> None:
    # User 1 already saw item 10 (top score); its held-out item is 20, ranked second.
    scores = np.array([[0.9, 0.8, 0.1, 0.0]])
    relevant = {1: {20}}
    without_exclusion = score_evaluation([1], [10, 20, 30, 40], scores, relevant, {}, (1,)).metrics
    with_exclusion = score_evaluation([1], [10, 20, 30, 40], scores, relevant, {1: {10}}, (1,)).metrics
    assert without_exclusion["recall@1"] == 0.0
    assert with_exclusion["recall@1"] == 1.0
    assert with_exclusion["mrr"] == 1.0


def test_score_evaluation_agrees_with_ranking_metrics_on_the_same_lists() -> None:
    rng = np.random.default_rng(3)
    users, items = np.arange(30), np.arange(100, 140)
    scores = rng.normal(size=(30, 40))
    relevant = {int(u): set(rng.choice(items, 3, replace=False).tolist()) for u in users[:25]}
    exclude = {int(u): set(rng.choice(items, 5, replace=False).tolist()) for u in users}
    popularity = popularity_counts(items, rng.choice(items, 300))
    from_scores = score_evaluation(users, items, scores, relevant, exclude, (5, 10), item_popularity=popularity).metrics

    ranked = rank(users, items, scores, exclude, 10)
    lists = {int(u): [int(items[p]) for p in row if p >= 0] for u, row in zip(users, ranked.positions, strict=True)}
    from_lists = ranking_metrics(
        lists,
        relevant,
        catalog=items.tolist(),
        k_values=(5, 10),
        item_popularity=dict(zip(items.tolist(), popularity, strict=True)),
    )
    assert from_scores == pytest.approx(from_lists)
    assert from_scores["users_without_test_items"] == 5


def test_popularity_counts_and_ranker() -> None:
    counts = popularity_counts([10, 20, 30], [20, 20, 30, 99])
    np.testing.assert_array_equal(counts, [0.0, 2.0, 1.0])
    # Popularity ranks 20, 30, 10 for everyone; user 1 saw 20, so it gets 30 first.
    baselines = evaluate_baselines([1, 2], [10, 20, 30], {1: {30}, 2: {10}}, {1: {20}}, counts, k_values=(1, 2), seed=1)
    popularity = baselines["popularity"]
    # recall@1: user 1 hit (30), user 2 miss (20); recall@2: user 1 hit, user 2 miss ([20, 30]).
    assert popularity.metrics["recall@1"] == pytest.approx(1 / 2)
    assert popularity.metrics["recall@2"] == pytest.approx(1 / 2)
    # Per user, in user order: the means above are their averages.
    np.testing.assert_array_equal(popularity.user_ids, [1, 2])
    np.testing.assert_array_equal(popularity.per_user["recall@1"], [1.0, 0.0])
    assert set(baselines) == {"popularity", "random"}


def test_baselines_include_itemitem_and_are_paired_with_the_model() -> None:
    rng = np.random.default_rng(8)
    users, items = np.arange(20), np.arange(100, 130)
    relevant = {int(u): {int(rng.choice(items))} for u in users[:15]}
    itemitem = rng.normal(size=(20, 30))
    baselines = evaluate_baselines(
        users, items, relevant, {}, np.ones(30), (5,), itemitem_scores=itemitem, oracle_scores={"oracle": itemitem * 2}
    )
    assert list(baselines) == ["popularity", "itemitem", "random", "oracle"]
    model = score_evaluation(users, items, rng.normal(size=(20, 30)), relevant, {}, (5,))
    for evaluation in baselines.values():
        np.testing.assert_array_equal(evaluation.user_ids, model.user_ids)
        assert len(evaluation.per_user["recall@5"]) == 15
    # A ranker is its scores' order: the oracle (itemitem x 2) ranks exactly like itemitem.
    np.testing.assert_array_equal(baselines["oracle"].per_user["ndcg@5"], baselines["itemitem"].per_user["ndcg@5"])


def test_random_scores_are_seeded() -> None:
    rows = random_score_rows(4, seed=5)
    np.testing.assert_array_equal(rows(0, 3), random_score_rows(4, seed=5)(0, 3))
    assert not np.array_equal(rows(0, 3), random_score_rows(4, seed=6)(0, 3))
    assert rows(2, 5).shape == (3, 4)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1024])
def test_ranking_in_blocks_equals_ranking_at_once(block_rows: int) -> None:
    rng = np.random.default_rng(21)
    n_users, n_items, dim = 150, 90, 8
    users, items = np.arange(n_users) * 3, np.arange(n_items) + 1000
    user_vectors, item_vectors = rng.normal(size=(n_users, dim)), rng.normal(size=(n_items, dim))
    # Ties too: popularity counts repeat.
    popularity = rng.integers(0, 5, n_items).astype(np.float64)
    exclude = {int(u): set(rng.choice(items, 10, replace=False).tolist()) for u in users[::2]}
    for dense, rows in (
        (user_vectors @ item_vectors.T, embedding_score_rows(user_vectors, item_vectors)),
        (np.tile(popularity, (n_users, 1)), popularity_scores(n_users, popularity)),
    ):
        whole = top_k_positions(dense, 20, *index_pairs_of(users, items, exclude))
        np.testing.assert_array_equal(rank(users, items, rows, exclude, 20, block_rows=block_rows).positions, whole)
        np.testing.assert_array_equal(rank(users, items, dense, exclude, 20, block_rows=block_rows).positions, whole)
    with pytest.raises(ValueError, match="shape"):
        rank(users, items, lambda start, stop: np.zeros((stop - start, 3)), exclude, 5)


def test_oracle_beats_random_when_relevance_follows_the_expected_scores() -> None:
    rng = np.random.default_rng(11)
    n_users, n_items = 60, 80
    users, items = np.arange(n_users), np.arange(n_items)
    expected = rng.gamma(0.3, size=(n_users, n_items))
    probabilities = expected / expected.sum(axis=1, keepdims=True)
    relevant = {int(u): set(rng.choice(items, 4, replace=False, p=probabilities[u]).tolist()) for u in users}
    popularity = np.zeros(n_items)
    baselines = evaluate_baselines(users, items, relevant, {}, popularity, (10,), oracle_scores={"oracle": expected})
    assert baselines["oracle"].metrics["recall@10"] > baselines["random"].metrics["recall@10"] + 0.2
    assert baselines["oracle"].metrics["ndcg@10"] > baselines["random"].metrics["ndcg@10"]


def test_segment_users() -> None:
    train = pd.DataFrame({"user_id": [1, 1, 2], "post_id": [10, 11, 10]})
    assert segment_users(train, [1, 2, 3]) == {"warm": {1, 2}, "cold_start": {3}}


def test_segment_items_by_cutoff_and_locality() -> None:
    cutoff = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    posts = pd.DataFrame(
        {
            "post_id": [1, 2, 3],
            "created_at": pd.to_datetime(["2026-02-01", "2026-03-01", "2026-03-05"], utc=True),
            "is_local": [True, False, None],
        }
    )
    assert segment_items(posts, cutoff) == {
        "new_posts": {2, 3},
        "existing_posts": {1},
        "local_posts": {1},
        "global_posts": {2, 3},
    }


def test_evaluate_segments_by_hand() -> None:
    lists = {"warm1": ["a", "n1"], "cold1": ["n2", "b"]}
    relevant = {"warm1": {"n1", "b"}, "cold1": {"n2"}}
    catalog = ["a", "b", "n1", "n2", "n3"]
    ranked = ranked_from_lists(lists, relevant, catalog)
    segments = evaluate_segments(
        ranked,
        relevant,
        {"warm": {"warm1"}, "cold_start": {"cold1"}},
        {"new_posts": {"n1", "n2", "n3"}},
        k_values=(1, 2),
    )
    # warm1 alone: hit n1 at rank 2 of 2 relevant.
    assert segments["warm"]["recall@2"] == pytest.approx(1 / 2)
    assert segments["warm"]["users_evaluated"] == 1
    # cold1 alone: hit n2 at rank 1 of 1 relevant.
    assert segments["cold_start"]["recall@1"] == 1.0
    # New posts only: warm1 relevant {n1} hit at rank 2, cold1 {n2} hit at rank 1.
    assert segments["new_posts"]["recall@1"] == pytest.approx((0 + 1) / 2)
    assert segments["new_posts"]["recall@2"] == pytest.approx((1 + 1) / 2)
    # Coverage against the 3 new posts: n2 in a top 1; n1 and n2 in a top 2.
    assert segments["new_posts"]["coverage@1"] == pytest.approx(1 / 3)
    assert segments["new_posts"]["coverage@2"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="both"):
        evaluate_segments(ranked, relevant, {"x": set()}, {"x": set()})
