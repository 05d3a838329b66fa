"""Top-K ranking from a (users x items) score matrix, and the baselines a model is compared with.

Every ranker is a score matrix: the model's (query x candidate dot products), popularity (training interaction
counts, the same row for everyone), random (seeded uniform noise), item-item (EASE, a linear item-to-item
model fitted on the training interactions) and oracle (the synthetic generator's expected engagement, an upper
reference that only synthetic data has). One vectorized top-K (argpartition,
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


# EASE's item-item matrix is dense (items x items): past this many items its memory, not the data, decides.
DEFAULT_EASE_MAX_ITEMS = 5000
# Added to every EASE score, times the item's share of the largest training count: too small to reorder
# scores that differ, it ranks equal scores (a user without history: all zero) by popularity.
EASE_POPULARITY_TIE_BREAK = 1e-6


def ease_scores(
    train_user_ids: np.ndarray,
    train_item_ids: np.ndarray,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    *,
    l2: float = 500.0,
    max_items: int = DEFAULT_EASE_MAX_ITEMS,
) -> np.ndarray:
    """EASE item-item scores (Steck 2019, "Embarrassingly Shallow Autoencoders") as float32 [users x items].

    X is the binary (user, item) matrix of the training interactions (train_user_ids[i] engaged with
    train_item_ids[i]; repeats count once). B = I - P / diag(P) with P = (X^T X + l2 I)^-1, so diag(B) = 0, and
    a user's scores are x_u B: the items that co-occur with what the user engaged with, learned by ridge
    regression of each item on all the others.

    Memory is bounded by max_items: B covers only the max_items items with the most training interactions (rows),
    at 8 x max_items^2 bytes for the inversion (200 MB at 5,000). An item outside them (or without training
    interactions) scores -inf, so it is never recommended. A user without training interactions scores 0
    everywhere, and every score carries a popularity tie-break (EASE_POPULARITY_TIE_BREAK), so such a user gets
    the popularity ranking of the covered items."""
    if max_items < 1:
        raise ValueError(f"max_items must be positive, got {max_items}")
    train_users, train_items = np.asarray(train_user_ids), np.asarray(train_item_ids)
    if train_users.shape != train_items.shape:
        raise ValueError(f"train_user_ids {train_users.shape} and train_item_ids {train_items.shape} differ")
    user_array, item_array = np.asarray(user_ids), np.asarray(item_ids)
    scores = np.full((len(user_array), len(item_array)), -np.inf, dtype=np.float32)
    if len(train_items) == 0:
        return scores

    item_codes, train_item_index = pd.factorize(train_items)
    counts = np.bincount(item_codes, minlength=len(train_item_index))
    # The covered items: most interactions first; a stable sort keeps equal counts in first-seen order.
    covered = np.argsort(-counts, kind="stable")[:max_items]
    n_covered = len(covered)
    column_of_code = np.full(len(train_item_index), -1, dtype=np.int64)
    column_of_code[covered] = np.arange(n_covered)

    # Distinct (user, covered item) pairs, grouped by user.
    user_codes, train_user_index = pd.factorize(train_users)
    columns = column_of_code[item_codes]
    kept = columns >= 0
    pair_keys = np.unique(user_codes[kept].astype(np.int64) * n_covered + columns[kept])
    pair_users, pair_columns = pair_keys // n_covered, pair_keys % n_covered
    user_starts = np.flatnonzero(np.r_[True, np.diff(pair_users) != 0])
    user_ends = np.r_[user_starts[1:], len(pair_keys)]

    # X^T X one user at a time: each user adds 1 to every pair of its items. The cost is the sum of squared
    # history lengths, far below a dense users x items product on sparse data, and memory stays items x items.
    gram = np.zeros((n_covered, n_covered), dtype=np.float64)
    for start, end in zip(user_starts.tolist(), user_ends.tolist(), strict=True):
        user_columns = pair_columns[start:end]
        gram[np.ix_(user_columns, user_columns)] += 1.0
    gram[np.diag_indices(n_covered)] += l2
    # The inversion in float64 (the Gram matrix's conditioning grows with its largest count); B then in float32.
    precision = np.linalg.inv(gram)
    del gram
    weights = (precision / -np.diag(precision)).astype(np.float32)
    del precision
    weights[np.diag_indices(n_covered)] = 0.0

    tie_break = (EASE_POPULARITY_TIE_BREAK * counts[covered] / counts[covered[0]]).astype(np.float32)
    covered_scores = np.broadcast_to(tie_break, (len(user_array), n_covered)).copy()
    # x_u B is the sum of B's rows over the user's items.
    # -1: no training interaction with a covered item (x_u = 0).
    group_of_code = np.full(len(train_user_index), -1, dtype=np.int64)
    group_of_code[pair_users[user_starts]] = np.arange(len(user_starts))
    user_codes_scored = pd.Index(train_user_index).get_indexer(user_array)
    groups = np.where(user_codes_scored >= 0, group_of_code[np.maximum(user_codes_scored, 0)], -1)
    for row, group in enumerate(groups.tolist()):
        if group >= 0:
            covered_scores[row] += weights[pair_columns[user_starts[group] : user_ends[group]]].sum(axis=0)

    output_columns = pd.Index(item_array).get_indexer(train_item_index[covered])
    found = output_columns >= 0
    scores[:, output_columns[found]] = covered_scores[:, found]
    return scores


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
