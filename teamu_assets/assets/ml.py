"""The ML half of the graph: training data -> two-tower model -> evaluation and promotion gate -> embeddings.

Thin glue: every asset takes its resources, calls one core function (teamu_assets.model.pipeline, the embedding
store of teamu_assets.db.store) and returns its metadata. TensorFlow is imported inside the asset bodies, so
loading the code location (the UI, sensor ticks) never pays for it.
"""

import dataclasses
import datetime as dt
import typing
from pathlib import Path
from typing import Any

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
from pydantic import create_model

from teamu_assets.contract import HISTORY_LENGTH
from teamu_assets.db import registry
from teamu_assets.db.store import EmbeddingMode, serving_after
from teamu_assets.evaluation.fallback import FallbackChoice
from teamu_assets.evaluation.gate import DEFAULT_TOLERANCE
from teamu_assets.model.params import RUN_KNOBS, TrainParams
from teamu_assets.resources import ArtifactStore, TeamuDatabase, TowerPreloader
from teamu_assets.settings import Settings

MARTS = [AssetKey(["marts", name]) for name in ("interactions", "user_features", "post_features")]


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


# Decimals shown for metrics in the catalog: recall and NDCG differences matter from the third.
METADATA_DECIMALS = 4


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, METADATA_DECIMALS)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Floats rounded (nested ones too); mappings as JSON metadata."""
    return {
        key: MetadataValue.json(_rounded(value)) if isinstance(value, dict) else _rounded(value)
        for key, value in values.items()
    }


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
    from teamu_assets.model.pipeline import build_dataset

    out_dir = artifacts.path("artifacts", "datasets", _version("ds"))
    manifest = build_dataset(database.url(), out_dir, **config.model_dump())
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


_PARAM_TYPES = typing.get_type_hints(TrainParams)
_PARAM_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainParams)}
# The knobs of TrainParams a run may override (model/params.py RUN_KNOBS), with TrainParams' types and defaults:
# a knob is added there, once. The embedding dimension's default is TEAMU_EMBEDDING_DIM, as the tables' is.
TrainConfig = create_model(
    "TrainConfig",
    __base__=Config,
    __doc__="The knobs of TrainParams a run may override (model/params.py RUN_KNOBS); defaults are TrainParams'.",
    **{name: (_PARAM_TYPES[name], _PARAM_DEFAULTS[name]) for name in RUN_KNOBS if name != "embedding_dim"},
    embedding_dim=(int, Settings.from_env().embedding_dim),
    # On: serve a model retrained on every example up to now (the evaluated run's epochs and serving terms), the
    # evaluated model kept under evaluated/. Off: serve the evaluated model (half the training time, but the
    # newest period's posts and taste never trained).
    refit=(bool, True),
)


@asset(group_name="ml", kinds={"tensorflow"})
def two_tower_model(
    context: AssetExecutionContext,
    config: TrainConfig,  # type: ignore[valid-type]  # built by create_model above
    database: TeamuDatabase,
    artifacts: ArtifactStore,
    training_dataset: str,
) -> Output[dict[str, str]]:
    """TFRS two-tower model trained on the dataset's train split with early stopping on validation recall@20
    (the model evaluation_report judges), then refit on every example for serving; SavedModel towers,
    vocabularies and the serving index (BruteForce, ScaNN) under artifacts/models/<version>."""
    from teamu_assets.model.pipeline import train_candidate

    version = _version("tt")
    model_dir = artifacts.path("artifacts", "models", version)
    trained = train_candidate(
        database.url(),
        version,
        Path(training_dataset),
        model_dir,
        TrainParams(**config.model_dump(exclude={"refit"})),
        refit=config.refit,
        registry_params={**config.model_dump(), "dataset": training_dataset},
        log=context.log.info,
    )
    figures = trained.figures()
    return Output(
        {"model_version": version, "model_dir": str(model_dir), "dataset_dir": training_dataset},
        metadata=_metadata(
            {
                "model_version": version,
                "path": MetadataValue.path(str(model_dir)),
                "refit": config.refit,
                **figures,
                "history": MetadataValue.md(_md_table(figures["history"])),
            }
        ),
    )


class GateConfig(Config):
    tolerance: float = DEFAULT_TOLERANCE
    """Rule 2 of the gate: a candidate that beats popularity is promoted unless its recall@20 is below the
    promoted model's by more than this (rule 1, beating popularity by the paired interval, has no knob)."""


