"""Top-K ranking metrics: accuracy (precision, recall, NDCG, hit rate, MRR) and beyond accuracy (catalogue
coverage, intra-list diversity, novelty and popularity bias).

Definitions (binary relevance; K counts list slots, best first):
- precision@K = hits in the top K / K. A list shorter than K (a small catalogue, everything else excluded)
  counts its empty slots as misses, so precision@K of a K larger than the catalogue stays below 1.
- recall@K = hits in the top K / |relevant items of the user|.
- ndcg@K = DCG@K / IDCG@K with DCG@K = sum over hit ranks r (1-based) of 1 / log2(r + 1) and IDCG@K the DCG
  of a list with min(K, |relevant|) hits on top.
- hitrate@K = 1 if the top K holds at least one relevant item, else 0.
- mrr = 1 / rank of the first relevant item within the top max(K) slots, 0 if none is there: it is cut at the
  largest K evaluated, so a model that scores every item is not rewarded for a hit at rank 1,000.
- coverage@K = distinct catalogue items in anyone's top K / catalogue size.
- diversity@K = mean over lists of the mean pairwise (1 - cosine similarity) of the item vectors in the top K
  (lists with fewer than two items have no pairs and are left out; a zero vector has cosine 0 to everything).
- novelty@K = mean self-information -log2(share of training interactions) of the items in the top K, with the
  shares Laplace-smoothed ((count + 1) / (total + items)) so a post nobody has seen yet has a finite value.
- popularity_percentile@K = mean percentile (0 least, 100 most popular; ties share their mid-rank) of the
  top-K items' training interaction counts among the catalogue's: how much the model leans on popular posts.

Accuracy metrics average over users with at least one relevant item ("users_evaluated"); users without test
items are left out and counted ("users_without_test_items"). Beyond-accuracy metrics describe what every
ranked user is shown, test items or not. Averages over nobody are 0.0 (with the counts saying so): the
metrics land in jsonb columns, which reject NaN.

A repeated item in a list is counted once: its later slots recommend nothing new and are empty slots.

Beside them, two scores of a predictor against an outcome (the post ideas' blend and its benchmark): roc_auc of
binary labels and spearman's rank correlation; both NaN where undefined (one class only, constant ranks).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The cut-offs every ranking metric is computed at (the evaluation, its segments and baselines, the benchmarks).
DEFAULT_K_VALUES: tuple[int, ...] = (5, 10, 20, 50)
# The cut-off a model is judged at, one of DEFAULT_K_VALUES: the promotion gate's metric, the validation recall
# that early stopping watches (TrainParams.validation_k), the CTR replay's list length and the summary's columns.
GATE_K = 20
GATE_METRIC = f"recall@{GATE_K}"
# The ranking-quality figure reported beside the gate's metric, with a bootstrap interval.
HEADLINE_NDCG = "ndcg@10"
# Users per block when gathering item vectors: bounds memory to block x K x dimension floats.
_DIVERSITY_USER_BLOCK = 256

Metrics = dict[str, float | int]
# A metric's value for each evaluated user (precision@K, recall@K, ndcg@K, hitrate@K, mrr), float64.
PerUser = dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class RankedItems:
    """Ranked recommendation lists in index form.

    positions[u, r] is the index into item_ids of user u's item at rank r (0-based), -1 for an empty slot.
    The first catalog_size entries of item_ids are the catalogue; ids after them are items that appear only in
    lists or relevance sets (they can be hits but do not count towards coverage)."""

    user_ids: np.ndarray  # (users,)
    item_ids: np.ndarray  # (items,), object or integer dtype
    positions: np.ndarray  # int64 (users, slots)
    catalog_size: int

    def subset(self, user_mask: np.ndarray) -> RankedItems:
        """The lists of the users selected by a boolean mask over user_ids."""
        return RankedItems(self.user_ids[user_mask], self.item_ids, self.positions[user_mask], self.catalog_size)


def _validated_k_values(k_values: Sequence[int]) -> tuple[int, ...]:
    k_sorted = tuple(sorted({int(k) for k in k_values}))
    if not k_sorted or k_sorted[0] < 1:
        raise ValueError(f"k_values must be positive integers, got {list(k_values)}")
    return k_sorted


def _relevance(ranked: RankedItems, relevant: Mapping[Hashable, Collection[Hashable]]) -> tuple[np.ndarray, np.ndarray]:
    """(relevant counts per user, sorted keys row * items + item index of the relevant pairs that are in
    item_ids). A relevant item outside item_ids cannot be hit but still counts in the user's total."""
    item_index = {item: index for index, item in enumerate(ranked.item_ids.tolist())}
    relevant_counts = np.zeros(len(ranked.user_ids), dtype=np.int64)
    keys: list[int] = []
    n_items = len(ranked.item_ids)
    for row, user in enumerate(ranked.user_ids.tolist()):
        items = set(relevant.get(user, ()))
        relevant_counts[row] = len(items)
        keys.extend(row * n_items + item_index[item] for item in items if item in item_index)
    return relevant_counts, np.unique(np.asarray(keys, dtype=np.int64))


