"""The ML half of the graph: training data -> two-tower model -> evaluation and promotion gate -> embeddings.

Thin glue: TensorFlow lives in teamu_assets.model and is imported inside the asset bodies, so loading the code
location (the UI, sensor ticks) never pays for it.
"""

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from teamu_assets.contract import HISTORY_LENGTH
from teamu_assets.db import features, registry
from teamu_assets.evaluation.gate import DEFAULT_TOLERANCE
from teamu_assets.model.params import TrainParams
from teamu_assets.resources import ArtifactStore, TeamuDatabase, TowerPreloader
from teamu_assets.settings import Settings

MARTS = [AssetKey(["marts", name]) for name in ("interactions", "user_features", "post_features")]
DEFAULT_EMBEDDING_DIM = Settings.from_env().embedding_dim


def _version(prefix: str) -> str:
    return f"{prefix}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in header) + " |"
        for row in rows
    ]
    return "\n".join(lines)


class DatasetConfig(Config):
    holdout_fraction: float = 0.2
    """Share of the interaction time span after the cutoff: the evaluation period."""
    history_length: int = HISTORY_LENGTH
    validation_fraction: float = 0.1
    """Share of the training period (its end) held out for early stopping; never from the evaluation period."""


@asset(group_name="ml", deps=MARTS, kinds={"python", "parquet"})
def training_dataset(
    context: AssetExecutionContext, config: DatasetConfig, database: TeamuDatabase, artifacts: ArtifactStore
) -> Output[str]:
    """Temporal split of marts.interactions into train/validation/evaluation Parquet files; each example's history
    holds only interactions before its time."""
    from teamu_assets.model.dataset import build_training_examples, write_dataset

    url = database.url()
    interactions = features.read_interactions(url)
    if interactions.empty:
        raise ValueError("marts.interactions is empty: load data first (`teamu seed`, then the dbt models)")
    start, end = interactions["occurred_at"].min(), interactions["occurred_at"].max()
    cutoff = (end - (end - start) * config.holdout_fraction).floor("h")
    data = build_training_examples(
        interactions,
        features.read_user_features(url),
        features.read_post_features(url),
        cutoff,
        history_length=config.history_length,
        validation_fraction=config.validation_fraction,
    )
    manifest = write_dataset(data, artifacts.path("artifacts", "datasets", _version("ds")))
    context.log.info(f"dataset at {manifest.directory}: {manifest.rows}")
    return Output(
        manifest.directory,
        metadata={
            "path": MetadataValue.path(manifest.directory),
            "cutoff": manifest.cutoff,
            "validation_start": manifest.validation_start or "",
            **{f"rows_{split}": rows for split, rows in manifest.rows.items()},
            "users": manifest.users,
            "posts": manifest.posts,
            "positives_per_kind": MetadataValue.json(manifest.positives_per_kind),
        },
    )


class TrainConfig(Config):
    """The knobs of TrainParams a run may override; the defaults are TrainParams' own."""

    epochs: int = TrainParams.epochs
    batch_size: int = TrainParams.batch_size
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    temperature: float = TrainParams.temperature
    learning_rate: float = TrainParams.learning_rate
    patience: int = TrainParams.patience
    seed: int = TrainParams.seed
    refit: bool = True
    """Serve a model retrained on every example up to now (the evaluated run's epochs and serving terms); the
    evaluated model, trained before the evaluation period, stays beside it under evaluated/. Off: serve the
    evaluated model itself (half the training time, but the newest period's posts and taste never trained)."""


# Under a served model's directory: the model trained before the evaluation period, which the gate judged.
EVALUATED_MODEL_DIR = "evaluated"


def evaluated_model_dir(model_dir: Path) -> Path:
    """The model the evaluation period judged: the refit's evaluated/ sibling, or the model itself."""
    evaluated = Path(model_dir) / EVALUATED_MODEL_DIR
    return evaluated if evaluated.is_dir() else Path(model_dir)


