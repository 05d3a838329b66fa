"""The towers' item-item block: EASE fitted on the training interactions, factorized so an inner product serves it.

EASE (evaluation/rankers.py) scores a user's posts as x_u B, the sum of B's rows over the posts the user engaged
with: on sparse real data (a long tail of posts with a handful of engagements each) it beats what a two-tower
model learns by gradient descent, because it solves for every post in closed form. B is dense (posts x posts),
but a truncated SVD B ~ U S V^T keeps most of it at rank 64: a user's block is the sum of the rows of U S over
their history, a post's block is its row of V, and their inner product is the rank-r EASE score, which pgvector
ranks like every other term of the score. The block is fitted after the towers are trained, on the same
interactions; how much of it the served score uses is chosen on validation (train._choose_serving_terms), 0
where it does not help. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from teamu_assets.evaluation.rankers import fit_ease

# Oversampling and power iterations of the randomized SVD (Halko, Martinsson and Tropp 2011): with 2 iterations
# the leading singular vectors of B are as good as a full SVD's at a fraction of its cost (seconds, not minutes,
# at 5,000 posts).
_OVERSAMPLING = 10
_POWER_ITERATIONS = 2


@dataclass(frozen=True)
class ItemItemFactors:
    """history_factors [posts, r] (U S, scaled) and post_factors [posts, r] (V, scaled), rows aligned with
    post_ids: a user's block is the sum of history_factors over the posts of their history. Scaled so that a
    user's block scores over the posts have a standard deviation of about 1 (the mean over training users), so
    the block's weight in the served score means the same on every data set, and so that post rows have a mean
    norm of 1, as the content part of a post vector has (for the approximate nearest-neighbour index)."""

    post_ids: np.ndarray  # int64 [posts]
    history_factors: np.ndarray  # float32 [posts, r]
    post_factors: np.ndarray  # float32 [posts, r]

    @property
    def rank(self) -> int:
        return int(self.post_factors.shape[1])

    def rows(self, post_ids: np.ndarray) -> np.ndarray:
        """Row of each post id in the factor tables; -1 for posts the block does not cover."""
        return self._index.get_indexer(np.asarray(post_ids).ravel()).reshape(np.shape(post_ids))

    def user_blocks(self, histories: np.ndarray) -> np.ndarray:
        """[n, r]: the sum of history_factors over each row's posts (padding and uncovered posts add nothing)."""
        rows = self.rows(histories)
        return self._padded_history_factors[np.where(rows >= 0, rows, len(self.post_ids))].sum(axis=1)

    def post_blocks(self, post_ids: np.ndarray) -> np.ndarray:
        """[n, r]: each post's row of post_factors; zeros for posts the block does not cover."""
        rows = self.rows(post_ids)
        return self._padded_post_factors[np.where(rows >= 0, rows, len(self.post_ids))]

    # Built once per factors, not per call: validation and embedding look blocks up a batch at a time.
    @cached_property
    def _index(self) -> pd.Index:
        return pd.Index(self.post_ids)

    @cached_property
    def _padded_history_factors(self) -> np.ndarray:
        """history_factors with a zero row last, where padding and uncovered posts point."""
        return np.vstack([self.history_factors, np.zeros((1, self.rank), np.float32)])

    @cached_property
    def _padded_post_factors(self) -> np.ndarray:
        return np.vstack([self.post_factors, np.zeros((1, self.rank), np.float32)])


def _randomized_svd(matrix: np.ndarray, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U [n, rank], S [rank], Vt [rank, m]) of the leading singular triplets."""
    rng = np.random.default_rng(seed)
    width = min(rank + _OVERSAMPLING, min(matrix.shape))
    basis = matrix @ rng.standard_normal((matrix.shape[1], width))
    for _ in range(_POWER_ITERATIONS):
        basis, _ = np.linalg.qr(basis)
        basis = matrix @ (matrix.T @ basis)
    basis, _ = np.linalg.qr(basis)
    small_u, singular, vt = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ small_u)[:, :rank], singular[:rank], vt[:rank]


def fit_itemitem_factors(
    user_ids: np.ndarray, post_ids: np.ndarray, *, rank: int, l2: float, max_posts: int, seed: int
) -> ItemItemFactors | None:
    """EASE over the interactions (user_ids[i] engaged with post_ids[i]), truncated to `rank`; None when there is
    nothing to factorize (rank 0, fewer than two posts)."""
    ease = fit_ease(np.asarray(user_ids), np.asarray(post_ids), l2=l2, max_items=max_posts)
    covered = len(ease.covered_item_ids)
    rank = min(rank, covered - 1)
    if rank < 1:
        return None
    u, singular, vt = _randomized_svd(ease.weights.astype(np.float64), rank, seed)
    history_factors, post_factors = u * singular, vt.T
    # The scale: the spread of the training users' block scores over the covered posts.
    users = ease.history_start[:-1] >= 0
    starts, ends = ease.history_start[:-1][users], ease.history_end[:-1][users]
    sample = np.random.default_rng(seed).permutation(len(starts))[:1000]
    blocks = np.stack([history_factors[ease.history_columns[starts[i] : ends[i]]].sum(axis=0) for i in sample])
    spread = float(np.mean(np.std(blocks @ post_factors.T, axis=1)))
    scale = 1.0 / spread if spread > 0 else 1.0
    # pgvector's HNSW graph is built from the post vectors alone. Rows of V have a norm of about sqrt(r / posts)
    # (0.04 on Last.fm) beside the content's unit vector, so the graph would ignore the block and a query led by
    # it would be searched poorly (Last.fm: HNSW served 0.52 of the exact top 50). Post rows get a mean norm of
    # 1 and the history side is divided by as much: every inner product, so every score, is unchanged (0.95).
    post_norm = float(np.mean(np.linalg.norm(post_factors, axis=1)))
    balance = 1.0 / post_norm if post_norm > 0 else 1.0
    return ItemItemFactors(
        post_ids=np.asarray(ease.covered_item_ids, dtype=np.int64),
        history_factors=(history_factors * (scale / balance)).astype(np.float32),
        post_factors=(post_factors * balance).astype(np.float32),
    )