def _padded_positions(positions: np.ndarray, slots: int) -> np.ndarray:
    """The first `slots` columns of positions, padded with empty slots when the lists are shorter."""
    users, width = positions.shape
    if width >= slots:
        return positions[:, :slots]
    return np.hstack([positions, np.full((users, slots - width), -1, dtype=np.int64)])


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def _per_user_accuracy(hits: np.ndarray, relevant_counts: np.ndarray, k_values: tuple[int, ...]) -> PerUser:
    """hits: bool (users, max K) of users with relevant items; relevant_counts: (users,) all > 0."""
    max_k = k_values[-1]
    discount = 1.0 / np.log2(np.arange(2, max_k + 2))
    ideal_dcg_by_count = np.cumsum(discount)
    per_user: PerUser = {}
    for k in k_values:
        hits_at_k = hits[:, :k]
        hit_counts = hits_at_k.sum(axis=1)
        dcg = hits_at_k @ discount[:k]
        ideal_dcg = ideal_dcg_by_count[np.minimum(k, relevant_counts) - 1]
        per_user[f"precision@{k}"] = hit_counts / k
        per_user[f"recall@{k}"] = hit_counts / relevant_counts
        per_user[f"ndcg@{k}"] = dcg / ideal_dcg
        per_user[f"hitrate@{k}"] = (hit_counts > 0).astype(np.float64)
    has_hit = hits.any(axis=1)
    first_hit_rank = hits.argmax(axis=1) + 1
    per_user["mrr"] = np.where(has_hit, 1.0 / first_hit_rank, 0.0)
    return per_user


def _coverage(positions: np.ndarray, coverage_mask: np.ndarray, k_values: tuple[int, ...]) -> Metrics:
    covered_size = int(coverage_mask.sum())
    metrics: Metrics = {}
    for k in k_values:
        shown = positions[:, :k]
        shown = np.unique(shown[shown >= 0])
        covered = int(coverage_mask[shown].sum())
        metrics[f"coverage@{k}"] = covered / covered_size if covered_size else 0.0
    return metrics


def _popularity_bias(
    positions: np.ndarray, item_popularity: np.ndarray, catalog_size: int, k_values: tuple[int, ...]
) -> Metrics:
    counts = np.asarray(item_popularity, dtype=np.float64)
    smoothed_share = (counts + 1.0) / (counts.sum() + len(counts))
    self_information = -np.log2(smoothed_share)
    catalog_counts = np.sort(counts[:catalog_size])
    below = np.searchsorted(catalog_counts, counts, side="left")
    at_or_below = np.searchsorted(catalog_counts, counts, side="right")
    percentile = 100.0 * (below + at_or_below) / 2.0 / max(catalog_size, 1)
    metrics: Metrics = {}
    for k in k_values:
        shown = positions[:, :k]
        filled = shown >= 0
        slots = filled.sum(axis=1)
        with_items = slots > 0
        safe = np.where(filled, shown, 0)
        for name, per_item in (("novelty", self_information), ("popularity_percentile", percentile)):
            per_user = np.where(filled, per_item[safe], 0.0).sum(axis=1)[with_items] / slots[with_items]
            metrics[f"{name}@{k}"] = _mean(per_user)
    return metrics


