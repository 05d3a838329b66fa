"""The short text summary of an evaluation that `teamu report` and `make demo` print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from teamu_assets.evaluation.metrics import GATE_K, GATE_METRIC, HEADLINE_NDCG

SUMMARY_METRICS = (GATE_METRIC, HEADLINE_NDCG, f"precision@{GATE_K}", f"hitrate@{GATE_K}", "mrr", f"coverage@{GATE_K}")
# jsonb keeps object keys in its own order (shorter keys first), not the writer's: the rows are ordered here.
BASELINE_ORDER = ("popularity", "fallback", "itemitem", "random", "previous", "oracle", "knowable_oracle")
# The baselines the model's gate metric is given as a ratio of (here and in the evaluation asset's metadata).
RATIO_BASELINES = ("popularity", "itemitem", "oracle", "knowable_oracle")


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
        f"({'promoted' if promoted else 'NOT promoted'}), {metrics.get('users_evaluated', 0)} users"
        + _served_by_fallback(metrics),
        f"{'':<{width}}  " + "  ".join(f"{m:>12}" for m in SUMMARY_METRICS),
    ]
    for name, values in rankers.items():
        cells = "  ".join(f"{float(values.get(m, float('nan'))):>12.4f}" for m in SUMMARY_METRICS)
        lines.append(f"{name:<{width}}  {cells}")
    recall = float(metrics.get(GATE_METRIC, 0.0))
    interval = _interval(metrics.get(f"{GATE_METRIC}_ci"))
    lines.append(f"model {GATE_METRIC} = {recall:.4f}{interval} (95% bootstrap interval)")
    for name in RATIO_BASELINES:
        base = float(baselines.get(name, {}).get(GATE_METRIC, 0.0))
        if base:
            lines.append(f"{GATE_METRIC} = {recall / base:.3f}x {name}")
    for name in ordered:
        entry = metrics.get(f"vs_{name}")
        if isinstance(entry, Mapping) and GATE_METRIC in entry:
            ndcg = f", {HEADLINE_NDCG} {_difference(entry, HEADLINE_NDCG)}" if HEADLINE_NDCG in entry else ""
            lines.append(
                f"model minus {name}: {GATE_METRIC} {_difference(entry, GATE_METRIC)}{ndcg} (paired 95% interval)"
            )
    for name in ("warm", "cold_start", "new_posts", "local_posts"):
        if name in segments:
            lines.append(f"{GATE_METRIC} on {name}: {float(segments[name].get(GATE_METRIC, 0.0)):.4f}")
    if gate and gate.get("reason"):
        lines.append(f"gate: {gate['reason']}")
    if report_path:
        lines.append(f"full report: {report_path}")
    return "\n".join(lines)


def _served_by_fallback(metrics: Mapping[str, Any]) -> str:
    """How many evaluated users the model's row ranks by the fallback (blank users, as served); '' for none."""
    blank = int(metrics.get("users_served_by_fallback", 0))
    return f" ({blank} blank: the model's row ranks them by the fallback, as served)" if blank else ""
