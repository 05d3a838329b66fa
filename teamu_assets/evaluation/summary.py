"""The short text summary of an evaluation that `teamu report` and `make demo` print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SUMMARY_METRICS = ("recall@20", "ndcg@10", "precision@20", "hitrate@20", "mrr", "coverage@20")
# jsonb keeps object keys in its own order (shorter keys first), not the writer's: the rows are ordered here.
BASELINE_ORDER = ("popularity", "itemitem", "random", "previous", "oracle")
# The baselines the model's recall@20 is given as a ratio of.
RATIO_BASELINES = ("popularity", "itemitem", "oracle")


def _interval(values: Sequence[float] | None) -> str:
    return f" [{float(values[0]):.4f}, {float(values[1]):.4f}]" if values else ""


def _difference(entry: Mapping[str, Any], metric: str) -> str:
    interval = entry.get(f"{metric}_ci")
    bounds = f" [{float(interval[0]):+.4f}, {float(interval[1]):+.4f}]" if interval else ""
    return f"{float(entry[metric]):+.4f}{bounds}"


def format_summary(
    model_version: str,
    evaluated_at: Any,
    metrics: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]],
    segments: Mapping[str, Mapping[str, Any]],
    promoted: bool,
    report_path: str | None,
    gate: Mapping[str, Any] | None = None,
) -> str:
    """metrics/baselines as stored in ml.model_evaluations (intervals included, see intervals.intervals_json);
    gate: the stored decision (reason, rule, figures)."""
    ordered = [name for name in BASELINE_ORDER if name in baselines]
    ordered += sorted(name for name in baselines if name not in BASELINE_ORDER)
    rankers = {"model": metrics, **{name: baselines[name] for name in ordered}}
    width = max(len(name) for name in rankers)
    lines = [
        f"Evaluation of {model_version} at {evaluated_at:%Y-%m-%d %H:%M} UTC "
        f"({'promoted' if promoted else 'NOT promoted'}), {metrics.get('users_evaluated', 0)} users",
        f"{'':<{width}}  " + "  ".join(f"{m:>12}" for m in SUMMARY_METRICS),
    ]
    for name, values in rankers.items():
        cells = "  ".join(f"{float(values.get(m, float('nan'))):>12.4f}" for m in SUMMARY_METRICS)
        lines.append(f"{name:<{width}}  {cells}")
    recall = float(metrics.get("recall@20", 0.0))
    lines.append(f"model recall@20 = {recall:.4f}{_interval(metrics.get('recall@20_ci'))} (95% bootstrap interval)")
    for name in RATIO_BASELINES:
        base = float(baselines.get(name, {}).get("recall@20", 0.0))
        if base:
            lines.append(f"recall@20 = {recall / base:.3f}x {name}")
    for name in ordered:
        entry = metrics.get(f"vs_{name}")
        if isinstance(entry, Mapping) and "recall@20" in entry:
            lines.append(
                f"model minus {name}: recall@20 {_difference(entry, 'recall@20')}"
                + (f", ndcg@10 {_difference(entry, 'ndcg@10')}" if "ndcg@10" in entry else "")
                + " (paired 95% interval)"
            )
    for name in ("warm", "cold_start", "new_posts", "local_posts"):
        if name in segments:
            lines.append(f"recall@20 on {name}: {float(segments[name].get('recall@20', 0.0)):.4f}")
    if gate and gate.get("reason"):
        lines.append(f"gate: {gate['reason']}")
    if report_path:
        lines.append(f"full report: {report_path}")
    return "\n".join(lines)