def _diversity(positions: np.ndarray, item_vectors: np.ndarray, k_values: tuple[int, ...]) -> Metrics:
    """Mean pairwise cosine of n unit vectors = (|sum|^2 - sum of |u_i|^2) / (n (n - 1)): one pass over the
    vectors instead of an n x n Gram matrix per list."""
    vectors = np.asarray(item_vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    unit_norm_sq = (norms[:, 0] > 0).astype(np.float64)
    per_k: dict[int, list[np.ndarray]] = {k: [] for k in k_values}
    for start in range(0, len(positions), _DIVERSITY_USER_BLOCK):
        block = positions[start : start + _DIVERSITY_USER_BLOCK]
        filled = block >= 0
        safe = np.where(filled, block, 0)
        gathered = unit[safe] * filled[..., None]
        running_sum = np.cumsum(gathered, axis=1)
        running_self = np.cumsum(unit_norm_sq[safe] * filled, axis=1)
        running_count = np.cumsum(filled, axis=1)
        for k in k_values:
            column = min(k, block.shape[1]) - 1
            sum_sq = np.einsum("ud,ud->u", running_sum[:, column], running_sum[:, column])
            count = running_count[:, column]
            with_pairs = count >= 2
            mean_cosine = (sum_sq - running_self[:, column])[with_pairs] / (count[with_pairs] * (count[with_pairs] - 1))
            per_k[k].append(1.0 - mean_cosine)
    return {f"diversity@{k}": _mean(np.concatenate(per_k[k])) if per_k[k] else 0.0 for k in k_values}


@dataclass(frozen=True, eq=False)
class RankedEvaluation:
    """The metrics of ranked lists and the accuracy metrics of each evaluated user.

    per_user[name][i] is user_ids[i]'s value; user_ids are the ranked users with relevant items, in the ranked
    order. Rankers evaluated on the same users and relevance sets have the same user_ids, so their per-user
    arrays are paired (what a paired bootstrap over users needs)."""

    metrics: Metrics
    user_ids: np.ndarray
    per_user: PerUser
    ranked: RankedItems


def evaluate_ranked(
    ranked: RankedItems,
    relevant: Mapping[Hashable, Collection[Hashable]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    item_popularity: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
    coverage_mask: np.ndarray | None = None,
) -> Metrics:
    """All metrics of ranked lists against relevant items (see the module docstring for the definitions).

    item_popularity: training interaction counts aligned with ranked.item_ids (adds novelty@K and
    popularity_percentile@K); item_vectors: (items, dim) aligned with ranked.item_ids (adds diversity@K);
    coverage_mask: bool over item_ids, the items coverage is measured against (default: the catalogue)."""
    return evaluate_ranked_per_user(
        ranked,
        relevant,
        k_values,
        item_popularity=item_popularity,
        item_vectors=item_vectors,
        coverage_mask=coverage_mask,
    ).metrics


def evaluate_ranked_per_user(
    ranked: RankedItems,
    relevant: Mapping[Hashable, Collection[Hashable]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    item_popularity: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
    coverage_mask: np.ndarray | None = None,
) -> RankedEvaluation:
    """evaluate_ranked's metrics together with the per-user accuracy values they average."""
    k_sorted = _validated_k_values(k_values)
    positions = _padded_positions(np.asarray(ranked.positions, dtype=np.int64), k_sorted[-1])
    n_items = len(ranked.item_ids)
    relevant_counts, relevant_keys = _relevance(ranked, relevant)
    evaluated = relevant_counts > 0
    rows = np.arange(len(positions), dtype=np.int64)[:, None]
    hits = (positions >= 0) & np.isin(rows * n_items + positions, relevant_keys)

    per_user = _per_user_accuracy(hits[evaluated], relevant_counts[evaluated], k_sorted)
    metrics: Metrics = {name: _mean(values) for name, values in per_user.items()}
    if coverage_mask is None:
        coverage_mask = np.arange(n_items) < ranked.catalog_size
    metrics.update(_coverage(positions, np.asarray(coverage_mask, dtype=bool), k_sorted))
    if item_popularity is not None:
        metrics.update(_popularity_bias(positions, item_popularity, ranked.catalog_size, k_sorted))
    if item_vectors is not None:
        metrics.update(_diversity(positions, item_vectors, k_sorted))
    metrics["users_evaluated"] = int(evaluated.sum())
    metrics["users_without_test_items"] = int((~evaluated).sum())
    return RankedEvaluation(metrics, np.asarray(ranked.user_ids)[evaluated], per_user, ranked)


def ranked_from_lists(
    recommendations: Mapping[Hashable, Sequence[Hashable]],
    relevant: Mapping[Hashable, Collection[Hashable]],
    catalog: Collection[Hashable],
) -> RankedItems:
    """Index form of ranked lists given as ids. The users are those with a list plus those with relevant items
    but no list (an absent list is an empty one: leaving such users out would flatter the model)."""
    item_index: dict[Hashable, int] = {}
    for item in catalog:
        item_index.setdefault(item, len(item_index))
    catalog_size = len(item_index)
    for items in recommendations.values():
        for item in items:
            item_index.setdefault(item, len(item_index))
    users = list(recommendations)
    users.extend(user for user, items in relevant.items() if items and user not in recommendations)
    width = max((len(items) for items in recommendations.values()), default=0)
    positions = np.full((len(users), width), -1, dtype=np.int64)
    for row, user in enumerate(users):
        seen: set[Hashable] = set()
        for rank, item in enumerate(recommendations.get(user, ())):
            if item not in seen:
                positions[row, rank] = item_index[item]
                seen.add(item)
    item_ids = np.empty(len(item_index), dtype=object)
    item_ids[:] = list(item_index)
    user_ids = np.empty(len(users), dtype=object)
    user_ids[:] = users
    return RankedItems(user_ids, item_ids, positions, catalog_size)


def ranking_metrics(
    recommendations: Mapping[Hashable, Sequence[Hashable]],
    relevant: Mapping[Hashable, Collection[Hashable]],
    *,
    catalog: Collection[Hashable],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    item_popularity: Mapping[Hashable, int] | None = None,
    item_vectors: Mapping[Hashable, np.ndarray] | None = None,
) -> Metrics:
    """Metrics of ranked lists given as {user_id: [item_id, ...]} (best first) against {user_id: {item_id}}.

    catalog: every recommendable item (the coverage denominator). item_popularity: {item_id: training
    interaction count}, missing items count 0. item_vectors: {item_id: vector}; every recommended item needs
    one. Returns {"precision@K", "recall@K", "ndcg@K", "hitrate@K", "coverage@K" for each K, "mrr",
    "users_evaluated", "users_without_test_items"} plus "novelty@K", "popularity_percentile@K" and
    "diversity@K" when popularity and vectors are given."""
    ranked = ranked_from_lists(recommendations, relevant, catalog)
    items = ranked.item_ids.tolist()
    popularity = None
    if item_popularity is not None:
        popularity = np.array([item_popularity.get(item, 0) for item in items], dtype=np.float64)
    vectors = None
    if item_vectors is not None:
        dim = len(next(iter(item_vectors.values()))) if item_vectors else 0
        recommended = set(ranked.positions[ranked.positions >= 0].tolist())
        vectors = np.zeros((len(items), dim))
        for index, item in enumerate(items):
            if item in item_vectors:
                vectors[index] = item_vectors[item]
            elif index in recommended:
                raise KeyError(f"no vector for recommended item {item!r}")
    return evaluate_ranked(ranked, relevant, k_values, item_popularity=popularity, item_vectors=vectors)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    # pandas is imported here, not at the top: the CLI imports this module at start, and pandas adds ~0.6 s.
    import pandas as pd

    return pd.Series(values).rank(method="average").to_numpy()


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney U)."""
    ranks = _average_ranks(scores)
    positives = np.asarray(labels, bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of the average ranks (no scipy in the lock file)."""
    ranks_a, ranks_b = _average_ranks(a), _average_ranks(b)
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])
