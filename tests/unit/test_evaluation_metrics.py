"""Ranking metrics against hand-computed cases (the arithmetic is written next to each expectation)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from teamu_assets.evaluation.metrics import ranking_metrics

CATALOG = list("abcdefgh")


def test_accuracy_and_coverage_by_hand() -> None:
    # u1 hits at ranks 2 and 4 of 3 relevant items ("x" is relevant but outside the catalogue: a miss that
    # still counts in the denominator); u2 hits at rank 4 of 1 relevant item.
    recommendations = {"u1": ["a", "b", "c", "d"], "u2": ["e", "a", "f", "g"]}
    relevant = {"u1": {"b", "d", "x"}, "u2": {"g"}}
    metrics = ranking_metrics(recommendations, relevant, catalog=CATALOG, k_values=(1, 2, 4))

    assert metrics["users_evaluated"] == 2
    assert metrics["users_without_test_items"] == 0
    assert metrics["precision@1"] == 0.0
    assert metrics["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert metrics["recall@2"] == pytest.approx((1 / 3 + 0) / 2)
    assert metrics["recall@4"] == pytest.approx((2 / 3 + 1 / 1) / 2)
    # ndcg@2: u1 DCG = 1/log2(3); IDCG over min(2, 3) = 2 hits = 1 + 1/log2(3); u2 has no hit in the top 2.
    ndcg2_u1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert metrics["ndcg@2"] == pytest.approx((ndcg2_u1 + 0) / 2)
    # ndcg@4: u1 DCG = 1/log2(3) + 1/log2(5) = 1.0616; IDCG over min(4, 3) = 3 hits = 1 + 1/log2(3) + 1/2.
    # u2 DCG = 1/log2(5) = 0.4307, IDCG over min(4, 1) = 1 hit = 1.
    ndcg4_u1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / 2)
    ndcg4_u2 = 1 / math.log2(5)
    assert metrics["ndcg@4"] == pytest.approx((ndcg4_u1 + ndcg4_u2) / 2)
    assert metrics["ndcg@4"] == pytest.approx(0.46444, abs=1e-5)
    assert metrics["hitrate@1"] == 0.0
    assert metrics["hitrate@2"] == pytest.approx(0.5)
    assert metrics["hitrate@4"] == pytest.approx(1.0)
    # First hits at ranks 2 and 4.
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    # Distinct items in the top K over an 8-item catalogue: {a, e}, {a, b, e}, {a, b, c, d, e, f, g}.
    assert metrics["coverage@1"] == pytest.approx(2 / 8)
    assert metrics["coverage@2"] == pytest.approx(3 / 8)
    assert metrics["coverage@4"] == pytest.approx(7 / 8)


def test_mrr_is_cut_at_the_largest_k() -> None:
    metrics = ranking_metrics({"u": ["a", "b", "c"]}, {"u": {"c"}}, catalog=CATALOG, k_values=(1, 2))
    assert metrics["mrr"] == 0.0
    metrics = ranking_metrics({"u": ["a", "b", "c"]}, {"u": {"c"}}, catalog=CATALOG, k_values=(1, 3))
    assert metrics["mrr"] == pytest.approx(1 / 3)


def test_users_without_test_items_are_excluded_from_accuracy_but_counted() -> None:
    recommendations = {"u1": ["a", "b"], "u3": ["c", "d"]}
    with_extra = ranking_metrics(recommendations, {"u1": {"a"}, "u3": set()}, catalog=CATALOG, k_values=(2,))
    alone = ranking_metrics({"u1": ["a", "b"]}, {"u1": {"a"}}, catalog=CATALOG, k_values=(2,))
    assert with_extra["users_evaluated"] == 1
    assert with_extra["users_without_test_items"] == 1
    assert with_extra["recall@2"] == alone["recall@2"] == 1.0
    assert with_extra["precision@2"] == alone["precision@2"] == pytest.approx(1 / 2)
    # Coverage describes what everyone is shown: u3's items count ({a, b, c, d} of 8).
    assert with_extra["coverage@2"] == pytest.approx(4 / 8)


def test_a_relevant_user_without_a_list_counts_as_an_empty_list() -> None:
    metrics = ranking_metrics({"u1": ["a"]}, {"u1": {"a"}, "u2": {"b"}}, catalog=CATALOG, k_values=(1,))
    assert metrics["users_evaluated"] == 2
    assert metrics["recall@1"] == pytest.approx((1 + 0) / 2)


def test_k_larger_than_catalogue_and_list() -> None:
    metrics = ranking_metrics({"u": ["a", "b", "c"]}, {"u": {"c"}}, catalog=["a", "b", "c"], k_values=(10,))
    # Empty slots are misses: 1 hit / 10 slots.
    assert metrics["precision@10"] == pytest.approx(1 / 10)
    assert metrics["recall@10"] == 1.0
    # Hit at rank 3: DCG = 1/log2(4) = 0.5; IDCG over min(10, 1) = 1 hit = 1.
    assert metrics["ndcg@10"] == pytest.approx(0.5)
    assert metrics["coverage@10"] == 1.0


def test_empty_inputs_give_zeros_and_counts() -> None:
    metrics = ranking_metrics({}, {}, catalog=[], k_values=(5,))
    assert metrics == {
        "precision@5": 0.0,
        "recall@5": 0.0,
        "ndcg@5": 0.0,
        "hitrate@5": 0.0,
        "mrr": 0.0,
        "coverage@5": 0.0,
        "users_evaluated": 0,
        "users_without_test_items": 0,
    }


def test_empty_recommendation_list_scores_zero() -> None:
    metrics = ranking_metrics({"u": []}, {"u": {"a"}}, catalog=CATALOG, k_values=(3,))
    assert metrics["users_evaluated"] == 1
    assert metrics["recall@3"] == metrics["ndcg@3"] == metrics["mrr"] == metrics["coverage@3"] == 0.0


def test_duplicate_ids_count_once() -> None:
    # ["a", "a", "b"]: the second "a" is an empty slot, so "b" stays at rank 3.
    metrics = ranking_metrics({"u": ["a", "a", "b"]}, {"u": {"a", "b"}}, catalog=CATALOG, k_values=(2, 3))
    assert metrics["precision@2"] == pytest.approx(1 / 2)
    assert metrics["recall@2"] == pytest.approx(1 / 2)
    assert metrics["recall@3"] == 1.0
    # Hits at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5; IDCG over 2 hits = 1 + 1/log2(3).
    assert metrics["ndcg@3"] == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # A relevant item repeated cannot be recalled twice.
    repeated = ranking_metrics({"u": ["a", "a"]}, {"u": {"a"}}, catalog=CATALOG, k_values=(2,))
    assert repeated["recall@2"] == 1.0
    assert repeated["precision@2"] == pytest.approx(1 / 2)
    assert repeated["coverage@2"] == pytest.approx(1 / 8)


def test_invalid_k_values_raise() -> None:
    with pytest.raises(ValueError, match="positive"):
        ranking_metrics({"u": ["a"]}, {"u": {"a"}}, catalog=CATALOG, k_values=(0, 5))


def test_novelty_and_popularity_percentile_by_hand() -> None:
    # Counts a=3, b=1, c=0; total 4 over 3 items; smoothed shares (count + 1) / (4 + 3): 4/7, 2/7, 1/7.
    popularity = {"a": 3, "b": 1}
    metrics = ranking_metrics(
        {"u": ["a", "c"]}, {"u": {"c"}}, catalog=["a", "b", "c"], k_values=(1, 2), item_popularity=popularity
    )
    information_a, information_c = math.log2(7 / 4), math.log2(7)
    assert metrics["novelty@1"] == pytest.approx(information_a)
    assert metrics["novelty@2"] == pytest.approx((information_a + information_c) / 2)
    # Catalogue counts sorted [0, 1, 3]. a (3): 2 below, 3 at or below -> mid-rank (2 + 3) / 2 / 3 = 83.3%;
    # c (0): 0 below, 1 at or below -> 0.5 / 3 = 16.7%.
    assert metrics["popularity_percentile@1"] == pytest.approx(100 * 2.5 / 3)
    assert metrics["popularity_percentile@2"] == pytest.approx((100 * 2.5 / 3 + 100 * 0.5 / 3) / 2)


def test_diversity_by_hand() -> None:
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0])}
    # u1 [a, b, c]: cosines a.b = 0, a.c = b.c = 1/sqrt(2); mean(1 - cos) over the 3 pairs.
    # u2 [c]: one item, no pair: left out of the mean.
    metrics = ranking_metrics(
        {"u1": ["a", "b", "c"], "u2": ["c"]},
        {"u1": {"a"}},
        catalog=["a", "b", "c"],
        k_values=(2, 3),
        item_vectors=vectors,
    )
    assert metrics["diversity@2"] == pytest.approx(1.0)
    assert metrics["diversity@3"] == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    # Identical directions are not diverse at all.
    same = ranking_metrics(
        {"u": ["a", "b"]},
        {"u": {"a"}},
        catalog=["a", "b"],
        k_values=(2,),
        item_vectors={"a": np.array([2.0, 0.0]), "b": np.array([5.0, 0.0])},
    )
    assert same["diversity@2"] == pytest.approx(0.0)


def test_diversity_matches_pairwise_definition_on_random_vectors() -> None:
    rng = np.random.default_rng(7)
    items = [f"i{n}" for n in range(12)]
    vectors = {item: rng.normal(size=5) for item in items}
    lists = {user: list(rng.permutation(items)[:6]) for user in range(4)}
    metrics = ranking_metrics(lists, {0: {"i0"}}, catalog=items, k_values=(6,), item_vectors=vectors)

    def pairwise(items_in_list: list[str]) -> float:
        distances = [
            1 - vectors[x] @ vectors[y] / (np.linalg.norm(vectors[x]) * np.linalg.norm(vectors[y]))
            for x, y in itertools.combinations(items_in_list, 2)
        ]
        return float(np.mean(distances))

    assert metrics["diversity@6"] == pytest.approx(np.mean([pairwise(lst) for lst in lists.values()]))


def test_missing_vector_for_a_recommended_item_raises() -> None:
    with pytest.raises(KeyError, match="'b'"):
        ranking_metrics({"u": ["a", "b"]}, {"u": {"a"}}, catalog=["a", "b"], item_vectors={"a": np.array([1.0])})