@asset(group_name="ml", kinds={"tensorflow"})
def two_tower_model(
    context: AssetExecutionContext,
    config: TrainConfig,
    database: TeamuDatabase,
    artifacts: ArtifactStore,
    training_dataset: str,
) -> Output[dict[str, str]]:
    """TFRS two-tower model trained on the dataset's train split with early stopping on validation recall@20
    (the model evaluation_report judges), then refit on every example for serving; SavedModel towers,
    vocabularies and the serving index (BruteForce, ScaNN) under artifacts/models/<version>."""
    from teamu_assets.model.export import export_serving_indexes
    from teamu_assets.model.train import refit, train

    url = database.url()
    version = _version("tt")
    model_dir = artifacts.path("artifacts", "models", version)
    params = TrainParams(**config.model_dump(exclude={"refit"}))
    user_features = features.read_user_features(url)
    post_features = features.read_post_features(url)
    dataset_dir = Path(training_dataset)
    evaluated_dir = model_dir / EVALUATED_MODEL_DIR if config.refit else model_dir
    result = train(dataset_dir, user_features, post_features, params, evaluated_dir, log=context.log.info)
    if config.refit:
        context.log.info(f"refit on every example for serving: {result.best_epoch} epochs")
        served = refit(dataset_dir, user_features, post_features, result, model_dir, log=context.log.info)
    else:
        served = result
    indexes = export_serving_indexes(model_dir, post_features, model_dir / "serving")
    registry.register_model_version(url, version, {**config.model_dump(), "dataset": training_dataset}, str(model_dir))
    history = result.history
    return Output(
        {
            "model_version": version,
            "model_dir": str(model_dir),
            "evaluated_model_dir": str(evaluated_dir),
            "dataset_dir": training_dataset,
        },
        metadata={
            "model_version": version,
            "path": MetadataValue.path(str(model_dir)),
            "refit": config.refit,
            "refit_examples": served.train_examples,
            "time_terms": served.tower_config.use_time_terms,
            "popularity_weight": served.tower_config.popularity_weight,
            "epochs_run": len(history),
            "best_epoch": result.best_epoch,
            "best_validation_recall@20": result.best_validation_recall or 0.0,
            "final_loss": float(history[-1]["loss"]),
            "examples_per_second": float(history[-1]["examples_per_second"]),
            "history": MetadataValue.md(_md_table(history)),
            "serving_indexes": MetadataValue.json({kind: str(path) for kind, path in indexes.items()}),
        },
    )


class GateConfig(Config):
    tolerance: float = DEFAULT_TOLERANCE
    """Rule 2 of the gate: a candidate that beats popularity is promoted unless its recall@20 is below the
    promoted model's by more than this (rule 1, beating popularity by the paired interval, has no knob)."""


def _embeddings_as_of(
    model_dir: Path, interactions: pd.DataFrame, users: pd.DataFrame, posts: pd.DataFrame, cutoff: pd.Timestamp
) -> tuple[Any, Any]:
    from teamu_assets.evaluation.offline import Embeddings
    from teamu_assets.model.dataset import post_features_as_of, user_features_as_of
    from teamu_assets.model.train import embed_posts, embed_users

    before = interactions.loc[interactions["occurred_at"] < cutoff]
    counts = before.groupby(["post_id", "kind"]).size().unstack(fill_value=0).reset_index()
    for kind in ("view", "upvote"):
        if kind not in counts:
            counts[kind] = 0
    user_ids, user_vectors = embed_users(model_dir, user_features_as_of(interactions, users, cutoff))
    post_ids, post_vectors = embed_posts(model_dir, post_features_as_of(counts, posts, as_of=cutoff))
    return Embeddings(user_ids, user_vectors), Embeddings(post_ids, post_vectors)


