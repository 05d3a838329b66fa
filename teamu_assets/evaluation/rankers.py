"""Top-K ranking from a (users x items) score matrix, and the baselines a model is compared with.

Every ranker is a score matrix: the model's (query x candidate dot products), popularity (training interaction
counts, the same row for everyone), random (seeded uniform noise), item-item (EASE, a linear item-to-item
model fitted on the training interactions) and oracle (the synthetic generator's expected engagement, an upper
reference that only synthetic data has). One vectorized top-K (a partition for each row's kth score, the columns
above it and the lowest tied with it, then a sort of the K survivors) turns any of them into ranked lists, with
each user's seen items excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from teamu_assets.evaluation.metrics import (
    DEFAULT_K_VALUES,
    RankedEvaluation,
    RankedItems,
    evaluate_ranked_per_user,
)

# A score matrix given a block of rows at a time: rows(start, stop) -> scores [stop - start, items] of the users
# start..stop-1, so a ranker never needs every user's scores at once.
ScoreRows = Callable[[int, int], np.ndarray]
Scores = np.ndarray | ScoreRows
# Users ranked at a time: bounds the working memory to this many rows of items.
DEFAULT_BLOCK_ROWS = 1024


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
        # The kept columns: every score above the row's kth highest, then the lowest columns of those equal to
        # it. argpartition alone would pick an arbitrary subset of the scores tied across the kth place.
        kth = -np.partition(-candidate_scores, kept - 1, axis=1)[:, kept - 1 : kept]
        above = candidate_scores > kth
        tied = candidate_scores == kth
        needed = kept - above.sum(axis=1, keepdims=True)
        taken = above | (tied & (np.cumsum(tied, axis=1) <= needed))
        chosen = np.nonzero(taken)[1].reshape(n_rows, kept)
    else:
        chosen = np.broadcast_to(np.arange(n_columns), (n_rows, n_columns))
    chosen_scores = np.take_along_axis(candidate_scores, chosen, axis=1)
    # lexsort's last key is the primary one: score descending, then column ascending.
    order = np.lexsort((chosen, -chosen_scores), axis=1)
    ranked = np.take_along_axis(chosen, order, axis=1)
    ranked_scores = np.take_along_axis(chosen_scores, order, axis=1)
    positions[:, :kept] = np.where(np.isneginf(ranked_scores), -1, ranked)
    return positions


def _score_block(scores: Scores, start: int, stop: int, n_items: int) -> np.ndarray:
    block = scores[start:stop] if isinstance(scores, np.ndarray) else scores(start, stop)
    if block.shape != (stop - start, n_items):
        raise ValueError(f"score rows {start}:{stop} have shape {block.shape}, expected ({stop - start}, {n_items})")
    return block


def rank(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    scores: Scores,
    exclude: Mapping[Hashable, Collection[Hashable]],
    k: int,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> RankedItems:
    """Each user's top k items by score (row u of scores is user_ids[u], column i is item_ids[i]), without the
    items exclude lists for that user (seen in training, own posts).

    Ranked block_rows users at a time: the working copy top_k_positions makes (float64, exclusions written into
    it) and, for a ScoreRows ranker, the scores themselves take block_rows x items, not users x items. Each
    row's top k depends on that row alone, so the result does not depend on block_rows."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    user_array, item_array = np.asarray(user_ids), np.asarray(item_ids)
    n_users, n_items = len(user_array), len(item_array)
    if isinstance(scores, np.ndarray) and scores.shape != (n_users, n_items):
        raise ValueError(f"scores shape {scores.shape} != (users, items) = ({n_users}, {n_items})")
    # index_pairs walks the users in order: the excluded rows are sorted, and a block's pairs are one slice.
    excluded_rows, excluded_columns = index_pairs(user_array, item_array, exclude)
    positions = np.full((n_users, k), -1, dtype=np.int64)
    for start in range(0, n_users, block_rows):
        stop = min(start + block_rows, n_users)
        first, last = np.searchsorted(excluded_rows, [start, stop])
        positions[start:stop] = top_k_positions(
            _score_block(scores, start, stop, n_items),
            k,
            excluded_rows[first:last] - start,
            excluded_columns[first:last],
        )
    return RankedItems(user_array, item_array, positions, n_items)


