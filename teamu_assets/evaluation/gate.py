"""The promotion gate: a candidate replaces the promoted model unless it is clearly worse on one metric."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_GATE_METRIC = "recall@20"
DEFAULT_TOLERANCE = 0.02
# 0.30 >= 0.32 - 0.02 is False in binary floating point; a candidate exactly at the bound passes.
_FLOAT_SLACK = 1e-12


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def promotion_decision(
    candidate_metrics: Mapping[str, float],
    promoted_metrics: Mapping[str, float] | None,
    tolerance: float = DEFAULT_TOLERANCE,
    metric: str = DEFAULT_GATE_METRIC,
) -> GateDecision:
    """Promote when no model is promoted yet, or when candidate[metric] >= promoted[metric] - tolerance
    (absolute). A candidate without the metric (or NaN) is not promoted; a promoted model without it (an older
    metric set) cannot be compared, and the candidate is promoted with a reason that says so."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    candidate = candidate_metrics.get(metric)
    if candidate is None or math.isnan(candidate):
        return GateDecision(False, f"candidate has no {metric} value; not promoted")
    if promoted_metrics is None:
        return GateDecision(True, f"no model is promoted yet; candidate {metric} = {candidate:.4f}")
    promoted = promoted_metrics.get(metric)
    if promoted is None or math.isnan(promoted):
        return GateDecision(
            True, f"promoted model has no {metric} to compare; candidate {metric} = {candidate:.4f} promoted"
        )
    bound = promoted - tolerance
    comparison = (
        f"candidate {metric} = {candidate:.4f}, promoted {metric} = {promoted:.4f}, "
        f"tolerance {tolerance:.4f} (bound {bound:.4f})"
    )
    if candidate >= bound - _FLOAT_SLACK:
        return GateDecision(True, f"{comparison}: candidate >= bound, promoted")
    return GateDecision(False, f"{comparison}: candidate < bound, not promoted")