@asset(group_name="ml", kinds={"python"})
def evaluation_report(
    context: AssetExecutionContext,
    config: GateConfig,
    database: TeamuDatabase,
    artifacts: ArtifactStore,
    two_tower_model: dict[str, str],
) -> MaterializeResult:
    """Ranking metrics on the evaluation period against popularity, item-item (EASE), random, the promoted model
    and (synthetic data) the oracle, with bootstrap intervals; segments, CTR, plots; the promotion gate's
    decision. Rows in ml.model_evaluations; the blocking check promotion_gate turns a refusal into a failed
    check that stops the embedding assets."""
    from teamu_assets.db.recommend import install_serving_functions
    from teamu_assets.evaluation.gate import DEFAULT_GATE_METRIC, promotion_decision
    from teamu_assets.evaluation.intervals import intervals_json
    from teamu_assets.evaluation.offline import evaluate_embeddings
    from teamu_assets.evaluation.report import render_report
    from teamu_assets.model.dataset import read_manifest

    url = database.url()
    # The model trained before the evaluation period: the refit served beside it has seen that period.
    version, model_dir = two_tower_model["model_version"], evaluated_model_dir(Path(two_tower_model["model_dir"]))
    manifest = read_manifest(Path(two_tower_model["dataset_dir"]))
    cutoff = pd.Timestamp(manifest.cutoff)
    interactions = features.read_interactions(url)
    users, posts = features.read_user_features(url), features.read_post_features(url)
    train = interactions.loc[interactions["occurred_at"] < cutoff]
    evaluation = interactions.loc[interactions["occurred_at"] >= cutoff]

    user_vectors, post_vectors = _embeddings_as_of(model_dir, interactions, users, posts, cutoff)
    promoted = registry.promoted_model(url)
    previous = None
    if promoted is not None and promoted.model_version != version:
        previous_dir = evaluated_model_dir(Path(promoted.artifact_path))
        previous = _embeddings_as_of(previous_dir, interactions, users, posts, cutoff)
    oracle = _oracle(artifacts, cutoff)
    result = evaluate_embeddings(
        train=train,
        evaluation=evaluation,
        posts=posts,
        cutoff=cutoff,
        users=user_vectors,
        items=post_vectors,
        previous=previous,
        oracle_scores=oracle,
        recommendation_events=features.read_recommendation_events(url),
    )
    vs_popularity = None if result.intervals is None else result.intervals.model_minus["popularity"]
    decision = promotion_decision(
        result.metrics,
        result.baselines.get("previous"),
        None if vs_popularity is None else vs_popularity[DEFAULT_GATE_METRIC],
        popularity_metrics=result.baselines["popularity"],
        tolerance=config.tolerance,
    )
    report = render_report(
        version,
        result.metrics,
        result.baselines,
        result.segments,
        result.ctr,
        decision,
        artifacts.path("reports", version),
        score_samples=result.score_samples,
        intervals=result.intervals,
    )
    metrics_json: dict[str, Any] = dict(result.metrics)
    baselines_json: dict[str, Any] = {name: dict(values) for name, values in result.baselines.items()}
    if result.intervals is not None:
        model_intervals, baseline_intervals = intervals_json(result.intervals)
        metrics_json |= model_intervals
        for name, entries in baseline_intervals.items():
            baselines_json[name] |= entries
    registry.record_evaluation(
        url,
        version,
        metrics=metrics_json,
        baselines=baselines_json,
        segments=result.segments,
        promote=decision.promote,
        report_path=str(report.markdown_path),
        gate=decision.as_json(),
    )
    # Whatever the gate decides, ml.recommend_posts must answer: with no model promoted it serves its popularity
    # fallback. The functions are installed here, before the gate's check can stop the embedding assets.
    install_serving_functions(url)
    (context.log.info if decision.promote else context.log.warning)(decision.reason)
    recall = float(result.metrics["recall@20"])
    metadata: dict[str, Any] = {
        "model_version": version,
        "promoted": decision.promote,
        "gate": decision.reason,
        "gate_rule": decision.rule,
        "recall@20": recall,
        "ndcg@10": float(result.metrics["ndcg@10"]),
        "users_evaluated": result.users_evaluated,
        "cold_start_users": result.cold_start_users,
        "report": MetadataValue.md(_inline_images(report.markdown, report.markdown_path.parent)),
        "report_path": MetadataValue.path(str(report.markdown_path)),
    }
    for name in ("popularity", "itemitem", "oracle"):
        if name in result.baselines:
            baseline_recall = float(result.baselines[name]["recall@20"])
            metadata[f"{name}_recall@20"] = baseline_recall
            metadata[f"recall@20_vs_{name}"] = recall / baseline_recall if baseline_recall else float("inf")
    if result.intervals is not None:
        own = result.intervals.means["model"][DEFAULT_GATE_METRIC]
        metadata["recall@20_ci"] = MetadataValue.json(own.as_json())
        for name, by_metric in result.intervals.model_minus.items():
            difference = by_metric[DEFAULT_GATE_METRIC]
            metadata[f"recall@20_minus_{name}"] = difference.value
            metadata[f"recall@20_minus_{name}_ci"] = MetadataValue.json(difference.as_json())
    # The embedding assets and the gate's check read the decision from ml.model_evaluations, so nothing flows
    # through an IO manager.
    return MaterializeResult(metadata=metadata)


def _serving_after(promoted: registry.ModelVersion | None) -> str:
    if promoted is None:
        return "serving keeps the popularity fallback (no model is promoted)"
    return f"serving keeps {promoted.model_version}"


