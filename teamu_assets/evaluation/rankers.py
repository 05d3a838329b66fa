"""Top-K ranking from a (users x items) score matrix, and the baselines a model is compared with.

Every ranker is a score matrix: the model's (query x candidate dot products), popularity (training interaction
counts, the same row for everyone), random (seeded uniform noise) and oracle (the synthetic generator's
expected engagement, an upper reference that only synthetic data has). One vectorized top-K (argpartition,
then a sort of the K survivors) turns any of them into ranked lists, with each user's seen items excluded.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from teamu_assets.evaluation.metrics import DEFAULT_K_VALUES, Metrics, RankedItems, evaluate_ranked


def index_pairs(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    items_by_user: Mapping[Hashable, Collection[Hashable]],
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the (user, item) pairs of items_by_user whose user and item are in the matrix axes;
    pairs outside them are dropped."""
    row_of_pair: list[int] = []
    item_of_pair: list[Hashable] = []
    for row, user in enumerate(np.asarray(user_ids).tolist()):
        items = items_by_user.get(user, ())
        row_of_pair.extend([row] * len(items))
        item_of_pair.extend(items)
    # One lookup for all pairs: a get_indexer call per user costs more than the whole top-K.
    columns = pd.Index(item_ids).get_indexer(item_of_pair) if item_of_pair else np.empty(0, dtype=np.int64)
    found = columns >= 0
    return np.asarray(row_of_pair, dtype=np.int64)[found], columns[found].astype(np.int64)


def top_k_positions(
    scores: np.ndarray,
    k: int,
    excluded_rows: np.ndarray | None = None,
    excluded_columns: np.ndarray | None = None,
) -> np.ndarray:
    """Column indices of each row's k highest scores, best first, as int64 (rows, k).

    Excluded (row, column) pairs, NaN and -inf scores are never recommended; a row with fewer than k
    recommendable columns is padded with -1. Equal scores rank the lower column first, so results are
    deterministic."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    candidate_scores = np.array(scores, dtype=np.float64)  # a copy: exclusions are written into it
    if candidate_scores.ndim != 2:
        raise ValueError(f"scores must be a (users, items) matrix, got shape {candidate_scores.shape}")
    n_rows, n_columns = candidate_scores.shape
    candidate_scores[np.isnan(candidate_scores)] = -np.inf
    if excluded_rows is not None and excluded_columns is not None:
        candidate_scores[excluded_rows, excluded_columns] = -np.inf
    positions = np.full((n_rows, k), -1, dtype=np.int64)
    kept = min(k, n_columns)
    if n_rows == 0 or kept == 0:
        return positions
    if kept < n_columns:
        chosen = np.argpartition(-candidate_scores, kept - 1, axis=1)[:, :kept]
    else:
        chosen = np.broadcast_to(np.arange(n_columns), (n_rows, n_columns))
    chosen_scores = np.take_along_axis(candidate_scores, chosen, axis=1)
    # lexsort's last key is the primary one: score descending, then column ascending.
    order = np.lexsort((chosen, -chosen_scores), axis=1)
    ranked = np.take_along_axis(chosen, order, axis=1)
    ranked_scores = np.take_along_axis(chosen_scores, order, axis=1)
    positions[:, :kept] = np.where(np.isneginf(ranked_scores), -1, ranked)
    return positions


def rank(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    scores: np.ndarray,
    exclude: Mapping[Hashable, Collection[Hashable]],
    k: int,
) -> RankedItems:
    """Each user's top k items by score (row u of scores is user_ids[u], column i is item_ids[i]), without the
    items exclude lists for that user (seen in training, own posts)."""
    user_array, item_array = np.asarray(user_ids), np.asarray(item_ids)
    if scores.shape != (len(user_array), len(item_array)):
        raise ValueError(f"scores shape {scores.shape} != (users, items) = ({len(user_array)}, {len(item_array)})")
    excluded_rows, excluded_columns = index_pairs(user_array, item_array, exclude)
    positions = top_k_positions(scores, k, excluded_rows, excluded_columns)
    return RankedItems(user_array, item_array, positions, len(item_array))


def evaluate_scores(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    scores: np.ndarray,
    relevant: Mapping[Hashable, Collection[Hashable]],
    exclude: Mapping[Hashable, Collection[Hashable]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    item_popularity: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> Metrics:
    """Metrics (see metrics.py) of ranking item_ids for each of user_ids by scores [users x items], minus the
    excluded items. Only user_ids are evaluated: a relevant user outside them is not counted.
    item_popularity / item_vectors are aligned with item_ids (adding novelty and diversity)."""
    ranked = rank(user_ids, item_ids, scores, exclude, max(k_values))
    return evaluate_ranked(ranked, relevant, k_values, item_popularity=item_popularity, item_vectors=item_vectors)


def popularity_counts(item_ids: Sequence[Hashable] | np.ndarray, training_item_ids: Iterable[Hashable]) -> np.ndarray:
    """Training interactions per item (one entry per interaction row), aligned with item_ids, as float64."""
    item_index = pd.Index(item_ids)
    found = item_index.get_indexer(list(training_item_ids))
    return np.bincount(found[found >= 0], minlength=len(item_index)).astype(np.float64)


def popularity_scores(n_users: int, item_popularity: np.ndarray) -> np.ndarray:
    """The popularity ranker: every user's row is the items' training interaction counts."""
    return np.broadcast_to(np.asarray(item_popularity, dtype=np.float64), (n_users, len(item_popularity)))


def random_scores(n_users: int, n_items: int, seed: int) -> np.ndarray:
    """The random ranker: seeded uniform scores, the same for the same seed."""
    return np.random.default_rng(seed).random((n_users, n_items))


def evaluate_baselines(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    relevant: Mapping[Hashable, Collection[Hashable]],
    exclude: Mapping[Hashable, Collection[Hashable]],
    item_popularity: np.ndarray,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    seed: int = 0,
    oracle_scores: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> dict[str, Metrics]:
    """{"popularity": metrics, "random": metrics} and "oracle" when the generator's expected-score matrix
    [users x items] is given; evaluated exactly like the model (same users, exclusions and K)."""
    n_users, n_items = len(user_ids), len(item_ids)
    score_matrices = {
        "popularity": popularity_scores(n_users, item_popularity),
        "random": random_scores(n_users, n_items, seed),
    }
    if oracle_scores is not None:
        score_matrices["oracle"] = oracle_scores
    return {
        name: evaluate_scores(
            user_ids,
            item_ids,
            matrix,
            relevant,
            exclude,
            k_values,
            item_popularity=item_popularity,
            item_vectors=item_vectors,
        )
        for name, matrix in score_matrices.items()
    }
