"""Real data: what ml.recommend_posts serves on public data sets, against baselines on the same split.

For each data set (HetRec Last.fm 2K, the quantumcomputing and cardano Stack Exchange dumps; see
teamu_assets.realdata for the mappings): each user's last 20% of distinct engaged items by first-engagement time
are held out (teamu_assets.realdata.per_user_holdout, users with >= 2 items); the training part goes through the
raw contract (raw_supabase tables and Mixpanel export files) into a scratch database on the running server; the
product's full_refresh job runs on it as documented (ingest, dbt, training with the DEFAULT model config, the
promotion gate, embeddings); then every holdout user's ml.recommend_posts(user, 50) is scored. When the gate
does not promote the model, serving falls back to popularity: the bench records it and scores what is served
all the same, labelled "model (fallback: popularity)"; then it promotes the refused model in the scratch database
anyway, rewrites the embeddings with it and scores it too ("model the gate refused, served anyway", with paired
intervals against the fallback and each baseline): what the refusal kept out of serving.

Baselines, computed in the same run on the same training part and holdout, with the same exclusions (posts the
user engaged with in training, own posts):
- popularity: training engagements per post (distinct users);
- itemitem: EASE (Steck 2019, teamu_assets.evaluation.rankers.ease_scores) on the binary training engagements,
  over the 5,000 most engaged posts, l2 picked from a small grid by recall@20 on a validation slice of the
  training part (each user's last 20% of training items), never on the holdout;
- two-tower id-only: the TFRS tutorial model (teamu_assets.model.baselines) on the training (user, post) pairs,
  its batch size, learning rate (two setups) and epoch count picked on the same validation slice.
Metrics per user: recall@10/20/50 and NDCG@10, reported as mean ± standard error over the holdout users, and a
paired bootstrap 95% interval (1,000 resamples of users, seeded) of model minus each baseline for recall@20 and
NDCG@10. The last line printed for each data set is
    <dataset>: model R@20=<x> NDCG@10=<y> popularity R@20=<p> itemitem R@20=<e>
Full results go to --out as JSON.

Data: ../shared/data relative to the project root (override with --data-dir or TEAMU_REAL_DATA_DIR). Needs the
embedded server running (`teamu db start`) or TEAMU_DATABASE_URL.

    .venv/bin/python bench/bench_real_data.py [--datasets lastfm se-quantumcomputing se-cardano]
        [--epochs N] [--embedding-dim D] [--seed N] [--batch-size N] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import teamu_assets  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is first imported)
from teamu_assets.db import bootstrap, registry
from teamu_assets.db.connection import connect, resolve_url, scratch_database
from teamu_assets.evaluation.intervals import INTERVAL_METRICS, RankerIntervals, ranker_intervals
from teamu_assets.evaluation.metrics import (
    DEFAULT_K_VALUES,
    PerUser,
    RankedEvaluation,
    evaluate_ranked_per_user,
    ranked_from_lists,
)
from teamu_assets.evaluation.rankers import DEFAULT_EASE_MAX_ITEMS, ease_scores, popularity_scores, rank
from teamu_assets.model.baselines import IdOnlyResult, train_id_only_two_tower
from teamu_assets.model.pipeline import evaluated_model_dir
from teamu_assets.model.train import ServingTerms, read_model_config
from teamu_assets.realdata import RealDataset, per_user_holdout, read_lastfm, read_stackexchange, write_real_dataset
from teamu_assets.settings import PROJECT_ROOT, Settings, default_landing_dir

DATASETS = ("lastfm", "se-quantumcomputing", "se-cardano")
HOLDOUT_FRACTION = 0.2
MIN_ITEMS = 2
SERVED = max(DEFAULT_K_VALUES)
REPORTED = ("recall@10", "recall@20", "recall@50", "ndcg@10")
RESAMPLES = 1000
BOOTSTRAP_SEED = 0
EASE_L2_GRID = (5.0, 20.0, 50.0, 200.0, 500.0, 2000.0)
# The id-only two-tower: a fixed dimension; batch size, learning rate and epochs are picked on the validation
# slice. A small batch with a high rate suits the small Stack Exchange sites, which give few steps an epoch; on
# Last.fm that overfits after one epoch, where a larger batch with a lower rate peaks after ~9.
TWO_TOWER = {"embedding_dim": 64, "seed": 42}
TWO_TOWER_GRID = ({"batch_size": 256, "learning_rate": 0.005}, {"batch_size": 1024, "learning_rate": 0.001})
TWO_TOWER_MAX_EPOCHS = 30
SERVING_CONNECTIONS = 4
MODEL, POPULARITY, ITEMITEM, TWO_TOWER_ID_ONLY = "model", "popularity", "itemitem", "two-tower id-only"
# The same function with index scans off in the session: it ranks every eligible post exactly, so the served
# lists' loss to the HNSW scan shows apart from the model's own quality.
MODEL_EXACT = "model, exact scan"
# Where the gate refuses the model, the bench promotes it in its scratch database anyway, embeds with it and
# serves it: whether the refusal kept a worse ranker out of serving is measured, not assumed.
REFUSED = "model the gate refused, served anyway"
BASELINES = (POPULARITY, ITEMITEM, TWO_TOWER_ID_ONLY)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_data_dir() -> Path:
    return Path(os.environ.get("TEAMU_REAL_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data")


def read_dataset(name: str, data_dir: Path) -> RealDataset:
    if name == "lastfm":
        return read_lastfm(data_dir / "lastfm-2k", name)
    site = name.removeprefix("se-")
    return read_stackexchange(data_dir / "stackexchange" / site, name)


@dataclass
class Stopwatch:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        _log(f"  {name} ...")
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        _log(f"  {name}: {self.seconds[name]:.1f} s")


@dataclass(frozen=True, eq=False)
class Split:
    """What every ranker is scored on: the holdout users (sorted), their held-out posts, and what each of them may
    not be recommended (posts engaged with in training, own posts)."""

    users: np.ndarray
    relevant: dict[int, set[int]]
    exclude: dict[int, set[int]]
    catalogue: np.ndarray  # every post id


def _items_by_user(frame: pd.DataFrame) -> dict[int, set[int]]:
    return {int(user): set(posts) for user, posts in frame.groupby("user_id")["post_id"]}


def make_split(train: RealDataset, holdout: pd.DataFrame) -> Split:
    users = np.sort(holdout["user_id"].unique())
    engaged = _items_by_user(train.engagements)
    own = _items_by_user(train.posts)
    return Split(
        users=users,
        relevant=_items_by_user(holdout),
        exclude={int(user): engaged.get(int(user), set()) | own.get(int(user), set()) for user in users},
        catalogue=train.posts["post_id"].to_numpy(),
    )


def evaluate_lists(lists: dict[int, list[int]], split: Split) -> RankedEvaluation:
    """metrics.py's figures of ranked lists, with each holdout user's values in split.users order (so that two
    rankers' values are paired user by user)."""
    ordered = {user: lists.get(user, []) for user in split.users.tolist()}
    return evaluate_ranked_per_user(
        ranked_from_lists(ordered, split.relevant, split.catalogue), split.relevant, DEFAULT_K_VALUES
    )


def lists_from_scores(split: Split, item_ids: np.ndarray, scores: np.ndarray | Callable) -> dict[int, list[int]]:
    ranked = rank(split.users, item_ids, scores, split.exclude, SERVED)
    return {
        int(user): [int(item_ids[p]) for p in row if p >= 0]
        for user, row in zip(split.users.tolist(), ranked.positions, strict=True)
    }


# --- baselines ---------------------------------------------------------------------------------------------


def popularity_lists(train: RealDataset, split: Split) -> dict[int, list[int]]:
    counts = train.engagements.groupby("post_id").size().reindex(split.catalogue, fill_value=0).to_numpy()
    return lists_from_scores(split, split.catalogue, popularity_scores(len(split.users), counts.astype(np.float64)))


def _validation(train: RealDataset) -> tuple[RealDataset, Split]:
    """The training part's own leave-last-out split: what the baselines' settings are picked on."""
    fit, valid = per_user_holdout(train, HOLDOUT_FRACTION, MIN_ITEMS)
    return fit, make_split(fit, valid)


def _mean_recall_at_20(lists: dict[int, list[int]], split: Split) -> float:
    return float(evaluate_lists(lists, split).metrics["recall@20"])


def itemitem_lists(train: RealDataset, split: Split) -> tuple[dict[int, list[int]], dict[str, Any]]:
    fit, valid = _validation(train)
    grid: dict[str, float] = {}
    for l2 in EASE_L2_GRID:
        scores = ease_scores(
            fit.engagements["user_id"].to_numpy(),
            fit.engagements["post_id"].to_numpy(),
            valid.users,
            valid.catalogue,
            l2=l2,
        )
        grid[f"{l2:g}"] = _mean_recall_at_20(lists_from_scores(valid, valid.catalogue, scores), valid)
        _log(f"    EASE l2={l2:g}: validation recall@20 {grid[f'{l2:g}']:.4f}")
    best = max(EASE_L2_GRID, key=lambda l2: (grid[f"{l2:g}"], -l2))
    scores = ease_scores(
        train.engagements["user_id"].to_numpy(),
        train.engagements["post_id"].to_numpy(),
        split.users,
        split.catalogue,
        l2=best,
    )
    settings = {"l2": best, "max_items": DEFAULT_EASE_MAX_ITEMS, "validation_recall@20": grid}
    return lists_from_scores(split, split.catalogue, scores), settings


def _id_only_lists(
    result_user_ids: np.ndarray,
    user_vectors: np.ndarray,
    result_item_ids: np.ndarray,
    item_vectors: np.ndarray,
    split: Split,
) -> dict[int, list[int]]:
    """Dot products of the holdout users' vectors with the posts' (posts without a vector are never served)."""
    rows = pd.Index(result_user_ids.astype(np.int64)).get_indexer(split.users)
    columns = pd.Index(result_item_ids.astype(np.int64)).get_indexer(split.catalogue)
    scores = np.full((len(split.users), len(split.catalogue)), -np.inf, dtype=np.float32)
    known = np.ix_(rows >= 0, columns >= 0)
    scores[known] = user_vectors[rows[rows >= 0]] @ item_vectors[columns[columns >= 0]].T
    return lists_from_scores(split, split.catalogue, scores)


def two_tower_lists(train: RealDataset, split: Split) -> tuple[dict[int, list[int]], dict[str, Any]]:
    fit, valid = _validation(train)
    curves: dict[str, list[float]] = {}
    for setup in TWO_TOWER_GRID:
        curve = curves.setdefault(_setup_name(setup), [])

        def validate(epoch: int, so_far: IdOnlyResult, curve: list[float] = curve) -> None:
            lists = _id_only_lists(so_far.user_ids, so_far.user_vectors, so_far.item_ids, so_far.item_vectors, valid)
            curve.append(_mean_recall_at_20(lists, valid))

        train_id_only_two_tower(
            fit.engagements["user_id"].to_numpy(),
            fit.engagements["post_id"].to_numpy(),
            epochs=TWO_TOWER_MAX_EPOCHS,
            after_epoch=validate,
            **TWO_TOWER,
            **setup,
        )
        _log(f"    two-tower id-only {_setup_name(setup)}: validation recall@20 {max(curve):.4f}")
    # The setup and epoch count with the best validation recall@20 (the first such, by grid order then epoch).
    best, epochs = max(
        ((setup, epoch) for setup in TWO_TOWER_GRID for epoch in range(1, TWO_TOWER_MAX_EPOCHS + 1)),
        key=lambda pair: (curves[_setup_name(pair[0])][pair[1] - 1], -TWO_TOWER_GRID.index(pair[0]), -pair[1]),
    )
    result = train_id_only_two_tower(
        train.engagements["user_id"].to_numpy(),
        train.engagements["post_id"].to_numpy(),
        epochs=epochs,
        **TWO_TOWER,
        **best,
    )
    lists = _id_only_lists(result.user_ids, result.user_vectors, result.item_ids, result.item_vectors, split)
    return lists, {**TWO_TOWER, **best, "epochs": epochs, "validation_recall@20_by_epoch": curves}


def _setup_name(setup: dict[str, Any]) -> str:
    return f"batch {setup['batch_size']}, lr {setup['learning_rate']:g}"


# --- the product -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductRun:
    success: bool
    failed_steps: list[str]
    model_version: str
    promoted: bool
    gate: dict[str, Any]  # the promotion gate's decision (rule, reason, figures)
    evaluation_metrics: dict[str, Any]  # the product's own evaluation (its temporal split), as recorded
    fallback_decay: float | None  # the popularity fallback's decay the evaluation chose on validation
    training: dict[str, Any]  # the evaluated training: its epochs, best epoch and the serving terms it chose


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """dbt's subprocess writes its log to file descriptor 1: sent to stderr, stdout keeps the results alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _materialize(home: Path, url: str, assets: list[Any], **kwargs: Any) -> Any:
    """Dagster's materialize() of the product's assets on the scratch database, in an ephemeral instance."""
    from dagster import DagsterInstance, materialize

    from teamu_assets import definitions

    with _stdout_to_stderr():
        return materialize(
            assets, instance=DagsterInstance.ephemeral(), resources=definitions.build_resources(home, url), **kwargs
        )


def run_full_refresh(home: Path, url: str, model_config: dict[str, Any]) -> ProductRun:
    """The full_refresh job's assets and checks, materialized as tests/e2e/test_full_graph.py does, without
    raising: a model the gate refuses (or a failed blocking check) still leaves something to serve."""
    from teamu_assets import definitions
    from teamu_assets.jobs import full_refresh_job

    run_config: dict[str, Any] = {"ops": {"teamu_dbt_models": {"config": {"full_refresh": True}}}}
    if model_config:
        run_config["ops"]["two_tower_model"] = {"config": model_config}
    result = _materialize(
        home,
        url,
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        selection=full_refresh_job.selection,
        run_config=run_config,
        raise_on_error=False,
    )
    failed = [event.step_key for event in result.all_events if event.is_step_failure]
    evaluation = registry.latest_evaluation(url)
    if evaluation is None:
        # Not the gate saying no (that is measured): the run broke before evaluating, nothing to measure.
        raise RuntimeError(f"the full_refresh run stopped before the evaluation; failed steps: {failed}")
    promoted = registry.promoted_model(url)
    is_promoted = bool(evaluation.promoted and promoted and promoted.model_version == evaluation.model_version)
    return ProductRun(
        success=result.success,
        failed_steps=failed,
        model_version=evaluation.model_version,
        promoted=is_promoted,
        gate=dict(evaluation.gate),
        evaluation_metrics=dict(evaluation.metrics),
        fallback_decay=registry.fallback_decay(url),
        training=training_summary(url, evaluation.model_version),
    )


def training_summary(url: str, model_version: str) -> dict[str, Any]:
    """What the evaluated training recorded beside its towers (model_config.json): its batch size and learning
    rate, the epochs it ran and kept, and the serving terms it chose on validation."""
    model_dir = evaluated_model_dir(Path(registry.model_version(url, model_version).artifact_path))
    config = read_model_config(model_dir)
    tower, params = config["tower"], config["params"]
    return {
        "batch_size": params["batch_size"],
        "learning_rate": params["learning_rate"],
        "epochs_run": len(config["history"]),
        "best_epoch": config["best_epoch"],
        "serving_terms": {term.name: tower[term.name] for term in fields(ServingTerms)},
    }


def serve_refused_model(home: Path, url: str, model_version: str) -> None:
    """Promotes the model the gate refused and writes its embeddings, as the post_freshness job rewrites them
    (the scratch database only: the product never overrides its gate)."""
    from teamu_assets.assets.ml import post_embeddings, user_embeddings

    with connect(url) as conn:
        registry.promote(conn, model_version)
    rewrite = {"config": {"mode": "rewrite"}}
    _materialize(
        home,
        url,
        [post_embeddings, user_embeddings],
        run_config={"ops": {"ml__post_embeddings": rewrite, "ml__user_embeddings": rewrite}},
    )


def served_lists(url: str, split: Split, *, exact: bool = False) -> dict[int, list[int]]:
    """Every holdout user's ml.recommend_posts(user, 50), over a few connections at once: each call runs on one
    server core, so one connection would leave the others idle. With `exact`, index scans are off in the
    sessions: the function's HNSW scan becomes a scan and sort of every eligible post."""

    def serve(users: list[int]) -> dict[int, list[int]]:
        with connect(url) as conn:
            if exact:
                conn.execute("set enable_indexscan = off")
            return {
                user: [row[0] for row in conn.execute("select post_id from ml.recommend_posts(%s, %s)", (user, SERVED))]
                for user in users
            }

    users = split.users.tolist()
    with ThreadPoolExecutor(SERVING_CONNECTIONS) as pool:
        parts = pool.map(serve, [users[start::SERVING_CONNECTIONS] for start in range(SERVING_CONNECTIONS)])
    served = {user: posts for part in parts for user, posts in part.items()}
    return {user: served[user] for user in users}


# --- one data set ------------------------------------------------------------------------------------------


def _summary(per_user: PerUser) -> dict[str, dict[str, float]]:
    """Mean and standard error over users of each reported metric."""
    summary = {}
    for metric in REPORTED:
        values = per_user[metric]
        se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
        summary[metric] = {"mean": float(values.mean()), "se": se}
    return summary


def bench_dataset(name: str, data_dir: Path, server_url: str, model_config: dict[str, Any]) -> dict[str, Any]:
    watch = Stopwatch()
    _log(f"{name}:")
    with watch.stage("read"):
        dataset = read_dataset(name, data_dir)
    with watch.stage("holdout"):
        train, holdout = per_user_holdout(dataset, HOLDOUT_FRACTION, MIN_ITEMS)
        split = make_split(train, holdout)

    lists: dict[str, dict[int, list[int]]] = {}
    settings: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix=f"bench_real_{name}_") as home,
        scratch_database(server_url, "teamu_bench_real") as url,
    ):
        home_path = Path(home)
        with watch.stage("write raw contract"):
            bootstrap.prepare_app_database(url)
            written = write_real_dataset(url, train, default_landing_dir(home_path))
        with watch.stage("full_refresh"):
            product = run_full_refresh(home_path, url, model_config)
        _log(f"    run success {product.success}, promoted {product.promoted} ({product.model_version})")
        with watch.stage("serve"):
            lists[MODEL] = served_lists(url, split)
        if product.promoted:
            with watch.stage("serve, exact scan"):
                lists[MODEL_EXACT] = served_lists(url, split, exact=True)
        else:
            with watch.stage("serve the refused model"):
                serve_refused_model(home_path, url, product.model_version)
                lists[REFUSED] = served_lists(url, split)

    with watch.stage("popularity"):
        lists[POPULARITY] = popularity_lists(train, split)
    with watch.stage("itemitem"):
        lists[ITEMITEM], settings[ITEMITEM] = itemitem_lists(train, split)
    with watch.stage("two-tower id-only"):
        lists[TWO_TOWER_ID_ONLY], settings[TWO_TOWER_ID_ONLY] = two_tower_lists(train, split)

    with watch.stage("metrics"):
        evaluations = {ranker: evaluate_lists(ranker_lists, split) for ranker, ranker_lists in lists.items()}
        intervals = ranker_intervals(
            evaluations[MODEL].per_user,
            {baseline: evaluations[baseline].per_user for baseline in BASELINES},
            metrics=INTERVAL_METRICS,
            resamples=RESAMPLES,
            seed=BOOTSTRAP_SEED,
        )
        if intervals is None:
            raise ValueError(f"{name}: no holdout user to evaluate")
        model_minus = _differences(intervals)
        if REFUSED in lists:
            # The refused model against what was served in its place (and the baselines), paired user by user.
            refused = ranker_intervals(
                evaluations[REFUSED].per_user,
                {ranker: evaluations[ranker].per_user for ranker in (MODEL, *BASELINES)},
                metrics=INTERVAL_METRICS,
                resamples=RESAMPLES,
                seed=BOOTSTRAP_SEED,
            )
            assert refused is not None  # the same users as the intervals above
    return {
        "dataset": name,
        "rows": dataset.row_counts(),
        "train_rows": written,
        "holdout": {"users": len(split.users), "pairs": len(holdout), "fraction": HOLDOUT_FRACTION},
        "product": {
            "label": MODEL if product.promoted else "model (fallback: popularity)",
            "run_success": product.success,
            "failed_steps": product.failed_steps,
            "model_version": product.model_version,
            "promoted": product.promoted,
            "gate": product.gate,
            "evaluation_metrics": product.evaluation_metrics,
            "fallback_decay": product.fallback_decay,
            "training": product.training,
            "model_config_overrides": model_config,
        },
        "rankers": {
            ranker: {
                **_summary(evaluations[ranker].per_user),
                "coverage@50": evaluations[ranker].metrics["coverage@50"],
                "users_evaluated": evaluations[ranker].metrics["users_evaluated"],
                **({"settings": settings[ranker]} if ranker in settings else {}),
            }
            for ranker in lists
        },
        "model_minus": model_minus,
        **({"refused_minus": _differences(refused)} if REFUSED in lists else {}),
        **({"served_vs_exact": _agreement(lists[MODEL], lists[MODEL_EXACT])} if MODEL_EXACT in lists else {}),
        "bootstrap": {
            "resamples": intervals.resamples,
            "seed": BOOTSTRAP_SEED,
            "confidence": intervals.confidence,
            "paired_over": "users",
        },
        "seconds": watch.seconds,
    }