@asset(group_name="ml", kinds={"python"})
def evaluation_report(
    context: AssetExecutionContext,
    config: GateConfig,
    database: TeamuDatabase,
    artifacts: ArtifactStore,
    two_tower_model: dict[str, str],
) -> MaterializeResult:
    """Ranking metrics on the dataset's evaluation split against popularity, item-item (EASE), random, the
    promoted model and (synthetic data) the oracle, with bootstrap intervals; segments, CTR, plots; the promotion
    gate's decision. Rows in ml.model_evaluations; the blocking check promotion_gate turns a refusal into a failed
    check that stops the embedding assets, which promote an approved model when its vectors are in place."""
    from teamu_assets.evaluation.records import headline
    from teamu_assets.model.pipeline import evaluate_candidate, evaluated_model_dir

    version = two_tower_model["model_version"]
    evaluated = evaluate_candidate(
        database.url(),
        version,
        evaluated_model_dir(Path(two_tower_model["model_dir"])),
        Path(two_tower_model["dataset_dir"]),
        artifacts.path("reports", version),
        truth_path=artifacts.path("synthetic", "ground_truth.npz"),
        tolerance=config.tolerance,
    )
    # Whatever the gate decides, ml.recommend_posts must answer (its popularity fallback while no model is
    # promoted): verified here, before the gate's check can stop the embedding assets.
    with database.embedding_store() as store:
        store.ensure_ready()
    (context.log.info if evaluated.decision.promote else context.log.warning)(evaluated.decision.reason)
    report = evaluated.report
    return MaterializeResult(
        metadata={
            **_metadata(headline(version, evaluated.result, evaluated.decision)),
            **_fallback_metadata(evaluated.fallback),
            "report": MetadataValue.md(_inline_images(report.markdown, report.markdown_path.parent)),
            "report_path": MetadataValue.path(str(report.markdown_path)),
        }
    )


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
    return AssetCheckResult(
        passed=record.promoted,
        severity=AssetCheckSeverity.ERROR,
        description=gate.get("reason") or ("promoted" if record.promoted else "not promoted"),
        metadata={
            "model_version": record.model_version,
            "promoted": record.promoted,
            "rule": str(gate.get("rule", "")),
            "serving": f"{record.model_version} (approved: served once its embeddings are published)"
            if record.promoted
            else serving_after(registry.promoted_model(url)),
            **_metadata({name: float(value) for name, value in gate.get("figures", {}).items()}),
        },
    )


def _fallback_metadata(choice: FallbackChoice | None) -> dict[str, Any]:
    """The popularity fallback's decay chosen on validation, with each decay's validation recall."""
    if choice is None:
        return {}
    recalls = [{"decay": decay, f"validation_recall@{choice.k}": recall} for decay, recall in choice.recalls.items()]
    return {
        "popularity_fallback_decay": choice.decay,
        "popularity_fallback_validation": MetadataValue.md(_md_table(recalls)),
    }


def _inline_images(markdown: str, folder: Path) -> str:
    """The UI renders Markdown metadata but can't reach files: embed the report's PNGs as data URIs."""
    import base64

    for image in folder.glob("*.png"):
        encoded = base64.b64encode(image.read_bytes()).decode()
        markdown = markdown.replace(f"]({image.name})", f"](data:image/png;base64,{encoded})")
    return markdown


