"""The promotion gate both ways, and the rendered report: Markdown content and valid, non-trivial PNGs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from teamu_assets.evaluation.ctr import CtrSummary, ReplayEstimate
from teamu_assets.evaluation.gate import RULE_MISSING, RULE_POPULARITY, RULE_PROMOTED, GateDecision, promotion_decision
from teamu_assets.evaluation.intervals import Interval, RankerIntervals
from teamu_assets.evaluation.report import ScoreSamples, render_report, sample_scores

BEATS_POPULARITY = Interval(0.05, 0.01, 0.09)


def test_gate_promotes_a_first_model_that_beats_popularity() -> None:
    decision = promotion_decision({"recall@20": 0.12}, None, BEATS_POPULARITY, popularity_metrics={"recall@20": 0.07})
    assert decision.promote and decision.rule == RULE_POPULARITY
    assert "rule 1 (beats popularity) passed" in decision.reason
    assert "0.1200" in decision.reason and "0.0700" in decision.reason and "[+0.0100, +0.0900]" in decision.reason
    assert decision.figures["recall@20_minus_popularity_ci_low"] == 0.01


@pytest.mark.parametrize(
    "interval", [Interval(0.02, -0.01, 0.05), Interval(-0.09, -0.11, -0.08), Interval(0.0, 0.0, 0.0)]
)
def test_gate_refuses_a_candidate_that_does_not_beat_popularity_the_first_included(interval: Interval) -> None:
    # A higher mean is not enough: the paired interval's lower bound must be above 0.
    for promoted in (None, {"recall@20": 0.01}):
        decision = promotion_decision({"recall@20": 0.2}, promoted, interval)
        assert not decision.promote and decision.rule == RULE_POPULARITY
        assert "rule 1 (beats popularity) failed" in decision.reason and "not promoted" in decision.reason


def test_gate_refuses_a_candidate_that_beats_popularity_but_not_the_fallback_that_would_serve() -> None:
    """The popularity fallback (engaged users over age ** the chosen decay) is what users get if the candidate is
    refused: beating all-time popularity is not enough where the fallback, knowing what is fresh, ranks better."""
    kwargs = {"popularity_metrics": {"recall@20": 0.01}, "fallback_metrics": {"recall@20": 0.04}}
    for promoted in (None, {"recall@20": 0.01}):
        refused = promotion_decision(
            {"recall@20": 0.043}, promoted, BEATS_POPULARITY, vs_fallback=Interval(0.003, -0.02, 0.03), **kwargs
        )
        assert not refused.promote and refused.rule == RULE_POPULARITY
        assert "against the popularity fallback as served: fallback 0.0400" in refused.reason
        assert "[-0.0200, +0.0300]" in refused.reason and "not promoted" in refused.reason
        assert refused.figures["recall@20_minus_fallback_ci_low"] == -0.02
    # Where both fail, the reason and the figures hold both comparisons.
    both = promotion_decision(
        {"recall@20": 0.02}, None, Interval(0.01, -0.01, 0.03), vs_fallback=Interval(-0.02, -0.05, 0.01), **kwargs
    )
    assert not both.promote and "the lower bound against popularity is not above 0" in both.reason
    assert "fallback 0.0400, difference -0.0200" in both.reason
    assert both.figures["recall@20_minus_fallback_ci_high"] == 0.01
    passed = promotion_decision(
        {"recall@20": 0.12}, None, BEATS_POPULARITY, vs_fallback=Interval(0.06, 0.02, 0.1), **kwargs
    )
    assert passed.promote and "rule 1 (beats popularity) passed" in passed.reason
    assert "fallback 0.0400, difference +0.0600" in passed.reason


def test_gate_refuses_without_a_popularity_interval() -> None:
    decision = promotion_decision({"recall@20": 0.2}, None, None)
    assert not decision.promote and "no paired interval" in decision.reason


def test_gate_promotes_within_tolerance_including_the_bound() -> None:
    # 0.32 - 0.02 = 0.30: a candidate exactly at the bound passes despite binary floating point.
    decision = promotion_decision({"recall@20": 0.30}, {"recall@20": 0.32}, BEATS_POPULARITY, tolerance=0.02)
    assert decision.promote and decision.rule == RULE_PROMOTED
    assert "0.3000" in decision.reason and "0.3200" in decision.reason and "rule 2" in decision.reason


def test_gate_rejects_a_candidate_clearly_worse_than_the_promoted_model() -> None:
    decision = promotion_decision({"recall@20": 0.29}, {"recall@20": 0.32}, BEATS_POPULARITY, tolerance=0.02)
    assert not decision.promote and decision.rule == RULE_PROMOTED
    assert "rule 2 (not worse than the promoted model) failed" in decision.reason
    assert "0.2900" in decision.reason and "0.3200" in decision.reason and "0.3000" in decision.reason
    assert decision.figures["bound"] == pytest.approx(0.30)
    assert decision.as_json()["promote"] is False


def test_gate_uses_the_chosen_metric_and_handles_missing_values() -> None:
    candidate, promoted = {"recall@20": 0.5, "ndcg@10": 0.1}, {"recall@20": 0.4, "ndcg@10": 0.3}
    assert promotion_decision(candidate, promoted, BEATS_POPULARITY).promote
    assert not promotion_decision(candidate, promoted, BEATS_POPULARITY, metric="ndcg@10").promote
    assert not promotion_decision({"ndcg@10": 0.4}, promoted, BEATS_POPULARITY).promote
    missing = promotion_decision({"recall@20": float("nan")}, promoted, BEATS_POPULARITY)
    assert not missing.promote and missing.rule == RULE_MISSING
    # A promoted model without the metric can't be compared: rule 2 is skipped, rule 1 still applies.
    assert promotion_decision({"recall@20": 0.1}, {"ndcg@10": 0.3}, BEATS_POPULARITY).promote
    with pytest.raises(ValueError, match="tolerance"):
        promotion_decision(candidate, promoted, BEATS_POPULARITY, tolerance=-0.1)


def test_sample_scores_takes_relevant_pairs_and_as_many_random_ones() -> None:
    # One-dimensional vectors: score(u, i) = u_vector * i_vector = (u + 1) * (i + 1) for rows u, columns i.
    user_vectors, item_vectors = np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [3.0], [4.0]])
    scores = user_vectors @ item_vectors.T
    samples = sample_scores([1, 2, 3], [10, 20, 30, 40], user_vectors, item_vectors, {1: {20}, 3: {40, 99}}, seed=0)
    assert sorted(samples.relevant.tolist()) == [2.0, 12.0]
    assert len(samples.random) == 2
    assert set(samples.random.tolist()) <= set(scores.ravel().tolist())


def _metrics(recall: tuple[float, ...], coverage: float) -> dict[str, float | int]:
    values: dict[str, float | int] = {f"recall@{k}": r for k, r in zip((5, 10, 20, 50), recall, strict=True)}
    values.update({"ndcg@10": recall[1] / 2, "ndcg@20": recall[2] / 2, "mrr": 0.2, "users_evaluated": 40})
    values["coverage@20"] = coverage
    return values


def _assert_valid_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 5_000
    image = imread(path)
    height, width, channels = image.shape
    assert height >= 200 and width >= 300 and channels in (3, 4)
    # Not a blank canvas: a plot has more than one colour.
    assert image[..., :3].std() > 0.01


def test_render_report_writes_plots_and_markdown(tmp_path: Path) -> None:
    model = _metrics((0.1, 0.18, 0.3125, 0.45), 0.42)
    baselines = {
        "popularity": _metrics((0.05, 0.08, 0.12, 0.2), 0.02),
        "random": _metrics((0, 0, 0.01, 0.03), 1),
    }
    segments = {
        "warm": {"recall@20": 0.35, "ndcg@20": 0.2, "users_evaluated": 30},
        "cold_start": {"recall@20": 0.11, "ndcg@20": 0.05, "users_evaluated": 10},
        "new_posts": {"recall@20": 0.2, "ndcg@20": 0.1, "users_evaluated": 25, "coverage@20": 0.5},
    }
    observed = pd.DataFrame(
        {"model_version": ["v1"], "requests": [4], "impressions": [40], "clicks": [3], "ctr": [0.075]}
    )
    ctr = CtrSummary(observed, ReplayEstimate(k=20, logged_clicks=8, recovered_clicks=2, clicks_without_list=1))
    rng = np.random.default_rng(0)
    samples = ScoreSamples(relevant=rng.normal(2, 1, 500), random=rng.normal(0, 1, 500))
    decision = GateDecision(True, "no model is promoted yet; candidate recall@20 = 0.3125")
    intervals = RankerIntervals(
        means={
            "model": {"recall@20": Interval(0.3125, 0.28, 0.34)},
            "popularity": {"recall@20": Interval(0.12, 0.1, 0.14)},
            "random": {"recall@20": Interval(0.01, 0.0, 0.02)},
        },
        model_minus={
            "popularity": {"recall@20": Interval(0.1925, 0.16, 0.22)},
            "random": {"recall@20": Interval(0.3025, 0.27, 0.33)},
        },
        resamples=1000,
        confidence=0.95,
        users=40,
    )

    report = render_report(
        "2026-03-01T00-00-00",
        model,
        baselines,
        segments,
        ctr,
        decision,
        tmp_path / "out",
        score_samples=samples,
        intervals=intervals,
    )

    assert set(report.images) == {"recall_at_k", "coverage", "segments", "score_distribution", "model_minus_baselines"}
    for path in report.images.values():
        assert path.parent == tmp_path / "out"
        _assert_valid_png(path)
    assert report.markdown_path.read_text(encoding="utf-8") == report.markdown
    markdown = report.markdown
    assert "**Promoted**" in markdown and "candidate recall@20 = 0.3125" in markdown
    assert "| recall@20 | 0.3125 | 0.1200 | 0.0100 |" in markdown
    assert "| cold_start | 10 | 0.1100 |" in markdown
    # Observed and estimated click numbers are labelled as such.
    assert "### Observed" in markdown and "| v1 | 4 | 40 | 3 | 0.0750 |" in markdown
    assert "### Estimated" in markdown and "| 20 | 8 | 2 | 1 | 0.2500 |" in markdown
    # Image links are relative to the report's folder.
    # Intervals: each ranker's mean and the model minus it (paired), with the bounds.
    assert "95% bootstrap intervals over the 40 evaluated users (1000 resamples)" in markdown
    assert "| popularity | 0.1200 [0.1000, 0.1400] | +0.1925 [+0.1600, +0.2200] |" in markdown
    assert "- popularity: training interaction counts" in markdown
    for name in (
        "recall_at_k.png",
        "coverage.png",
        "segments.png",
        "score_distribution.png",
        "model_minus_baselines.png",
    ):
        assert f"]({name})" in markdown
    assert str(tmp_path) not in markdown


def test_render_report_lays_out_every_baseline_the_demo_reports(tmp_path: Path) -> None:
    # The demo's eight rankers: the coverage plot once named them in a one-row legend wider than the figure, and
    # matplotlib gave up the figure's layout with a warning on every evaluation.
    names = ("popularity", "fallback", "itemitem", "random", "previous", "oracle", "knowable_oracle")
    baselines = {name: _metrics((0.01, 0.02, 0.03, 0.05), 0.1 * (i + 1)) for i, name in enumerate(names)}
    decision = GateDecision(True, "candidate recall@20 = 0.3125")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = render_report("v3", _metrics((0.1, 0.18, 0.3125, 0.45), 0.42), baselines, {}, None, decision, tmp_path)
    _assert_valid_png(report.images["coverage"])


def test_render_report_without_optional_parts(tmp_path: Path) -> None:
    decision = GateDecision(False, "candidate recall@20 = 0.1000 < bound 0.2000")
    report = render_report("v2", _metrics((0.01, 0.05, 0.1, 0.2), 0.3), {}, {}, None, decision, tmp_path)
    assert set(report.images) == {"recall_at_k", "coverage"}
    for path in report.images.values():
        _assert_valid_png(path)
    assert "**Not promoted**" in report.markdown
    assert "No segments were evaluated." in report.markdown
    assert "No Mixpanel recommendation events were available." in report.markdown
    assert "No score samples were given." in report.markdown
    assert "No user was evaluated: no intervals." in report.markdown
