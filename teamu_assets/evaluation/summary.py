"""The short text summary of an evaluation that `teamu report` and `make demo` print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUMMARY_METRICS = ("recall@20", "ndcg@10", "precision@20", "hitrate@20", "mrr", "coverage@20")


def format_summary(
    model_version: str,
    evaluated_at: Any,
    metrics: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]],
    segments: Mapping[str, Mapping[str, Any]],
    promoted: bool,
    report_path: str | None,
) -> str:
    rankers = {"model": metrics, **baselines}
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
    for name in ("popularity", "oracle"):
        base = float(baselines.get(name, {}).get("recall@20", 0.0))
        if base:
            lines.append(f"recall@20 = {recall / base:.3f}x {name}")
    for name in ("warm", "cold_start", "new_posts", "local_posts"):
        if name in segments:
            lines.append(f"recall@20 on {name}: {float(segments[name].get('recall@20', 0.0)):.4f}")
    if report_path:
        lines.append(f"full report: {report_path}")
    return "\n".join(lines)