class EmbeddingConfig(Config):
    mode: EmbeddingMode = "publish"
    """publish: the model evaluation_report approved, staged and then swapped in with its promotion, both kinds
    in one transaction (the full refresh). incremental: upsert the rows whose features changed since their
    embedding, with the promoted model (the sensor's refresh). rewrite: the whole table with the promoted model
    (the daily post_freshness job: post vectors carry the post's freshness at the time they were written)."""


def _write_embeddings(
    context: AssetExecutionContext, mode: EmbeddingMode, database: TeamuDatabase, preloader: TowerPreloader, kind: str
) -> MaterializeResult:
    """Reads the model to write from the registry, not from an upstream output, so the incremental job (which
    does not run evaluation_report) needs nothing but the database."""
    from teamu_assets.model.pipeline import embed_for_serving

    with database.embedding_store() as store:
        plan = store.plan(kind, mode)  # type: ignore[arg-type]  # kind is one of the asset's two
        if not plan.writes:
            (context.log.info if plan.reason == "no changed rows" else context.log.warning)(plan.reason)
            return MaterializeResult(
                metadata={
                    "written": False,
                    "reason": plan.reason,
                    "rows": 0,
                    "dagster/row_count": store.row_count(kind),  # type: ignore[arg-type]
                }
            )
        assert plan.model is not None  # plan.writes says so
        preloader.wait()
        ids, vectors, dim = embed_for_serving(database.url(), plan.model, kind, plan.ids)
        store.ensure_ready(dim)
        written, served = store.write(kind, ids, vectors, plan.model.model_version, mode=mode)  # type: ignore[arg-type]
        table_rows = store.row_count(kind)  # type: ignore[arg-type]
    return MaterializeResult(
        metadata={
            "written": True,
            "refresh": mode,
            "served": served,
            # mode: how the table was written (full, upsert, or staged for publication); rows: how many were.
            **_metadata({key: value for key, value in dataclasses.asdict(written).items() if key != "kind"}),
            "dimension": dim,
            # The live table's rows, as every table asset reports them (not the rows this write touched).
            "dagster/row_count": table_rows,
        }
    )


@asset(
    group_name="serving",
    kinds={"postgres", "pgvector"},
    key=AssetKey(["ml", "post_embeddings"]),
    deps=[*MARTS, "evaluation_report"],
)
def post_embeddings(
    context: AssetExecutionContext, config: EmbeddingConfig, database: TeamuDatabase, tower_preloader: TowerPreloader
) -> MaterializeResult:
    """Post (candidate) tower embeddings of the promoted model in ml.post_embeddings, swapped in atomically,
    HNSW-indexed."""
    return _write_embeddings(context, config.mode, database, tower_preloader, "post")


@asset(
    group_name="serving",
    kinds={"postgres", "pgvector"},
    key=AssetKey(["ml", "user_embeddings"]),
    deps=[*MARTS, "evaluation_report"],
)
def user_embeddings(
    context: AssetExecutionContext, config: EmbeddingConfig, database: TeamuDatabase, tower_preloader: TowerPreloader
) -> MaterializeResult:
    """User (query) tower embeddings of the promoted model in ml.user_embeddings, swapped in atomically."""
    return _write_embeddings(context, config.mode, database, tower_preloader, "user")


def _embedding_check(database: TeamuDatabase, kind: str) -> AssetCheckResult:
    with database.embedding_store() as store:
        outcome = store.checks(kind)  # type: ignore[arg-type]  # kind is one of the asset's two
    return AssetCheckResult(
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata,
    )


@asset_check(asset=post_embeddings, blocking=True)
def post_embeddings_are_complete_and_sane(database: TeamuDatabase) -> AssetCheckResult:
    return _embedding_check(database, "post")


@asset_check(asset=user_embeddings, blocking=True)
def user_embeddings_are_complete_and_sane(database: TeamuDatabase) -> AssetCheckResult:
    return _embedding_check(database, "user")
