"""One evaluation as it is stored (ml.model_evaluations' JSON) and shown (the headline figures of the asset)."""

from __future__ import annotations

from typing import Any

from teamu_assets.evaluation.gate import GateDecision
from teamu_assets.evaluation.intervals import intervals_json
from teamu_assets.evaluation.metrics import GATE_METRIC, HEADLINE_NDCG
from teamu_assets.evaluation.offline import OfflineEvaluation
from teamu_assets.evaluation.summary import RATIO_BASELINES


def stored_json(result: OfflineEvaluation) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, baselines) for ml.model_evaluations: the means with their bootstrap intervals merged in."""
    metrics: dict[str, Any] = dict(result.metrics) | {"users_served_by_fallback": result.users_served_by_fallback}
    baselines: dict[str, Any] = {name: dict(values) for name, values in result.baselines.items()}
    if result.intervals is not None:
        model_intervals, baseline_intervals = intervals_json(result.intervals)
        metrics |= model_intervals
        for name, entries in baseline_intervals.items():
            baselines[name] |= entries
    return metrics, baselines


def headline(model_version: str, result: OfflineEvaluation, decision: GateDecision) -> dict[str, Any]:
    """The gate's decision and the figures it rests on: plain values, intervals as {"value", "low", "high"}."""
    value = float(result.metrics[GATE_METRIC])
    figures: dict[str, Any] = {
        "model_version": model_version,
        "promoted": decision.promote,
        "gate": decision.reason,
        "gate_rule": decision.rule,
        GATE_METRIC: value,
        HEADLINE_NDCG: float(result.metrics[HEADLINE_NDCG]),
        "users_evaluated": result.users_evaluated,
        "cold_start_users": result.cold_start_users,
        "users_served_by_fallback": result.users_served_by_fallback,
    }
    for name in RATIO_BASELINES:
        if name in result.baselines:
            baseline = float(result.baselines[name][GATE_METRIC])
            figures[f"{name}_{GATE_METRIC}"] = baseline
            figures[f"{GATE_METRIC}_vs_{name}"] = value / baseline if baseline else float("inf")
    if result.intervals is not None:
        figures[f"{GATE_METRIC}_ci"] = result.intervals.means["model"][GATE_METRIC].as_json()
        for name, by_metric in result.intervals.model_minus.items():
            difference = by_metric[GATE_METRIC]
            figures[f"{GATE_METRIC}_minus_{name}"] = difference.value
            figures[f"{GATE_METRIC}_minus_{name}_ci"] = difference.as_json()
    return figures
