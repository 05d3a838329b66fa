"""The ML steps the Dagster assets call, each one function: build the dataset, evaluate a candidate (and record
the gate's decision), embed one kind for serving. No Dagster here; TensorFlow is imported only inside the
functions that embed.

Evaluation reads the split the dataset step wrote (teamu_assets.model.dataset.write_dataset): the history is the
train and validation files (every interaction before the cutoff), the evaluation period is evaluation.parquet.
Re-reading the live marts instead would judge the model on interactions that arrived after its dataset was
built, and compute the same split a second way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from teamu_assets.db import features, registry
from teamu_assets.evaluation.fallback import SERVING_DEFAULT_DECAY, FallbackChoice, choose_fallback_decay
from teamu_assets.evaluation.gate import DEFAULT_TOLERANCE, GateDecision, promotion_decision
from teamu_assets.evaluation.metrics import GATE_METRIC
from teamu_assets.evaluation.offline import Embeddings, OfflineEvaluation, evaluate_embeddings
from teamu_assets.evaluation.records import stored_json
from teamu_assets.evaluation.report import Report, render_report
from teamu_assets.model.dataset import (
    DatasetManifest,
    build_training_examples,
    count_posts_by_kind,
    post_features_as_of,
    profile_as_of,
    read_manifest,
    user_features_as_of,
    with_activity,
    write_dataset,
)
from teamu_assets.model.features import blank_user_ids
from teamu_assets.model.params import TrainParams

# Under a served model's directory: the model trained before the evaluation period, which the gate judged.
EVALUATED_MODEL_DIR = "evaluated"
_INTERACTION_COLUMNS = ["user_id", "post_id", "kind", "occurred_at"]


def evaluated_model_dir(model_dir: Path) -> Path:
    """The model the gate judged: <model_dir>/evaluated when the served one is a refit, else model_dir itself."""
    evaluated = model_dir / EVALUATED_MODEL_DIR
    return evaluated if evaluated.is_dir() else model_dir


def build_dataset(
    url: str, out_dir: Path, *, holdout_fraction: float, history_length: int, validation_fraction: float
) -> DatasetManifest:
    """The temporal split of marts.interactions: the last holdout_fraction of its time span (from a whole hour)
    is the evaluation period; written as Parquet under out_dir."""
    interactions = features.read_interactions(url)
    if interactions.empty:
        raise ValueError("marts.interactions is empty: load data first (`teamu seed`, then the dbt models)")
    start, end = interactions["occurred_at"].min(), interactions["occurred_at"].max()
    cutoff = (end - (end - start) * holdout_fraction).floor("h")
    data = build_training_examples(
        interactions,
        features.read_user_features(url),
        features.read_post_features(url),
        cutoff,
        history_length=history_length,
        validation_fraction=validation_fraction,
    )
    return write_dataset(data, out_dir)


@dataclass(frozen=True)
class TrainedCandidate:
    """What train_candidate produced: the evaluated run (its history, best epoch), the served one (the refit, or
    the evaluated run itself) and the exported serving indexes."""

    evaluated: Any  # teamu_assets.model.train.TrainResult (a TensorFlow module: not imported here)
    served: Any
    indexes: dict[str, Path] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """What the catalog shows of a training: the served model's examples and serving terms (chosen on
        validation), the batch size (chosen on validation unless the run set it), the evaluated run's epochs (its
        last one's loss and speed; every epoch's row under "history") and where the serving indexes are."""
        history, served = self.evaluated.history, self.served.tower_config
        return {
            "refit_examples": self.served.train_examples,
            "time_terms": served.use_time_terms,
            "popularity_weight": served.popularity_weight,
            "new_user_popularity_weight": served.new_user_popularity_weight,
            "itemitem_weight": served.itemitem_weight,
            "batch_size": self.evaluated.params.batch_size,
            # Each batch size tried, by the validation recall of its served score (empty: the run set one).
            "validation_recall@20_by_batch_size": {
                str(size): recall or 0.0 for size, recall in self.evaluated.batch_size_recalls.items()
            },
            "epochs_run": len(history),
            "best_epoch": self.evaluated.best_epoch,
            "best_validation_recall@20": self.evaluated.best_validation_recall or 0.0,
            "final_loss": float(history[-1]["loss"]),
            "examples_per_second": round(float(history[-1]["examples_per_second"])),
            "history": history,
            "serving_indexes": {kind: str(path) for kind, path in self.indexes.items()},
        }


def train_candidate(
    url: str,
    model_version: str,
    dataset_dir: Path,
    model_dir: Path,
    params: TrainParams,
    *,
    refit: bool,
    registry_params: dict[str, Any],
    log: Callable[[str], None],
) -> TrainedCandidate:
    """Train on the dataset's train split with early stopping on validation; with refit, retrain the evaluated
    recipe on every example for serving (the evaluated model kept under evaluated/); export the serving indexes;
    register the version (not promoted)."""
    from teamu_assets.model.export import export_serving_indexes
    from teamu_assets.model.train import refit as refit_model
    from teamu_assets.model.train import train

    users, posts = features.read_user_features(url), features.read_post_features(url)
    evaluated_dir = model_dir / EVALUATED_MODEL_DIR if refit else model_dir
    # The evaluated run trains and validates before the cutoff: the posts' comments and view time, the users'
    # post and project titles as they were then (the evaluation embeds them so too). The refit serves now: as
    # they are.
    cutoff = pd.Timestamp(read_manifest(dataset_dir).cutoff)
    posts_at_cutoff = with_activity(posts, features.read_post_activity_before(url, cutoff))
    users_at_cutoff = profile_as_of(users, cutoff, posts=posts, projects=features.read_projects(url))
    result = train(dataset_dir, users_at_cutoff, posts_at_cutoff, params, evaluated_dir, log=log)
    served = result
    if refit:
        log(f"refit on every example for serving: {result.best_epoch} epochs")
        served = refit_model(dataset_dir, users, posts, result, model_dir, log=log)
    indexes = export_serving_indexes(model_dir, posts, model_dir / "serving")
    registry.register_model_version(url, model_version, registry_params, str(model_dir))
    return TrainedCandidate(result, served, indexes)


@dataclass(frozen=True)
class CandidateEvaluation:
    model_version: str
    result: OfflineEvaluation
    decision: GateDecision
    report: Report
    # The popularity fallback's decay chosen on validation (None: no validation engagement to choose on).
    fallback: FallbackChoice | None = None


def _interactions(manifest: DatasetManifest, *splits: str) -> pd.DataFrame:
    frames = [pd.read_parquet(manifest.path(split), columns=_INTERACTION_COLUMNS) for split in splits]
    return pd.concat(frames, ignore_index=True)


def embeddings_as_of(
    model_dir: Path,
    users_at_cutoff: pd.DataFrame,
    post_counts: pd.DataFrame,
    posts: pd.DataFrame,
    cutoff: pd.Timestamp,
    post_activity: pd.DataFrame,
) -> tuple[Embeddings, Embeddings]:
    """Users and posts embedded as the marts read at the cutoff: `users_at_cutoff` as user_features_as_of the
    cutoff gives them (profile_as_of's titles, histories and activity from the interactions before it),
    popularity from `post_counts` (count_posts_by_kind of those interactions' files), comments and view time from
    `post_activity` (features.read_post_activity_before the cutoff)."""
    from teamu_assets.model.train import embed_posts, embed_users

    user_ids, user_vectors = embed_users(model_dir, users_at_cutoff)
    at_cutoff = post_features_as_of(post_counts, posts, as_of=cutoff, activity=post_activity)
    post_ids, post_vectors = embed_posts(model_dir, at_cutoff)
    return Embeddings(user_ids, user_vectors), Embeddings(post_ids, post_vectors)


def _fallback_choice(
    train: pd.DataFrame, validation: pd.DataFrame, posts: pd.DataFrame, cutoff: pd.Timestamp
) -> FallbackChoice | None:
    """The fallback's decay chosen on the dataset's validation split (its first engagements), ranked by the
    training split's engaged users at the cutoff: as the model's serving terms are chosen, the evaluation period
    never looked at."""
    targets = validation.loc[validation["first_engagement"], ["user_id", "post_id"]]
    return choose_fallback_decay(train, targets, posts, cutoff)


def _oracles(truth_path: Path | None, cutoff: pd.Timestamp) -> dict[str, Callable[[Any, Any], Any]]:
    """The generator's expected scores over the evaluation period, when this is synthetic data: "oracle" (the
    truth) and "knowable_oracle" (the truth as known at the cutoff: the latent parts of the posts created after
    it at their expected value, GroundTruth.known_at)."""
    if truth_path is None or not truth_path.exists():
        return {}
    from teamu_assets.synthetic import load_truth

    truth = load_truth(truth_path)
    start = int(cutoff.timestamp())

    def scorer(world: Any) -> Callable[[Any, Any], Any]:
        return lambda user_ids, post_ids: world.expected_scores(user_ids, post_ids, window_start=start)

    return {"oracle": scorer(truth), "knowable_oracle": scorer(truth.known_at(start))}


def evaluate_candidate(
    url: str,
    model_version: str,
    model_dir: Path,
    dataset_dir: Path,
    reports_dir: Path,
    *,
    truth_path: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> CandidateEvaluation:
    """Evaluate the model judged for model_version (evaluated_model_dir) against popularity, item-item, random,
    the promoted model and (synthetic data) the oracles; the gate's decision; the report under reports_dir; the
    record in ml.model_evaluations, with the popularity fallback's decay chosen on validation
    (ml.popularity_fallback). Promotion itself waits for the embeddings (teamu_assets.db.store)."""
    manifest = read_manifest(dataset_dir)
    cutoff = pd.Timestamp(manifest.cutoff)
    # Each split read once: the history (train and validation) for the evaluation, its parts for the fallback.
    train = _interactions(manifest, "train")
    validation = pd.read_parquet(manifest.path("validation"), columns=[*_INTERACTION_COLUMNS, "first_engagement"])
    history = pd.concat([train, validation[_INTERACTION_COLUMNS]], ignore_index=True)
    evaluation = _interactions(manifest, "evaluation")
    post_counts = count_posts_by_kind([manifest.path("train"), manifest.path("validation")])
    posts = features.read_post_features(url)
    users = profile_as_of(features.read_user_features(url), cutoff, posts=posts, projects=features.read_projects(url))
    users_at_cutoff = user_features_as_of(history, users, cutoff)
    activity = features.read_post_activity_before(url, cutoff)

    user_vectors, post_vectors = embeddings_as_of(model_dir, users_at_cutoff, post_counts, posts, cutoff, activity)
    promoted = registry.promoted_model(url)
    previous = None
    if promoted is not None and promoted.model_version != model_version:
        previous_dir = evaluated_model_dir(Path(promoted.artifact_path))
        previous = embeddings_as_of(previous_dir, users_at_cutoff, post_counts, posts, cutoff, activity)
    fallback = _fallback_choice(train, validation, posts, cutoff)
    # The fallback as it would serve were the candidate refused: this evaluation's choice, else the one serving.
    served_decay = fallback.decay if fallback is not None else registry.fallback_decay(url)
    result = evaluate_embeddings(
        train=history,
        evaluation=evaluation,
        posts=posts,
        cutoff=cutoff,
        users=user_vectors,
        items=post_vectors,
        previous=previous,
        oracle_scores=_oracles(truth_path, cutoff),
        recommendation_events=features.read_recommendation_events(url),
        fallback_decay=SERVING_DEFAULT_DECAY if served_decay is None else served_decay,
        # Served the fallback whatever the model (ml.recommend_posts): the gate judges what is served.
        fallback_users=blank_user_ids(users_at_cutoff),
    )
    model_minus = None if result.intervals is None else result.intervals.model_minus
    decision = promotion_decision(
        result.metrics,
        result.baselines.get("previous"),
        None if model_minus is None else model_minus["popularity"][GATE_METRIC],
        popularity_metrics=result.baselines["popularity"],
        vs_fallback=None if model_minus is None else model_minus["fallback"][GATE_METRIC],
        fallback_metrics=result.baselines["fallback"],
        tolerance=tolerance,
    )
    report = render_report(
        model_version,
        result.metrics,
        result.baselines,
        result.segments,
        result.ctr,
        decision,
        reports_dir,
        score_samples=result.score_samples,
        intervals=result.intervals,
    )
    metrics_json, baselines_json = stored_json(result)
    registry.record_evaluation(
        url,
        model_version,
        metrics=metrics_json,
        baselines=baselines_json,
        segments=result.segments,
        promote=decision.promote,
        report_path=str(report.markdown_path),
        gate=decision.as_json(),
        fallback=None if fallback is None else fallback.as_json(),
    )
    return CandidateEvaluation(model_version, result, decision, report, fallback)


def embed_for_serving(url: str, model: registry.ModelVersion, kind: str, ids: list[int] | None) -> tuple[Any, Any, int]:
    """(ids, vectors, dimension) of `kind` (ids None: every row of its mart) with the model to serve. Post age is
    an input of the candidate tower: measured at the data's clock, as in training."""
    from teamu_assets.model.train import embed_posts, embed_users, read_model_config

    model_dir = Path(model.artifact_path)
    dim = int(read_model_config(model_dir)["tower"]["embedding_dim"])
    if kind == "post":
        row_ids, vectors = embed_posts(model_dir, features.read_post_features(url, ids), as_of=features.data_clock(url))
    else:
        row_ids, vectors = embed_users(model_dir, features.read_user_features(url, ids))
    return row_ids, vectors, dim
