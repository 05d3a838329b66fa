"""Bootstrap intervals over users: how sure a mean metric, and a difference between two rankers, is.

Users are the unit of resampling: one user's hits are not independent of each other, users are. A paired
bootstrap resamples users once and takes the difference of two rankers' means on the same resample, so the
between-user spread that both rankers share (some users are easy, some hard) cancels out; that makes it
narrower than comparing two separate intervals, and it is the test the promotion gate uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from teamu_assets.evaluation.metrics import GATE_METRIC, HEADLINE_NDCG, PerUser

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# The metrics given intervals: the gate's metric and the headline ranking metric.
INTERVAL_METRICS = (GATE_METRIC, HEADLINE_NDCG)
# Resampled index matrices are built this many values at a time (resamples x users), bounding memory.
_CHUNK_VALUES = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means) and its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def as_json(self) -> list[float]:
        return [self.low, self.high]


def bootstrap_means(series: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of each row of series [rows x users] over `resamples` resamples of the users (with replacement),
    the same resamples for every row: [rows x resamples]. Memory: chunks of resamples x users indices."""
    values = np.atleast_2d(np.asarray(series, dtype=np.float64))
    n_users = values.shape[1]
    if n_users == 0:
        raise ValueError("no users to resample")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_VALUES // n_users))
    means = np.empty((values.shape[0], resamples))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n_users, size=(size, n_users))
        # Times each user is drawn in each resample; the resample's mean is then one matrix product.
        offsets = np.arange(size, dtype=np.int64)[:, None] * n_users
        counts = np.bincount((drawn + offsets).ravel(), minlength=size * n_users).reshape(size, n_users)
        means[:, start : start + size] = values @ counts.T / n_users
    return means


def _interval(value: float, resampled: np.ndarray, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return Interval(float(value), float(low), float(high))


@dataclass(frozen=True)
class RankerIntervals:
    """Intervals of one evaluation: each ranker's mean, and the model minus each baseline (paired)."""

    means: dict[str, dict[str, Interval]]  # ranker -> metric -> mean and interval
    model_minus: dict[str, dict[str, Interval]]  # baseline -> metric -> difference and paired interval
    resamples: int
    confidence: float
    users: int


def ranker_intervals(
    model: PerUser,
    baselines: Mapping[str, PerUser],
    *,
    metrics: tuple[str, ...] = INTERVAL_METRICS,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> RankerIntervals | None:
    """Bootstrap intervals of the model's and each baseline's mean metrics, and paired intervals of the model
    minus each baseline. The per-user arrays must be aligned (the same users in the same order: rankers
    evaluated on the same users, see metrics.RankedEvaluation). None when no user was evaluated."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rankers = {"model": model, **baselines}
    n_users = len(model[metrics[0]])
    for name, per_user in rankers.items():
        for metric in metrics:
            if len(per_user[metric]) != n_users:
                raise ValueError(f"{name} has {len(per_user[metric])} {metric} values, the model {n_users}")
    if n_users == 0:
        return None
    rows: list[tuple[str, str, str, np.ndarray]] = []
    for name, per_user in rankers.items():
        rows.extend(("mean", name, metric, np.asarray(per_user[metric], dtype=np.float64)) for metric in metrics)
    for name, per_user in baselines.items():
        rows.extend(
            ("difference", name, metric, np.asarray(model[metric], dtype=np.float64) - per_user[metric])
            for metric in metrics
        )
    series = np.stack([values for *_, values in rows])
    resampled = bootstrap_means(series, resamples=resamples, seed=seed)
    means: dict[str, dict[str, Interval]] = {}
    model_minus: dict[str, dict[str, Interval]] = {}
    for (kind, name, metric, values), row in zip(rows, resampled, strict=True):
        target = means if kind == "mean" else model_minus
        target.setdefault(name, {})[metric] = _interval(float(values.mean()), row, confidence)
    return RankerIntervals(means, model_minus, resamples, confidence, n_users)


def intervals_json(intervals: RankerIntervals) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """The intervals as JSON entries to merge into the stored metrics and baselines (ml.model_evaluations):
    the model gets "<metric>_ci": [low, high] and "vs_<baseline>": {"<metric>": model minus baseline,
    "<metric>_ci": [low, high]} (paired), plus "ci": how they were computed; each baseline "<metric>_ci"."""
    model: dict[str, object] = {f"{metric}_ci": iv.as_json() for metric, iv in intervals.means["model"].items()}
    for baseline, differences in intervals.model_minus.items():
        entry: dict[str, object] = {}
        for metric, iv in differences.items():
            entry[metric] = iv.value
            entry[f"{metric}_ci"] = iv.as_json()
        model[f"vs_{baseline}"] = entry
    model["ci"] = {
        "method": "bootstrap over users (paired for vs_*), percentile interval",
        "confidence": intervals.confidence,
        "resamples": intervals.resamples,
        "users": intervals.users,
    }
    baselines = {
        name: {f"{metric}_ci": iv.as_json() for metric, iv in by_metric.items()}
        for name, by_metric in intervals.means.items()
        if name != "model"
    }
    return model, baselines