def _differences(intervals: RankerIntervals) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        baseline: {
            metric: {"difference": interval.value, "ci95": interval.as_json()} for metric, interval in by_metric.items()
        }
        for baseline, by_metric in intervals.model_minus.items()
    }


def _agreement(served: dict[int, list[int]], exact: dict[int, list[int]]) -> dict[str, float]:
    """The share of each user's exact top 10 / top 50 that the served list of the same length holds, averaged."""

    def overlap(user: int, k: int) -> float:
        return len(set(served[user][:k]) & set(exact[user][:k])) / max(len(exact[user][:k]), 1)

    return {f"overlap@{k}": float(np.mean([overlap(user, k) for user in exact])) for k in (10, SERVED)}


def print_results(results: dict[str, Any]) -> None:
    name, rankers, product = results["dataset"], results["rankers"], results["product"]
    holdout = results["holdout"]
    print(
        f"\n{name}: {holdout['users']} holdout users, {holdout['pairs']} held-out (user, post) pairs, "
        f"{results['rows']['posts']} posts; model {product['model_version']} "
        f"{'promoted' if product['promoted'] else 'NOT promoted: serving falls back to popularity'}"
    )
    print(f"  promotion gate: {product['gate'].get('reason', '(no reason recorded)')}")
    print(f"  popularity fallback's decay (chosen on validation): {product['fallback_decay']}")
    training, terms = product["training"], product["training"]["serving_terms"]
    print(
        f"  training: batch {training['batch_size']}, learning rate {training['learning_rate']:g}, best epoch "
        f"{training['best_epoch']} of {training['epochs_run']}; serving terms (chosen on validation): time terms "
        f"{'on' if terms['use_time_terms'] else 'off'}, popularity weight {terms['popularity_weight']:g} (new users "
        f"{terms['new_user_popularity_weight']:g}), item-item weight {terms['itemitem_weight']:g}"
    )
    labels = {
        MODEL: product["label"],
        POPULARITY: POPULARITY,
        ITEMITEM: f"itemitem (EASE, l2={rankers[ITEMITEM]['settings']['l2']:g})",
        TWO_TOWER_ID_ONLY: "two-tower id-only ({batch_size}, {learning_rate:g}, {epochs} ep.)".format(
            **rankers[TWO_TOWER_ID_ONLY]["settings"]
        ),
    }
    for extra in (MODEL_EXACT, REFUSED):
        if extra in rankers:
            labels[extra] = extra
    print(f"  {'ranker':<40}" + "".join(f"{metric:>18}" for metric in REPORTED))
    for ranker, label in labels.items():
        cells = "".join(f"{rankers[ranker][m]['mean']:>10.4f} ± {rankers[ranker][m]['se']:.4f}" for m in REPORTED)
        print(f"  {label:<40}{cells}")
    for prefix, key in (("model", "model_minus"), ("refused", "refused_minus")):
        for baseline, by_metric in results.get(key, {}).items():
            cells = "   ".join(
                f"{metric} {entry['difference']:+.4f} [{entry['ci95'][0]:+.4f}, {entry['ci95'][1]:+.4f}]"
                for metric, entry in by_metric.items()
            )
            print(f"  {f'{prefix} - {baseline}':<39} {cells}")
    if "served_vs_exact" in results:
        overlaps = ", ".join(f"{key} {value:.3f}" for key, value in results["served_vs_exact"].items())
        print(f"  served (HNSW) against the exact scan, share of the exact list served: {overlaps}")
    print("  seconds: " + ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in results["seconds"].items()))
    print(
        f"{name}: model R@20={rankers[MODEL]['recall@20']['mean']:.4f} NDCG@10={rankers[MODEL]['ndcg@10']['mean']:.4f}"
        f" popularity R@20={rankers[POPULARITY]['recall@20']['mean']:.4f}"
        f" itemitem R@20={rankers[ITEMITEM]['recall@20']['mean']:.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=None, help="default: TEAMU_REAL_DATA_DIR or ../shared/data")
    parser.add_argument("--epochs", type=int, default=None, help="override the model's epochs (quick runs only)")
    parser.add_argument("--embedding-dim", type=int, default=None, help="override the model's embedding dimension")
    parser.add_argument("--seed", type=int, default=None, help="override the model's training seed (default 42)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the model's training batch size")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default TEAMU_HOME/bench/real_data.json)")
    args = parser.parse_args()
    settings = Settings.from_env()
    data_dir = (args.data_dir or default_data_dir()).resolve()
    out = args.out or settings.home / "bench" / "real_data.json"
    model_config = {
        key: value
        for key, value in (
            ("epochs", args.epochs),
            ("embedding_dim", args.embedding_dim),
            ("seed", args.seed),
            ("batch_size", args.batch_size),
        )
        if value is not None
    }
    server_url = resolve_url(settings.database_url, settings.pgdata)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/bench_real_data.py", *sys.argv[1:]]),
        "data_dir": str(data_dir),
        "datasets": {},
    }
    for name in args.datasets:
        results = bench_dataset(name, data_dir, server_url, model_config)
        report["datasets"][name] = results
        print_results(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    report["seconds"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults: {out} ({report['seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