@asset_check(
    asset=evaluation_report,
    blocking=True,
    description="The promotion gate: the candidate beats popularity (paired bootstrap interval above 0) and is "
    "not clearly worse than the promoted model. A failure stops the embedding assets of the run.",
)
def promotion_gate(context: AssetCheckExecutionContext, database: TeamuDatabase) -> AssetCheckResult:
    """Reads the decision evaluation_report recorded for the model it evaluated."""
    url = database.url()
    event = context.instance.get_latest_materialization_event(evaluation_report.key)
    materialization = None if event is None else event.asset_materialization
    version_entry = None if materialization is None else materialization.metadata.get("model_version")
    record = None if version_entry is None else registry.latest_evaluation(url, str(version_entry.value))
    if record is None:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description="no evaluation recorded for the latest evaluation_report: materialize it first",
        )
    gate = record.gate
    figures = {name: float(value) for name, value in gate.get("figures", {}).items()}
    return AssetCheckResult(
        passed=record.promoted,
        severity=AssetCheckSeverity.ERROR,
        description=gate.get("reason") or ("promoted" if record.promoted else "not promoted"),
        metadata={
            "model_version": record.model_version,
            "promoted": record.promoted,
            "rule": str(gate.get("rule", "")),
            "serving": f"{record.model_version} (promoted by this evaluation)"
            if record.promoted
            else _serving_after(registry.promoted_model(url)),
            **figures,
        },
    )


def _oracle(artifacts: ArtifactStore, cutoff: pd.Timestamp) -> Any:
    """The generator's expected scores over the evaluation period, when this is synthetic data."""
    from teamu_assets.synthetic import load_truth

    path = artifacts.path("synthetic", "ground_truth.npz")
    if not path.exists():
        return None
    truth = load_truth(path)

    def scores(user_ids: Any, post_ids: Any) -> Any:
        return truth.expected_scores(user_ids, post_ids, window_start=int(cutoff.timestamp()))

    return scores


def _inline_images(markdown: str, folder: Path) -> str:
    """The UI renders Markdown metadata but can't reach files: embed the report's PNGs as data URIs."""
    import base64

    for image in folder.glob("*.png"):
        encoded = base64.b64encode(image.read_bytes()).decode()
        markdown = markdown.replace(f"]({image.name})", f"](data:image/png;base64,{encoded})")
    return markdown


class EmbeddingConfig(Config):
    incremental: bool = False
    """Embed only the rows whose features changed since their embedding, with the promoted model, and upsert
    them (the sensor-driven refresh); otherwise write the evaluated model's full table if it was promoted."""
    rewrite_with_promoted: bool = False
    """Rewrite the whole table with the promoted model, no evaluation needed: post vectors carry the post's
    freshness at the time they were written, so the daily post_freshness job rewrites them as posts age."""


def _write_embeddings(
    context: AssetExecutionContext,
    config: EmbeddingConfig,
    database: TeamuDatabase,
    tower_preloader: TowerPreloader,
    kind: str,
) -> MaterializeResult:
    """Reads the model to serve from the registry, not from an upstream output, so the incremental job (which
    does not run evaluation_report) needs nothing but the database."""
    from teamu_assets.db.embeddings import ensure_embedding_tables, write_embeddings
    from teamu_assets.db.recommend import install_serving_functions

    url = database.url()
    promoted = registry.promoted_model(url)
    ids = None
    if config.incremental or config.rewrite_with_promoted:
        if promoted is None:
            # The gate has refused every model so far (or none was trained): nothing to embed with, and
            # ml.recommend_posts serves its popularity fallback. Not an error: the sensor's refreshes go on.
            message = f"nothing written: {_serving_after(None)}"
            context.log.warning(message)
            return MaterializeResult(metadata={"written": False, "reason": message, "rows": 0})
        if config.incremental:
            ids = features.changed_since_embedding(url, kind)
            if not ids:
                return MaterializeResult(metadata={"written": False, "reason": "no changed rows", "rows": 0})
    else:
        evaluated = registry.latest_evaluation(url)
        if evaluated is None:
            raise ValueError("no evaluated model yet: materialize evaluation_report first")
        if not evaluated.promoted:
            # Reached only without the promotion_gate check in the run (it stops this asset when it fails).
            message = f"{evaluated.model_version} was not promoted; {_serving_after(promoted)}"
            context.log.warning(message)
            return MaterializeResult(metadata={"written": False, "reason": message, "rows": 0})
        promoted = registry.model_version(url, evaluated.model_version)
    tower_preloader.wait()
    from teamu_assets.model.train import embed_posts, embed_users, read_model_config

    version, model_dir = promoted.model_version, Path(promoted.artifact_path)
    dim = int(read_model_config(model_dir)["tower"]["embedding_dim"])
    ensure_embedding_tables(url, dim)
    install_serving_functions(url)
    if kind == "post":
        # Post age is an input of the candidate tower: measured at the data's clock, as in training.
        ids, vectors = embed_posts(model_dir, features.read_post_features(url, ids), as_of=features.data_clock(url))
    else:
        ids, vectors = embed_users(model_dir, features.read_user_features(url, ids))
    mode = "upsert" if config.incremental else "full"
    written = write_embeddings(url, kind, ids, vectors, version, mode=mode)
    return MaterializeResult(
        metadata={
            "written": True,
            "mode": mode,
            "rows": written.rows,
            "model_version": written.model_version,
            "dimension": dim,
            "copy_seconds": written.copy_seconds,
            "index_seconds": written.index_seconds,
            "total_seconds": written.total_seconds,
        }
    )


