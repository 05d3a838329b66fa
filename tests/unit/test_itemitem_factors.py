"""The item-item block's factors (teamu_assets.model.itemitem): a truncated EASE that an inner product serves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from teamu_assets.evaluation.rankers import fit_ease
from teamu_assets.model.itemitem import fit_itemitem_factors


def _interactions(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """200 users over 40 posts in 4 clusters of 10: each user engages with 5 posts of one cluster."""
    rng = np.random.default_rng(seed)
    users, posts = [], []
    for user in range(200):
        cluster = user % 4
        for post in rng.choice(10, size=5, replace=False):
            users.append(user)
            posts.append(1000 + cluster * 10 + int(post))
    return np.array(users), np.array(posts)


def test_block_scores_are_the_ease_scores_at_full_rank() -> None:
    users, posts = _interactions()
    factors = fit_itemitem_factors(users, posts, rank=40, l2=10.0, max_posts=100, seed=0)
    assert factors is not None and factors.rank == 39  # at most one less than the posts covered
    ease = fit_ease(users, posts, l2=10.0, max_items=100)
    histories = np.array([[1000, 1001, 1002, -1], [1035, 1036, -1, -1]])
    block = factors.user_blocks(histories) @ factors.post_blocks(ease.covered_item_ids).T
    exact = np.stack(
        [ease.weights[pd.Index(ease.covered_item_ids).get_indexer(row[row >= 0])].sum(axis=0) for row in histories]
    )
    # The same ranking up to the block's scale (a positive constant) and the rank-39 truncation of a rank-40 B.
    scale = np.linalg.lstsq(exact.reshape(-1, 1), block.reshape(-1), rcond=None)[0][0]
    assert scale > 0
    np.testing.assert_allclose(block, scale * exact, atol=0.05 * np.abs(block).max())


def test_low_rank_block_ranks_a_users_cluster_first() -> None:
    users, posts = _interactions()
    factors = fit_itemitem_factors(users, posts, rank=4, l2=10.0, max_posts=100, seed=0)
    assert factors is not None and factors.rank == 4
    history = np.array([[1020, 1021, 1022]])  # cluster 2
    scores = factors.user_blocks(history) @ factors.post_blocks(np.arange(1000, 1040)).T
    top = np.argsort(-scores[0])[:10] + 1000
    assert set(top.tolist()) == set(range(1020, 1030))


def test_uncovered_posts_and_padding_add_nothing() -> None:
    users, posts = _interactions()
    factors = fit_itemitem_factors(users, posts, rank=4, l2=10.0, max_posts=100, seed=0)
    assert factors is not None
    np.testing.assert_array_equal(factors.post_blocks(np.array([7])), 0.0)  # 7: never engaged with
    with_padding = factors.user_blocks(np.array([[1000, -1, 7]]))
    np.testing.assert_allclose(with_padding, factors.user_blocks(np.array([[1000]])))


def test_nothing_to_factorize() -> None:
    assert fit_itemitem_factors(np.array([1, 2]), np.array([5, 5]), rank=4, l2=10.0, max_posts=100, seed=0) is None
    users, posts = _interactions()
    assert fit_itemitem_factors(users, posts, rank=0, l2=10.0, max_posts=100, seed=0) is None


def test_post_rows_have_unit_norm_on_average_and_user_scores_unit_spread() -> None:
    """The post side is scaled for the nearest-neighbour index (rows of V alone are ~sqrt(r / posts) long), the
    history side for the weight's meaning; their product, the score, carries both scales' compensation."""
    users, posts = _interactions()
    factors = fit_itemitem_factors(users, posts, rank=4, l2=10.0, max_posts=100, seed=0)
    assert factors is not None
    np.testing.assert_allclose(np.linalg.norm(factors.post_factors, axis=1).mean(), 1.0, rtol=1e-5)
    histories = pd.DataFrame({"user": users, "post": posts}).groupby("user")["post"].apply(list)
    scores = factors.user_blocks(np.array(histories.tolist())) @ factors.post_factors.T
    np.testing.assert_allclose(np.std(scores, axis=1).mean(), 1.0, rtol=1e-3)
