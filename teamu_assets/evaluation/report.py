"""The evaluation report: PNG plots and a Markdown page with the numbers and the promotion decision.

Figures are drawn on matplotlib's Agg canvas directly (Figure + FigureCanvasAgg, no pyplot): no display is
needed, and the process-wide pyplot backend and figure registry of whoever imports this are left alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from teamu_assets.evaluation.ctr import CtrSummary
from teamu_assets.evaluation.gate import DEFAULT_GATE_METRIC, GateDecision
from teamu_assets.evaluation.intervals import Interval, RankerIntervals
from teamu_assets.evaluation.metrics import GATE_K
from teamu_assets.evaluation.rankers import index_pairs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "report.md"
MODEL_LABEL = "model"
RANKER_DESCRIPTIONS = {
    MODEL_LABEL: "the candidate two-tower model (user vector . post vector)",
    "popularity": "training interaction counts, the same list for everyone",
    "fallback": "the popularity fallback as ml.recommend_posts serves it: engaged users / (1 + age in days) ** the "
    "decay chosen on validation, at the cutoff",
    "itemitem": "EASE item-item model fitted on the training interactions (Steck 2019)",
    "random": "seeded uniform scores",
    "previous": "the promoted model, on the same holdout",
    "oracle": "the synthetic generator's expected engagement (an upper reference, synthetic data only)",
    "knowable_oracle": "the oracle as known at the cutoff: posts created after it at the average post's latent "
    "quality and appeal (the ceiling of a ranking made at the cutoff, synthetic data only)",
}
_METRIC_AT_K = re.compile(r"^(?P<family>[a-z_]+)@(?P<k>\d+)$")
_FAMILY_ORDER = (
    "precision",
    "recall",
    "ndcg",
    "hitrate",
    "mrr",
    "coverage",
    "diversity",
    "novelty",
    "popularity_percentile",
)
_COUNT_KEYS = ("users_evaluated", "users_without_test_items")
_USER_SEGMENT_ORDER = ("warm", "cold_start")


@dataclass(frozen=True, eq=False)
class ScoreSamples:
    """Model scores of (user, relevant item) pairs and of (user, random item) pairs, for the histogram."""

    relevant: np.ndarray
    random: np.ndarray


@dataclass(frozen=True)
class Report:
    markdown_path: Path
    markdown: str
    images: dict[str, Path]  # plot name -> PNG path


def sample_scores(
    user_ids: Sequence[Hashable] | np.ndarray,
    item_ids: Sequence[Hashable] | np.ndarray,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    relevant: Mapping[Hashable, Collection[Hashable]],
    *,
    max_samples: int = 10_000,
    seed: int = 0,
) -> ScoreSamples:
    """Up to max_samples model scores (user vector . item vector; rows aligned with user_ids and item_ids) of
    relevant pairs and as many of uniformly random (user, item) pairs. Only the sampled pairs are scored."""
    rng = np.random.default_rng(seed)
    rows, columns = index_pairs(user_ids, item_ids, relevant)
    if len(rows) > max_samples:
        keep = rng.choice(len(rows), size=max_samples, replace=False)
        rows, columns = rows[keep], columns[keep]
    n_users, n_items = len(user_vectors), len(item_vectors)
    n_random = max(len(rows), 1) if n_users and n_items else 0
    random_rows, random_columns = rng.integers(0, n_users, n_random), rng.integers(0, n_items, n_random)

    def pair_scores(pair_rows: np.ndarray, pair_columns: np.ndarray) -> np.ndarray:
        return np.einsum("pd,pd->p", user_vectors[pair_rows], item_vectors[pair_columns]).astype(np.float64)

    return ScoreSamples(pair_scores(rows, columns), pair_scores(random_rows, random_columns))


def _metric_sort_key(name: str) -> tuple[int, int, str]:
    if name in _COUNT_KEYS:
        return (len(_FAMILY_ORDER) + 1, _COUNT_KEYS.index(name), name)
    match = _METRIC_AT_K.match(name)
    family, k = (match["family"], int(match["k"])) if match else (name, 0)
    rank = _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER)
    return (rank, k, name)


def _k_values(metrics: Mapping[str, float], family: str) -> list[int]:
    ks = [int(m["k"]) for name in metrics if (m := _METRIC_AT_K.match(name)) and m["family"] == family]
    return sorted(ks)


def _format(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(_format(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def _new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    # Imported here, not with the module: the embedding steps of the sensor's refresh import this module (through
    # model.pipeline) and draw nothing, and matplotlib is ~0.45 s of the import on two cores.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plot_recall_curves(rankers: Mapping[str, Mapping[str, float]], path: Path) -> None:
    figure = _new_figure()
    axes = figure.subplots()
    for name, metrics in rankers.items():
        ks = _k_values(metrics, "recall")
        if ks:
            axes.plot(ks, [metrics[f"recall@{k}"] for k in ks], marker="o", label=name)
    axes.set_title("Recall@K on the holdout: model vs baselines")
    axes.set_xlabel("K (recommended posts per user)")
    axes.set_ylabel("Recall@K (mean over evaluated users)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(title="ranker")
    figure.savefig(path)


def _plot_score_distribution(samples: ScoreSamples, path: Path) -> None:
    figure = _new_figure()
    axes = figure.subplots()
    both = np.concatenate([samples.relevant, samples.random])
    both = both[np.isfinite(both)]
    bins = np.histogram_bin_edges(both, bins=40) if len(both) else 10
    axes.hist(samples.random, bins=bins, density=True, alpha=0.55, label=f"random items (n={len(samples.random)})")
    axes.hist(
        samples.relevant,
        bins=bins,
        density=True,
        alpha=0.55,
        label=f"relevant items (n={len(samples.relevant)})",
    )
    axes.set_title("Model score of a user's relevant items vs random items")
    axes.set_xlabel("model score (query . candidate)")
    axes.set_ylabel("density")
    axes.legend()
    figure.savefig(path)


def _plot_coverage(rankers: Mapping[str, Mapping[str, float]], k: int, path: Path) -> None:
    figure = _new_figure()
    axes = figure.subplots()
    names = list(rankers)
    values = [rankers[name].get(f"coverage@{k}", 0.0) for name in names]
    bars = axes.bar(names, values, color=[f"C{i}" for i in range(len(names))])
    axes.bar_label(bars, labels=[f"{value:.1%}" for value in values])
    axes.set_title(f"Catalogue coverage@{k}: share of posts in anyone's top {k}")
    axes.set_xlabel("ranker")
    axes.set_ylabel(f"coverage@{k}")
    # Headroom above 100% for the bar labels. The rankers are named under their bars, slanted so that eight
    # names fit (a one-row legend of them was wider than the figure, and the layout gave up).
    axes.set_ylim(0, 1.15)
    axes.tick_params(axis="x", labelrotation=30)
    figure.savefig(path)


def _plot_segments(segments: Mapping[str, Mapping[str, float]], k: int, path: Path) -> None:
    figure = _new_figure(8.0, 4.5)
    axes = figure.subplots()
    names = [name for name in _USER_SEGMENT_ORDER if name in segments]
    names += [name for name in segments if name not in _USER_SEGMENT_ORDER]
    positions = np.arange(len(names))
    width = 0.38
    tallest = 0.0
    for offset, family in ((-width / 2, "recall"), (width / 2, "ndcg")):
        values = [segments[name].get(f"{family}@{k}", 0.0) for name in names]
        tallest = max([tallest, *values])
        axes.bar(positions + offset, values, width, label=f"{family}@{k}")
    axes.set_xticks(positions, [f"{name}\n(n={segments[name].get('users_evaluated', 0)})" for name in names])
    axes.set_title(f"Model by segment (K={k}): cold-start vs warm users, post segments")
    axes.set_xlabel("segment (n = users evaluated)")
    axes.set_ylabel("metric value")
    axes.set_ylim(0, max(tallest, 0.01) * 1.3)  # headroom for the legend
    axes.legend(title="metric", loc="upper center", ncols=2)
    figure.savefig(path)


def _plot_differences(intervals: RankerIntervals, path: Path) -> None:
    """Model minus each baseline with its paired interval, one panel per metric: a bar clear of 0 is a win."""
    metrics = list(next(iter(intervals.model_minus.values())))
    figure = _new_figure(8.0, 1.2 + 0.6 * len(intervals.model_minus) * len(metrics))
    axes_list = np.atleast_1d(figure.subplots(len(metrics), 1, squeeze=False)[:, 0])
    names = list(intervals.model_minus)
    for axes, metric in zip(axes_list, metrics, strict=True):
        values = [intervals.model_minus[name][metric] for name in names]
        centres = np.array([iv.value for iv in values])
        errors = np.array([[iv.value - iv.low for iv in values], [iv.high - iv.value for iv in values]])
        colours = ["C2" if iv.low > 0 else "C3" if iv.high < 0 else "C7" for iv in values]
        axes.barh(names, centres, xerr=errors, color=colours, capsize=4)
        axes.invert_yaxis()  # the first baseline (popularity) on top
        axes.axvline(0.0, color="black", linewidth=1)
        axes.set_xlabel(f"model {metric} minus the baseline's (paired {intervals.confidence:.0%} interval)")
        axes.set_ylabel("baseline")
        axes.grid(axis="x", alpha=0.3)
    axes_list[0].set_title(
        f"Model minus baselines, {intervals.users} users\ngreen: model better, red: worse, grey: interval holds 0"
    )
    figure.savefig(path)


def _with_interval(interval: Interval | None, signed: bool = False) -> str:
    if interval is None:
        return "-"
    sign = "+" if signed else ""
    return f"{interval.value:{sign}.4f} [{interval.low:{sign}.4f}, {interval.high:{sign}.4f}]"


def _intervals_section(intervals: RankerIntervals | None, image: Path | None) -> list[str]:
    lines = ["## Intervals", ""]
    if intervals is None:
        return [*lines, "No user was evaluated: no intervals.", ""]
    metrics = list(intervals.means[MODEL_LABEL])
    lines += [
        f"Means with {intervals.confidence:.0%} bootstrap intervals over the {intervals.users} evaluated users "
        f"({intervals.resamples} resamples); model minus baseline with paired intervals (the same resampled "
        "users for both). A difference whose interval holds 0 is not a win.",
        "",
    ]
    header = ["ranker", *metrics, *(f"model minus ranker, {metric}" for metric in metrics)]
    rows = [
        [
            name,
            *(_with_interval(by_metric.get(metric)) for metric in metrics),
            *(_with_interval(intervals.model_minus.get(name, {}).get(metric), signed=True) for metric in metrics),
        ]
        for name, by_metric in intervals.means.items()
    ]
    lines.append(_table(header, rows))
    if image is not None:
        lines += ["", f"![Model minus each baseline, with paired intervals]({image.name})"]
    return [*lines, ""]


def _ctr_section(ctr: CtrSummary | None) -> list[str]:
    lines = ["## Click-through rate", ""]
    if ctr is None:
        return [*lines, "No Mixpanel recommendation events were available.", ""]
    lines += ["### Observed (logged Mixpanel impressions and clicks)", ""]
    if ctr.observed.empty:
        lines.append("No recommendation was shown in the logged events.")
    else:
        rows = ctr.observed[["model_version", "requests", "impressions", "clicks", "ctr"]].itertuples(index=False)
        lines.append(_table(["model version", "requests", "impressions", "clicks", "observed CTR"], list(rows)))
    lines += ["", "### Estimated (offline replay of logged clicks; not observed)", ""]
    if ctr.replay is None:
        lines.append("No replay estimate was computed.")
    else:
        replay = ctr.replay
        lines.append(
            _table(
                [
                    "k",
                    "logged clicks",
                    "recovered by candidate top-k",
                    "clicks without a candidate list",
                    "estimated clicks recovered",
                ],
                [
                    [
                        replay.k,
                        replay.logged_clicks,
                        replay.recovered_clicks,
                        replay.clicks_without_list,
                        replay.recovered_share,
                    ]
                ],
            )
        )
        lines += [
            "",
            "Share of logged clicks whose post is in the candidate's top-k for that user. Biased towards "
            "the logging model (only posts it showed could be clicked); compare candidates with it, do not "
            "read it as a CTR.",
        ]
    return [*lines, ""]


def render_report(
    model_version: str,
    metrics: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    segments: Mapping[str, Mapping[str, float]],
    ctr: CtrSummary | None,
    gate_decision: GateDecision,
    out_dir: Path,
    *,
    score_samples: ScoreSamples | None = None,
    intervals: RankerIntervals | None = None,
    gate_metric: str = DEFAULT_GATE_METRIC,
) -> Report:
    """Write the PNG plots and report.md into out_dir (created if missing) and return their paths and the
    Markdown. Image links in the Markdown are relative to out_dir, so the folder can be moved as a whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rankers: dict[str, Mapping[str, float]] = {MODEL_LABEL: metrics, **baselines}
    gate_match = _METRIC_AT_K.match(gate_metric)
    coverage_ks = _k_values(metrics, "coverage")
    focus_k = int(gate_match["k"]) if gate_match else (coverage_ks[-1] if coverage_ks else GATE_K)

    images: dict[str, Path] = {
        "recall_at_k": out_dir / "recall_at_k.png",
        "coverage": out_dir / "coverage.png",
    }
    _plot_recall_curves(rankers, images["recall_at_k"])
    _plot_coverage(rankers, focus_k, images["coverage"])
    if segments:
        images["segments"] = out_dir / "segments.png"
        _plot_segments(segments, focus_k, images["segments"])
    if score_samples is not None:
        images["score_distribution"] = out_dir / "score_distribution.png"
        _plot_score_distribution(score_samples, images["score_distribution"])
    if intervals is not None and intervals.model_minus:
        images["model_minus_baselines"] = out_dir / "model_minus_baselines.png"
        _plot_differences(intervals, images["model_minus_baselines"])

    decision = "**Promoted**" if gate_decision.promote else "**Not promoted**"
    metric_names = sorted({name for values in rankers.values() for name in values}, key=_metric_sort_key)
    lines = [
        f"# Evaluation report: model `{model_version}`",
        "",
        "## Promotion decision",
        "",
        f"{decision} (gate metric `{gate_metric}`): {gate_decision.reason}",
        "",
        "## Offline ranking metrics (holdout interactions, seen posts excluded)",
        "",
        *(f"- {name}: {RANKER_DESCRIPTIONS[name]}" for name in rankers if name in RANKER_DESCRIPTIONS),
        "",
        _table(
            ["metric", *rankers],
            [[name, *(values.get(name) for values in rankers.values())] for name in metric_names],
        ),
        "",
        f"![Recall@K of the model and the baselines]({images['recall_at_k'].name})",
        "",
        f"![Catalogue coverage@{focus_k}]({images['coverage'].name})",
        "",
        *_intervals_section(intervals, images.get("model_minus_baselines")),
        "## Segments (model)",
        "",
    ]
    if segments:
        segment_columns = [
            "users_evaluated",
            f"recall@{focus_k}",
            f"ndcg@{focus_k}",
            f"precision@{focus_k}",
            f"coverage@{focus_k}",
        ]
        lines += [
            _table(
                ["segment", *segment_columns],
                [[name, *(values.get(column) for column in segment_columns)] for name, values in segments.items()],
            ),
            "",
            f"![Model metrics by segment]({images['segments'].name})",
        ]
    else:
        lines.append("No segments were evaluated.")
    lines += ["", *_ctr_section(ctr), "## Score distribution", ""]
    if score_samples is not None:
        lines.append(f"![Model score of relevant vs random items]({images['score_distribution'].name})")
    else:
        lines.append("No score samples were given.")
    markdown = "\n".join(lines) + "\n"
    markdown_path = out_dir / REPORT_FILE
    markdown_path.write_text(markdown, encoding="utf-8")
    return Report(markdown_path=markdown_path, markdown=markdown, images=images)