@asset(
    group_name="serving",
    kinds={"postgres", "pgvector"},
    key=AssetKey(["ml", "post_embeddings"]),
    deps=[*MARTS, "evaluation_report"],
)
def post_embeddings(
    context: AssetExecutionContext,
    config: EmbeddingConfig,
    database: TeamuDatabase,
    tower_preloader: TowerPreloader,
) -> MaterializeResult:
    """Post (candidate) tower embeddings of the promoted model in ml.post_embeddings, swapped in atomically,
    HNSW-indexed; also (re)installs ml.recommend_posts and ml.similar_posts."""
    return _write_embeddings(context, config, database, tower_preloader, "post")


@asset(
    group_name="serving",
    kinds={"postgres", "pgvector"},
    key=AssetKey(["ml", "user_embeddings"]),
    deps=[*MARTS, "evaluation_report"],
)
def user_embeddings(
    context: AssetExecutionContext,
    config: EmbeddingConfig,
    database: TeamuDatabase,
    tower_preloader: TowerPreloader,
) -> MaterializeResult:
    """User (query) tower embeddings of the promoted model in ml.user_embeddings, swapped in atomically."""
    return _write_embeddings(context, config, database, tower_preloader, "user")


def _embedding_check(database: TeamuDatabase, kind: str, mart: str) -> AssetCheckResult:
    from teamu_assets.db.embeddings import embedding_checks

    url = database.url()
    stats = embedding_checks(url, kind)
    if registry.promoted_model(url) is None:
        # Nothing promoted: the serving path must not hold any model's vectors (the fallback serves everyone).
        return AssetCheckResult(
            passed=stats["row_count"] == 0,
            severity=AssetCheckSeverity.ERROR,
            description=(
                "no model is promoted and no embeddings are served: ml.recommend_posts serves its popularity fallback"
                if stats["row_count"] == 0
                else f"no model is promoted, yet {stats['table']} holds {stats['row_count']} vectors"
            ),
            metadata={"row_count": stats["row_count"], "promoted_model": "none"},
        )
    feature_rows = features.row_count(url, mart)
    problems = []
    if stats["row_count"] != feature_rows:
        problems.append(f"{stats['row_count']} embeddings for {feature_rows} rows of {mart}")
    if stats["null_embedding_count"] or stats["non_finite_count"]:
        problems.append(f"{stats['null_embedding_count']} NULL and {stats['non_finite_count']} non-finite vectors")
    if stats["row_count"] and not stats["norm_min"] > 0:
        problems.append("a zero vector (it would score 0 against everything)")
    if len(stats["model_versions"]) > 1:
        problems.append(f"several model versions: {stats['model_versions']}")
    if stats["hnsw_index_expected"] and not stats["hnsw_index_present"]:
        problems.append("HNSW index missing")
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(problems)
        or f"one embedding per feature row, one model version; the latest write's {stats['norm_rows']} vectors"
        " finite and non-zero",
        metadata={
            key: value
            for key, value in {**stats, "feature_rows": feature_rows}.items()
            if isinstance(value, int | float | str | bool)
        }
        | {"model_versions": json.dumps(stats["model_versions"])},
    )


@asset_check(asset=post_embeddings, blocking=True)
def post_embeddings_are_complete_and_sane(database: TeamuDatabase) -> AssetCheckResult:
    return _embedding_check(database, "post", "marts.post_features")


@asset_check(asset=user_embeddings, blocking=True)
def user_embeddings_are_complete_and_sane(database: TeamuDatabase) -> AssetCheckResult:
    return _embedding_check(database, "user", "marts.user_features")
