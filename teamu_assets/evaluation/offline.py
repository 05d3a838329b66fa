"""One offline evaluation of a model's embeddings on the temporal split: the model, its baselines and segments.

Pure numpy/pandas: the caller embeds users and posts (as of the cutoff) and hands over the vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from teamu_assets.contract import RECOMMENDATION_CLICKED
from teamu_assets.evaluation.ctr import CtrSummary, observed_ctr, replay_clicks_recovered
from teamu_assets.evaluation.fallback import engagement_and_age, fallback_scores
from teamu_assets.evaluation.intervals import RankerIntervals, ranker_intervals
from teamu_assets.evaluation.metrics import DEFAULT_K_VALUES, GATE_K, Metrics
from teamu_assets.evaluation.rankers import (
    ScoreRows,
    embedding_score_rows,
    evaluate_baselines,
    fit_ease,
    popularity_counts,
    popularity_scores,
    rank,
    score_evaluation,
    seen_or_own,
)
from teamu_assets.evaluation.report import ScoreSamples, sample_scores
from teamu_assets.evaluation.segments import evaluate_segments, segment_items, segment_users


@dataclass(frozen=True)
class Embeddings:
    ids: np.ndarray
    vectors: np.ndarray

    def rows(self, wanted: np.ndarray) -> np.ndarray:
        """Vectors for `wanted` ids in that order (every wanted id must be present)."""
        position = pd.Index(self.ids).get_indexer(wanted)
        if (position < 0).any():
            raise ValueError(f"{int((position < 0).sum())} ids have no embedding")
        return self.vectors[position]


@dataclass(frozen=True)
class OfflineEvaluation:
    metrics: Metrics
    baselines: dict[str, Metrics]
    segments: dict[str, Metrics]
    score_samples: ScoreSamples
    users_evaluated: int
    cold_start_users: int
    intervals: RankerIntervals | None  # None when no user was evaluated
    ctr: CtrSummary | None = field(default=None)
    # Evaluated users ranked by the fallback in the model's rows (fallback_users), as serving ranks them.
    users_served_by_fallback: int = 0


def _post_sets(frame: pd.DataFrame) -> dict[int, set[int]]:
    return {int(user): set(map(int, posts)) for user, posts in frame.groupby("user_id")["post_id"]}


def evaluate_embeddings(
    *,
    train: pd.DataFrame,
    evaluation: pd.DataFrame,
    posts: pd.DataFrame,
    cutoff: pd.Timestamp,
    users: Embeddings,
    items: Embeddings,
    previous: tuple[Embeddings, Embeddings] | None = None,
    oracle_scores: Mapping[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None,
    recommendation_events: pd.DataFrame | None = None,
    fallback_decay: float | None = None,
    fallback_users: Collection[int] = (),
    k_values: tuple[int, ...] = DEFAULT_K_VALUES,
) -> OfflineEvaluation:
    """Rank every post for each user with evaluation interactions, excluding what they engaged with before the
    cutoff and their own posts; relevant = posts engaged with after the cutoff and not before.

    train/evaluation: interactions (user_id, post_id) before/after the cutoff; posts: post_id, user_id,
    created_at, is_local. `previous` are the promoted model's embeddings; `oracle_scores` are the
    generator's expected-score matrices on synthetic data, by ranker name (each called as (user_ids, post_ids)).
    With `fallback_decay`, the popularity fallback that serves when no model is promoted is a baseline too
    ("fallback": engaged users before the cutoff / (1 + age at the cutoff in days) ** decay, fallback.py).
    `fallback_users` are those ml.recommend_posts serves the fallback whatever model is promoted (nothing for the
    query tower to read: features.blank_user_ids); the model's and the previous model's rankings of them are the
    fallback's, as served (they need `fallback_decay`).

    Baselines, on the same users, exclusions and relevant posts: popularity (training interaction counts),
    itemitem (EASE fitted on the training interactions), random, previous (the promoted model) and the oracles; the
    intervals are bootstrap intervals over the evaluated users, paired for the model minus each baseline.
    """
    exclude = seen_or_own(train, posts)
    relevant = {
        user: engaged - exclude.get(user, set())
        for user, engaged in _post_sets(evaluation).items()
        if engaged - exclude.get(user, set())
    }
    user_ids = np.array(sorted(set(relevant) & set(users.ids.tolist())), dtype=np.int64)
    post_ids = np.asarray(items.ids, dtype=np.int64)
    popularity = popularity_counts(post_ids, train["post_id"].tolist())

    fallback = None if fallback_decay is None else _fallback_at(train, posts, post_ids, cutoff, fallback_decay)
    fallback_ids = np.asarray(list(fallback_users), dtype=np.int64)
    if fallback is None and len(fallback_ids):
        raise ValueError("fallback_users need fallback_decay: their rankings are the fallback's")
    served_by_fallback = np.isin(user_ids, fallback_ids)

    # Every ranker scores a block of users at a time (rankers.rank): no users x posts matrix is ever whole.
    user_vectors = users.rows(user_ids)
    model = score_evaluation(
        user_ids,
        post_ids,
        _served_score_rows(user_vectors, items.vectors, served_by_fallback, fallback),
        relevant,
        exclude,
        k_values,
        item_popularity=popularity,
        item_vectors=items.vectors,
    )
    itemitem = fit_ease(train["user_id"].to_numpy(), train["post_id"].to_numpy())
    evaluations = evaluate_baselines(
        user_ids,
        post_ids,
        relevant,
        exclude,
        popularity,
        k_values,
        itemitem_scores=itemitem.score_rows(user_ids, post_ids),
        oracle_scores={
            name: _oracle_rows(scores, user_ids, post_ids) for name, scores in (oracle_scores or {}).items()
        },
        item_vectors=items.vectors,
    )
    if fallback is not None:
        evaluations["fallback"] = score_evaluation(
            user_ids,
            post_ids,
            popularity_scores(len(user_ids), fallback),
            relevant,
            exclude,
            k_values,
            item_popularity=popularity,
            item_vectors=items.vectors,
        )
    if previous is not None:
        previous_users, previous_items = previous
        evaluations["previous"] = score_evaluation(
            user_ids,
            post_ids,
            _served_score_rows(
                previous_users.rows(user_ids), previous_items.rows(post_ids), served_by_fallback, fallback
            ),
            relevant,
            exclude,
            k_values,
            item_popularity=popularity,
        )
    intervals = ranker_intervals(model.per_user, {name: e.per_user for name, e in evaluations.items()})

    user_segments = segment_users(train, user_ids.tolist())
    item_segments = segment_items(posts.loc[posts["post_id"].isin(post_ids)], cutoff.to_pydatetime())
    segments = evaluate_segments(model.ranked, relevant, user_segments, item_segments, k_values)

    ctr = None
    if recommendation_events is not None and len(recommendation_events):
        # The replay credits the lists ranked at the cutoff with the clicks of the evaluation period only: a click
        # before it is an engagement the model trained on, and the lists would be credited for having learned it.
        replayed = recommendation_events.loc[
            (recommendation_events["event"] != RECOMMENDATION_CLICKED) | (recommendation_events["time"] >= cutoff)
        ]
        clickers = np.array(sorted({int(u) for u in replayed["distinct_id"]} & set(users.ids.tolist())), dtype=np.int64)
        # Replay lists are ranked without exclusions: excluding engaged posts would exclude the clicked ones.
        replay_scores = _served_score_rows(
            users.rows(clickers), items.vectors, np.isin(clickers, fallback_ids), fallback
        )
        replay_ranked = rank(clickers, post_ids, replay_scores, {}, GATE_K)
        lists = {
            int(user): [int(post_ids[p]) for p in row if p >= 0]
            for user, row in zip(replay_ranked.user_ids, replay_ranked.positions, strict=True)
        }
        ctr = CtrSummary(
            observed=observed_ctr(recommendation_events),
            replay=replay_clicks_recovered(replayed, lists, GATE_K),
        )
    return OfflineEvaluation(
        metrics=model.metrics,
        baselines={name: evaluation.metrics for name, evaluation in evaluations.items()},
        segments=segments,
        score_samples=sample_scores(user_ids, post_ids, user_vectors, items.vectors, relevant),
        users_evaluated=len(user_ids),
        cold_start_users=len(user_segments["cold_start"]),
        intervals=intervals,
        ctr=ctr,
        users_served_by_fallback=int(served_by_fallback.sum()),
    )


def _served_score_rows(
    user_vectors: np.ndarray, item_vectors: np.ndarray, served_by_fallback: np.ndarray, fallback: np.ndarray | None
) -> ScoreRows:
    """A model's scores as ml.recommend_posts serves them: the vectors' dot products, except the rows of users
    served by the fallback, which get the fallback's scores (one row for everyone)."""
    model_rows = embedding_score_rows(user_vectors, item_vectors)
    if fallback is None or not served_by_fallback.any():
        return model_rows

    def rows(start: int, stop: int) -> np.ndarray:
        block = np.array(model_rows(start, stop), dtype=np.float64)
        block[served_by_fallback[start:stop]] = fallback
        return block

    return rows


def _fallback_at(
    train: pd.DataFrame, posts: pd.DataFrame, post_ids: np.ndarray, cutoff: pd.Timestamp, decay: float
) -> np.ndarray:
    """The fallback's scores of post_ids at the cutoff: their engaged users in `train` over their age then."""
    return fallback_scores(*engagement_and_age(train, posts, post_ids, cutoff), decay)


def _oracle_rows(
    oracle_scores: Callable[[np.ndarray, np.ndarray], np.ndarray], user_ids: np.ndarray, post_ids: np.ndarray
) -> ScoreRows:
    def rows(start: int, stop: int) -> np.ndarray:
        return oracle_scores(user_ids[start:stop], post_ids)

    return rows
