"""The promotion gate. A candidate is promoted only when both rules pass, in this order:

1. It beats popularity on the holdout: the lower bound of the paired bootstrap interval (95%, over users) of
   candidate minus popularity on the gate metric is above 0. This applies to every candidate, the first one
   included: a model that does not beat the trivial ranking must not replace it (with nothing promoted,
   ml.recommend_posts serves its popularity fallback). Where the evaluation also ranked by that fallback as it
   would serve (engaged users over age ** the decay chosen on validation: a ranking that knows what is fresh),
   the candidate must beat it the same way: it is what the users get if the candidate is refused.
2. When a model is already promoted, the candidate is not clearly worse than it: candidate >= promoted -
   tolerance (absolute) on the gate metric, both measured on the same holdout.

The decision says which rule decided, with its figures, for the report, the Dagster check and the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from teamu_assets.evaluation.intervals import Interval
from teamu_assets.evaluation.metrics import GATE_METRIC as DEFAULT_GATE_METRIC

# Rule 2's allowance, absolute on the gate metric; the default of evaluation_report's run config too.
DEFAULT_TOLERANCE = 0.02
# 0.30 >= 0.32 - 0.02 is False in binary floating point; a candidate exactly at the bound passes.
_FLOAT_SLACK = 1e-12

RULE_MISSING = "missing_metric"
RULE_POPULARITY = "beats_popularity"
RULE_PROMOTED = "not_worse_than_promoted"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    rule: str = RULE_POPULARITY  # the rule that decided: the one that failed, or the last one checked
    figures: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"promote": self.promote, "rule": self.rule, "reason": self.reason, "figures": self.figures}


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def promotion_decision(
    candidate_metrics: Mapping[str, float],
    promoted_metrics: Mapping[str, float] | None,
    vs_popularity: Interval | None,
    *,
    popularity_metrics: Mapping[str, float] | None = None,
    vs_fallback: Interval | None = None,
    fallback_metrics: Mapping[str, float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    metric: str = DEFAULT_GATE_METRIC,
) -> GateDecision:
    """Decide on a candidate (see the module docstring).

    candidate_metrics / promoted_metrics / popularity_metrics: mean metrics on the holdout (promoted_metrics None
    when no model is promoted); vs_popularity: candidate minus popularity on `metric`, with its paired interval
    (None when it could not be computed, e.g. no user was evaluated: not promoted); vs_fallback /
    fallback_metrics: the same against the popularity fallback as served (None: not evaluated, rule 1 looks at
    popularity alone). A promoted model without
    the metric (an older metric set) cannot be compared: rule 2 is then skipped, and the reason says so."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    candidate = candidate_metrics.get(metric)
    if _missing(candidate):
        return GateDecision(False, f"candidate has no {metric} value; not promoted", RULE_MISSING)
    figures: dict[str, float] = {f"candidate_{metric}": candidate}
    popularity = None if popularity_metrics is None else popularity_metrics.get(metric)
    if not _missing(popularity):
        figures[f"popularity_{metric}"] = popularity
    if vs_popularity is None or _missing(vs_popularity.low):
        return GateDecision(
            False,
            f"rule 1 (beats popularity): no paired interval of candidate minus popularity {metric} "
            "(no user was evaluated); not promoted",
            RULE_POPULARITY,
            figures,
        )
    figures |= {
        f"{metric}_minus_popularity": vs_popularity.value,
        f"{metric}_minus_popularity_ci_low": vs_popularity.low,
        f"{metric}_minus_popularity_ci_high": vs_popularity.high,
    }
    popularity_text = f"popularity {popularity:.4f}, " if not _missing(popularity) else ""
    popularity_comparison = (
        f"candidate {metric} {candidate:.4f}, {popularity_text}difference {vs_popularity.value:+.4f}, "
        f"95% paired bootstrap interval [{vs_popularity.low:+.4f}, {vs_popularity.high:+.4f}]"
    )
    beats_fallback = True
    if vs_fallback is not None and not _missing(vs_fallback.low):
        fallback = None if fallback_metrics is None else fallback_metrics.get(metric)
        figures |= {
            f"{metric}_minus_fallback": vs_fallback.value,
            f"{metric}_minus_fallback_ci_low": vs_fallback.low,
            f"{metric}_minus_fallback_ci_high": vs_fallback.high,
        }
        if not _missing(fallback):
            figures[f"fallback_{metric}"] = fallback
        fallback_text = f"fallback {fallback:.4f}, " if not _missing(fallback) else ""
        popularity_comparison += (
            f"; against the popularity fallback as served: {fallback_text}difference {vs_fallback.value:+.4f}, "
            f"95% paired bootstrap interval [{vs_fallback.low:+.4f}, {vs_fallback.high:+.4f}]"
        )
        beats_fallback = vs_fallback.low > 0
    if not vs_popularity.low > 0:
        return GateDecision(
            False,
            f"rule 1 (beats popularity) failed: {popularity_comparison}; the lower bound against popularity is not "
            "above 0, not promoted",
            RULE_POPULARITY,
            figures,
        )
    if not beats_fallback:
        return GateDecision(
            False,
            f"rule 1 (beats popularity) failed: {popularity_comparison}; the lower bound against the fallback "
            "is not above 0, not promoted",
            RULE_POPULARITY,
            figures,
        )
    passed_popularity = f"rule 1 (beats popularity) passed: {popularity_comparison}"
    if promoted_metrics is None:
        return GateDecision(True, f"{passed_popularity}; no model is promoted yet, promoted", RULE_POPULARITY, figures)
    promoted = promoted_metrics.get(metric)
    if _missing(promoted):
        return GateDecision(
            True,
            f"{passed_popularity}; rule 2 skipped: the promoted model has no {metric} to compare, promoted",
            RULE_PROMOTED,
            figures,
        )
    bound = promoted - tolerance
    figures |= {f"promoted_{metric}": promoted, "tolerance": tolerance, "bound": bound}
    comparison = (
        f"candidate {metric} {candidate:.4f}, promoted {promoted:.4f}, tolerance {tolerance:.4f} (bound {bound:.4f})"
    )
    if candidate >= bound - _FLOAT_SLACK:
        return GateDecision(
            True,
            f"{passed_popularity}; rule 2 (not worse than the promoted model) passed: {comparison}, promoted",
            RULE_PROMOTED,
            figures,
        )
    return GateDecision(
        False,
        f"rule 2 (not worse than the promoted model) failed: {comparison}, candidate < bound; not promoted "
        f"(rule 1 passed: {popularity_comparison})",
        RULE_PROMOTED,
        figures,
    )
