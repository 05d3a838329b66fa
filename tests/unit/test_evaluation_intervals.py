"""Bootstrap intervals over users: seeded, paired, of the right width; their JSON form; the printed summary."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from teamu_assets.evaluation.intervals import bootstrap_means, intervals_json, ranker_intervals
from teamu_assets.evaluation.summary import format_summary


def test_bootstrap_means_are_seeded_and_share_the_resamples() -> None:
    rng = np.random.default_rng(1)
    values = rng.random(300)
    first = bootstrap_means(np.stack([values, values, np.full(300, 0.25)]), resamples=200, seed=3)
    assert first.shape == (3, 200)
    np.testing.assert_array_equal(
        first, bootstrap_means(np.stack([values, values, np.full(300, 0.25)]), resamples=200, seed=3)
    )
    assert not np.array_equal(first[0], bootstrap_means(values, resamples=200, seed=4)[0])
    # Every row is resampled with the same users: identical rows give identical means; a constant, itself.
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_allclose(first[2], 0.25)
    with pytest.raises(ValueError, match="no users"):
        bootstrap_means(np.empty((1, 0)))


def test_interval_width_matches_the_standard_error() -> None:
    rng = np.random.default_rng(5)
    hits = (rng.random(400) < 0.3).astype(np.float64)
    intervals = ranker_intervals({"recall@20": hits, "ndcg@10": hits}, {}, resamples=2000)
    assert intervals is not None
    own = intervals.means["model"]["recall@20"]
    assert own.low < own.value < own.high
    # Normal approximation: 2 x 1.96 x sqrt(p (1 - p) / n).
    expected_width = 2 * 1.96 * np.sqrt(hits.mean() * (1 - hits.mean()) / 400)
    assert own.high - own.low == pytest.approx(expected_width, rel=0.15)


def test_paired_difference_cancels_the_spread_between_users() -> None:
    rng = np.random.default_rng(6)
    # Users differ a lot (easy and hard ones); the model is better by 0.02 on every user.
    baseline = rng.random(200)
    model = baseline + 0.02
    intervals = ranker_intervals(
        {"recall@20": model, "ndcg@10": model}, {"popularity": {"recall@20": baseline, "ndcg@10": baseline}}
    )
    assert intervals is not None
    difference = intervals.model_minus["popularity"]["recall@20"]
    assert difference.value == pytest.approx(0.02)
    assert difference.low == pytest.approx(0.02) and difference.high == pytest.approx(0.02)
    # Separate intervals of the two means overlap widely: only the paired test sees the win.
    assert intervals.means["popularity"]["recall@20"].high > intervals.means["model"]["recall@20"].low

    model_json, baselines_json = intervals_json(intervals)
    assert model_json["vs_popularity"]["recall@20"] == pytest.approx(0.02)
    assert model_json["vs_popularity"]["recall@20_ci"] == [difference.low, difference.high]
    assert model_json["recall@20_ci"] == intervals.means["model"]["recall@20"].as_json()
    assert model_json["ci"]["users"] == 200 and model_json["ci"]["resamples"] == 1000
    assert set(baselines_json) == {"popularity"} and len(baselines_json["popularity"]["ndcg@10_ci"]) == 2


def test_ranker_intervals_need_aligned_users() -> None:
    model = {"recall@20": np.zeros(3), "ndcg@10": np.zeros(3)}
    with pytest.raises(ValueError, match="popularity has 2"):
        ranker_intervals(model, {"popularity": {"recall@20": np.zeros(2), "ndcg@10": np.zeros(2)}})
    empty = {"recall@20": np.zeros(0), "ndcg@10": np.zeros(0)}
    assert ranker_intervals(empty, {"popularity": empty}) is None


def test_summary_orders_baselines_and_prints_intervals_and_the_gate() -> None:
    metrics = {
        "recall@20": 0.28,
        "ndcg@10": 0.2,
        "users_evaluated": 250,
        "recall@20_ci": [0.26, 0.30],
        "vs_popularity": {"recall@20": 0.2, "recall@20_ci": [0.18, 0.22], "ndcg@10": 0.1, "ndcg@10_ci": [0.08, 0.12]},
        "vs_itemitem": {"recall@20": -0.01, "recall@20_ci": [-0.03, 0.01]},
    }
    # jsonb hands keys back shortest first: the summary puts them in its own order.
    baselines = {
        "oracle": {"recall@20": 0.4},
        "random": {"recall@20": 0.02},
        "itemitem": {"recall@20": 0.29},
        "popularity": {"recall@20": 0.08},
    }
    text = format_summary(
        "tt-1", dt.datetime(2026, 3, 1, 12, 0), metrics, baselines, {}, False, None, {"reason": "rule 1 failed"}
    )
    rows = [line.split()[0] for line in text.splitlines()[2:7]]
    assert rows == ["model", "popularity", "itemitem", "random", "oracle"]
    assert "NOT promoted" in text
    assert "model recall@20 = 0.2800 [0.2600, 0.3000]" in text
    assert "recall@20 = 3.500x popularity" in text and "recall@20 = 0.966x itemitem" in text
    assert "model minus popularity: recall@20 +0.2000 [+0.1800, +0.2200], ndcg@10 +0.1000 [+0.0800, +0.1200]" in text
    assert "model minus itemitem: recall@20 -0.0100 [-0.0300, +0.0100] (paired 95% interval)" in text
    assert "gate: rule 1 failed" in text
    assert "blank" not in text.splitlines()[0]
    blank = format_summary(
        "tt-1", dt.datetime(2026, 3, 1), metrics | {"users_served_by_fallback": 7}, baselines, {}, False, None, None
    )
    assert "(7 blank: the model's row ranks them by the fallback, as served)" in blank.splitlines()[0]