def score_evaluation(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    scores: Scores,
    relevant: Mapping[Hashable, Collection[Hashable]],
    exclude: Mapping[Hashable, Collection[Hashable]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    item_popularity: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> RankedEvaluation:
    """Metrics (see metrics.py) of ranking item_ids for each of user_ids by scores [users x items], minus the
    excluded items, with each evaluated user's accuracy values. Only user_ids are evaluated: a relevant user
    outside them is not counted. item_popularity / item_vectors are aligned with item_ids (adding novelty and
    diversity)."""
    ranked = rank(user_ids, item_ids, scores, exclude, max(k_values))
    return evaluate_ranked_per_user(
        ranked, relevant, k_values, item_popularity=item_popularity, item_vectors=item_vectors
    )


def popularity_counts(item_ids: Sequence[Hashable] | np.ndarray, training_item_ids: Iterable[Hashable]) -> np.ndarray:
    """Training interactions per item (one entry per interaction row), aligned with item_ids, as float64."""
    item_index = pd.Index(item_ids)
    found = item_index.get_indexer(list(training_item_ids))
    return np.bincount(found[found >= 0], minlength=len(item_index)).astype(np.float64)


def seen_or_own(interactions: pd.DataFrame, posts: pd.DataFrame) -> dict[int, set[int]]:
    """Per user, what no ranking offers them: the posts they engaged with in `interactions` (user_id, post_id)
    and the posts they wrote (`posts`: user_id as author, post_id)."""
    excluded: dict[int, set[int]] = {}
    for frame in (interactions, posts):
        for user, post_ids in frame.groupby("user_id")["post_id"]:
            excluded.setdefault(int(user), set()).update(map(int, post_ids))
    return excluded


def popularity_scores(n_users: int, item_popularity: np.ndarray) -> np.ndarray:
    """The popularity ranker: every user's row is the items' training interaction counts."""
    return np.broadcast_to(np.asarray(item_popularity, dtype=np.float64), (n_users, len(item_popularity)))


def random_score_rows(n_items: int, seed: int) -> ScoreRows:
    """The random ranker: seeded uniform scores, the same rows for the same seed (each block of rows draws from
    a generator seeded with the seed and the block's first row)."""

    def rows(start: int, stop: int) -> np.ndarray:
        return np.random.default_rng([seed, start]).random((stop - start, n_items))

    return rows


def embedding_score_rows(user_vectors: np.ndarray, item_vectors: np.ndarray) -> ScoreRows:
    """A two-tower ranker: the dot products of a block of user vectors (rows aligned with the ranked users) with
    every item vector."""
    item_transposed = np.asarray(item_vectors).T

    def rows(start: int, stop: int) -> np.ndarray:
        return user_vectors[start:stop] @ item_transposed

    return rows


# EASE's item-item matrix is dense (items x items): past this many items its memory, not the data, decides.
DEFAULT_EASE_MAX_ITEMS = 5000
# Added to every EASE score, times the item's share of the largest training count: too small to reorder
# scores that differ, it ranks equal scores (a user without history: all zero) by popularity.
EASE_POPULARITY_TIE_BREAK = 1e-6


@dataclass(frozen=True, eq=False)
class EaseModel:
    """A fitted EASE model: the item-item weights over the covered items and each training user's history."""

    covered_item_ids: np.ndarray  # (covered,), most training interactions first
    weights: np.ndarray  # float32 (covered, covered), zero diagonal
    tie_break: np.ndarray  # float32 (covered,)
    user_index: pd.Index  # training users
    history_start: np.ndarray  # per training user: its slice of history_columns, -1 without covered items;
    history_end: np.ndarray  # then a -1 sentinel
    history_columns: np.ndarray  # covered-item columns of each user's distinct items, grouped by user

    def score_rows(self, user_ids: np.ndarray, item_ids: np.ndarray) -> ScoreRows:
        """Row blocks of the float32 [users x items] score matrix (see ease_scores)."""
        user_array, item_array = np.asarray(user_ids), np.asarray(item_ids)
        output_columns = pd.Index(item_array).get_indexer(self.covered_item_ids)
        found = output_columns >= 0
        output_columns, covered_columns = output_columns[found], np.flatnonzero(found)
        # An unknown user's code is -1: the sentinel entry at the end of the history bounds.
        codes = self.user_index.get_indexer(user_array)
        starts, ends = self.history_start[codes], self.history_end[codes]

        def rows(start: int, stop: int) -> np.ndarray:
            block = np.full((stop - start, len(item_array)), -np.inf, dtype=np.float32)
            covered_scores = np.broadcast_to(self.tie_break, (stop - start, len(self.tie_break))).copy()
            for row, (first, last) in enumerate(
                zip(starts[start:stop].tolist(), ends[start:stop].tolist(), strict=True)
            ):
                if first >= 0:  # x_u B is the sum of B's rows over the user's items
                    covered_scores[row] += self.weights[self.history_columns[first:last]].sum(axis=0)
            block[:, output_columns] = covered_scores[:, covered_columns]
            return block

        return rows


def fit_ease(
    train_user_ids: np.ndarray,
    train_item_ids: np.ndarray,
    *,
    l2: float = 500.0,
    max_items: int = DEFAULT_EASE_MAX_ITEMS,
) -> EaseModel:
    """Fit EASE on the training interactions (see ease_scores)."""
    if max_items < 1:
        raise ValueError(f"max_items must be positive, got {max_items}")
    train_users, train_items = np.asarray(train_user_ids), np.asarray(train_item_ids)
    if train_users.shape != train_items.shape:
        raise ValueError(f"train_user_ids {train_users.shape} and train_item_ids {train_items.shape} differ")
    item_codes, train_item_index = pd.factorize(train_items)
    counts = np.bincount(item_codes, minlength=len(train_item_index))
    # The covered items: most interactions first; a stable sort keeps equal counts in first-seen order.
    covered = np.argsort(-counts, kind="stable")[:max_items]
    n_covered = len(covered)
    column_of_code = np.full(len(train_item_index), -1, dtype=np.int64)
    column_of_code[covered] = np.arange(n_covered)

    # Distinct (user, covered item) pairs, grouped by user.
    user_codes, user_index = pd.factorize(train_users)
    columns = column_of_code[item_codes]
    kept = columns >= 0
    pair_keys = np.unique(user_codes[kept].astype(np.int64) * max(n_covered, 1) + columns[kept])
    pair_users, pair_columns = pair_keys // max(n_covered, 1), pair_keys % max(n_covered, 1)
    group_starts = np.flatnonzero(np.diff(pair_users, prepend=-1) != 0)
    group_ends = np.append(group_starts[1:], len(pair_keys)) if len(pair_keys) else group_starts

    # X^T X one user at a time: each user adds 1 to every pair of its items. The cost is the sum of squared
    # history lengths, far below a dense users x items product on sparse data, and memory stays items x items.
    gram = np.zeros((n_covered, n_covered), dtype=np.float64)
    for first, last in zip(group_starts.tolist(), group_ends.tolist(), strict=True):
        user_columns = pair_columns[first:last]
        gram[np.ix_(user_columns, user_columns)] += 1.0
    gram[np.diag_indices(n_covered)] += l2
    # The inversion in float64 (the Gram matrix's conditioning grows with its largest count); B then in float32.
    precision = np.linalg.inv(gram)
    del gram
    weights = (precision / -np.diag(precision)).astype(np.float32)
    del precision
    weights[np.diag_indices(n_covered)] = 0.0

    # One entry per training user plus a final -1 sentinel (for users outside training, see score_rows).
    history_start = np.full(len(user_index) + 1, -1, dtype=np.int64)
    history_end = np.full(len(user_index) + 1, -1, dtype=np.int64)
    history_start[pair_users[group_starts]] = group_starts
    history_end[pair_users[group_starts]] = group_ends
    top_count = counts[covered[0]] if n_covered else 1
    return EaseModel(
        covered_item_ids=np.asarray(train_item_index[covered]),
        weights=weights,
        tie_break=(EASE_POPULARITY_TIE_BREAK * counts[covered] / top_count).astype(np.float32),
        user_index=pd.Index(user_index),
        history_start=history_start,
        history_end=history_end,
        history_columns=pair_columns,
    )


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
    the popularity ranking of the covered items. fit_ease + EaseModel.score_rows give the same scores a block
    of users at a time."""
    model = fit_ease(train_user_ids, train_item_ids, l2=l2, max_items=max_items)
    return model.score_rows(user_ids, item_ids)(0, len(user_ids))


def evaluate_baselines(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    relevant: Mapping[Hashable, Collection[Hashable]],
    exclude: Mapping[Hashable, Collection[Hashable]],
    item_popularity: np.ndarray,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    seed: int = 0,
    itemitem_scores: Scores | None = None,
    oracle_scores: Mapping[str, Scores] | None = None,
    item_vectors: np.ndarray | None = None,
) -> dict[str, RankedEvaluation]:
    """ "popularity" and "random", "itemitem" when the item-item model's scores are given, and one ranker per
    entry of oracle_scores (name -> the generator's expected scores [users x items]: "oracle", and
    "knowable_oracle" for what could be known at the cutoff); evaluated exactly like the model (same users,
    exclusions and K), so their per-user values are paired with the model's."""
    score_sources: dict[str, Scores] = {"popularity": popularity_scores(len(user_ids), item_popularity)}
    if itemitem_scores is not None:
        score_sources["itemitem"] = itemitem_scores
    score_sources["random"] = random_score_rows(len(item_ids), seed)
    score_sources.update(oracle_scores or {})
    return {
        name: score_evaluation(
            user_ids,
            item_ids,
            scores,
            relevant,
            exclude,
            k_values,
            item_popularity=item_popularity,
            item_vectors=item_vectors,
        )
        for name, scores in score_sources.items()
    }
