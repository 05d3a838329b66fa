"""Training loop, saved artifacts and batch inference for the two-tower model.

Artifacts under a model directory:
    query_tower/, candidate_tower/   SavedModels with a `serve(features)` function (dict in, [n, D] out)
    vocabularies/*.txt               text tokens, passions, H3 cells per resolution, post ids
    model_config.json                tower config, feature layout, params, dataset manifest, per-epoch history
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from teamu_assets.evaluation.intervals import Interval, ranker_intervals
from teamu_assets.evaluation.metrics import GATE_METRIC
from teamu_assets.model.dataset import (
    SPLITS,
    DatasetManifest,
    count_posts_by_kind,
    iter_example_batches,
    post_features_as_of,
    read_manifest,
    tf_example_dataset,
)
from teamu_assets.model.features import (
    H3_RESOLUTIONS,
    HISTORY_PADDING_ID,
    UNKNOWN_H3_CELL,
    VIEW_COUNT_INDEX,
    FeatureLayout,
    PostFeatureTable,
    UserFeatureTable,
    slice_inputs,
)
from teamu_assets.model.itemitem import ItemItemFactors, fit_itemitem_factors
from teamu_assets.model.params import BATCH_SIZES, TrainParams
from teamu_assets.model.towers import (
    SCORE_TERMS,
    CandidateTower,
    ItemItemBlock,
    PostIdSpace,
    QueryTower,
    ServingTower,
    TowerConfig,
    TwoTowerModel,
    Vocabularies,
    content_dim,
    post_input_signature,
    user_input_signature,
)

QUERY_TOWER_DIR = "query_tower"
CANDIDATE_TOWER_DIR = "candidate_tower"
VOCABULARIES_DIR = "vocabularies"
MODEL_CONFIG_FILE = "model_config.json"
# The validation recall without the freshness terms must exceed this multiple of the recall with them.
TIME_TERMS_MARGIN = 1.05
# Popularity-prior weights tried on validation after training (see _choose_serving_terms).
POPULARITY_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
# The prior's weights tried for users without history: up to where popularity alone orders the feed.
NEW_USER_POPULARITY_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# Item-item block weights tried on validation once the block is fitted. The block's scores have a spread of about
# 1 per user (itemitem.py); the content part's, a cosine over the temperature, several times that: the largest
# weights let the block lead where it ranks better than the towers.
ITEMITEM_WEIGHTS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# EASE's ridge penalty and the posts it covers, as the evaluation's item-item baseline has them (rankers.fit_ease).
ITEMITEM_L2 = 500.0
ITEMITEM_MAX_POSTS = 5000
# Validation scores every post for a block of examples: 2**24 cells (64 MiB of float32) per block.
VALIDATION_SCORE_CELLS = 2**24
# Keras' "loss" from a TFRS model is the last batch's; this metric is the mean over the epoch's batches.
BATCH_LOSS_METRIC = "batch_loss"


@dataclass(frozen=True)
class ServingTerms:
    """The terms of the served score chosen on validation, which a refit carries over."""

    use_time_terms: bool
    popularity_weight: float
    new_user_popularity_weight: float
    itemitem_weight: float


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict[str, float | int | None]]
    best_epoch: int
    best_validation_recall: float | None
    stopped_early: bool
    train_examples: int
    # The tower config as saved, with the serving terms chosen on validation (or carried over by refit).
    tower_config: TowerConfig
    params: TrainParams
    # The trained model in memory (best weights restored), for exporting or comparing without a reload.
    model: TwoTowerModel = field(repr=False)
    # Validation recall@k of the served score (the kept epoch with the serving terms chosen), its mean and each
    # validation user's (in user id order); None without validation (and in a refit).
    served_validation_recall: float | None = None
    served_validation_hit_rates: np.ndarray | None = field(default=None, repr=False)
    # With params.batch_size None: each tried batch size's served_validation_recall (train kept one of them).
    batch_size_recalls: dict[int, float | None] = field(default_factory=dict)


def _to_tensors(inputs: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(values) for name, values in inputs.items()}


def _text_vocabulary(users: UserFeatureTable, posts: PostFeatureTable, max_tokens: int) -> list[str]:
    # A generator of Python strings, never one fixed-width numpy array: that would be sized by the longest text.
    def texts() -> Iterator[str]:
        for column in (users.profile_text, posts.title, posts.description, posts.comments):
            yield from column

    vectorizer = tf.keras.layers.TextVectorization(max_tokens=max_tokens)
    strings = tf.data.Dataset.from_generator(texts, output_signature=tf.TensorSpec([], tf.string))
    vectorizer.adapt(strings.batch(4096))
    # The first two entries are the padding and out-of-vocabulary tokens, which the layers add themselves.
    return [str(token) for token in vectorizer.get_vocabulary()[2:]]


def _passion_vocabulary(users: UserFeatureTable) -> list[str]:
    counts = Counter(str(passion) for passion in users.passions.ravel() if passion)
    return [passion for passion, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _h3_vocabulary(users: UserFeatureTable, posts: PostFeatureTable) -> dict[int, list[str]]:
    return {
        res: sorted({UNKNOWN_H3_CELL, *map(str, users.h3[res]), *map(str, posts.h3[res])}) for res in H3_RESOLUTIONS
    }


def _mean_and_variance(values: np.ndarray) -> tuple[list[float], list[float]]:
    return values.mean(axis=0).tolist(), np.maximum(values.var(axis=0), 1e-6).tolist()


def _embed(
    serve: Callable[[dict[str, tf.Tensor]], tf.Tensor],
    inputs: dict[str, np.ndarray],
    n: int,
    dim: int,
    batch_size: int = 4096,
) -> np.ndarray:
    parts = [np.zeros((0, dim), np.float32)]
    parts += [
        serve(_to_tensors(slice_inputs(inputs, start, start + batch_size))).numpy() for start in range(0, n, batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


# (item-item block weight, popularity-prior weight): the served score's weights tried on validation.
ServingWeights = tuple[float, float]


def _validation_recalls(
    model: TwoTowerModel,
    manifest: DatasetManifest,
    users: UserFeatureTable,
    posts: PostFeatureTable,
    k: int,
    factors: ItemItemFactors | None = None,
    *,
    as_new_users: bool = False,
) -> dict[ServingWeights, float] | None:
    """Recall@k on validation for each serving weight pair: the mean over users of _validation_hit_rates."""
    rates = _validation_hit_rates(model, manifest, users, posts, k, factors, as_new_users=as_new_users)
    return None if rates is None else {weight: float(per_user.mean()) for weight, per_user in rates.items()}


def _validation_hit_rates(
    model: TwoTowerModel,
    manifest: DatasetManifest,
    users: UserFeatureTable,
    posts: PostFeatureTable,
    k: int,
    factors: ItemItemFactors | None = None,
    *,
    as_new_users: bool = False,
    weights: list[ServingWeights] | None = None,
) -> dict[ServingWeights, np.ndarray] | None:
    """Each validation user's recall@k (in user id order) for each popularity-prior weight (0 and
    POPULARITY_WEIGHTS) and, with `factors`, each item-item block weight (0 and ITEMITEM_WEIGHTS): the share of
    their validation examples whose post is in the top k of the posts created before the cutoff for that user at
    that moment (the posts of the user's history excluded as serving excludes them). Decisions average it over
    users, as the product is judged (a heavy user's many examples would otherwise outweigh everyone else's).
    One pass: the prior only adds weight x log view count to every score, the block weight x its scores. Trained
    with logQ correction, the model's own scores discount popular posts on purpose; the prior is what puts back as
    much popularity as the data calls for, so every decision looks at the best of them.

    `as_new_users`: each user ranked as if new, by the profile alone (no history, no activity counts; no block,
    which reads the history), for each of 0 and NEW_USER_POPULARITY_WEIGHTS. Every validation user has a
    history, but a served model also meets users who have none: half of Last.fm's evaluation period's users.
    `weights`: only these (block, prior) pairs."""
    if manifest.rows["validation"] == 0:
        return None
    config = model.candidate_tower.config
    unweighted = replace(config, popularity_weight=0.0, new_user_popularity_weight=0.0, itemitem_weight=0.0)
    _set_tower_config(model, unweighted)
    candidates = _embed(
        lambda x: model.candidate_tower(x, training=False),
        posts.serving_inputs(),
        len(posts.post_ids),
        config.embedding_dim,
    )
    log_views = posts.numeric[:, VIEW_COUNT_INDEX][np.newaxis, :]
    # Posts created after the cutoff did not exist when any validation engagement happened: they are no
    # candidates, as they are none of a training example's in-batch negatives. Left in, they would push the
    # targets down with features gathered later (comments) and favour the weights that bury them.
    unborn = posts.created_day >= posts.reference_day
    if as_new_users:
        factors = None
    priors = NEW_USER_POPULARITY_WEIGHTS if as_new_users else POPULARITY_WEIGHTS
    if weights is None:
        weights = [
            (block, prior)
            for block in (0.0, *(ITEMITEM_WEIGHTS if factors is not None else ()))
            for prior in (0.0, *priors)
        ]
    post_blocks = None if factors is None else factors.post_blocks(posts.post_ids).T
    candidate_index = pd.Index(posts.post_ids)
    k = min(k, len(posts.post_ids))
    examples = pd.read_parquet(manifest.path("validation"), columns=["user_id", "first_engagement"])
    examples_per_user = examples.loc[examples["first_engagement"], "user_id"].value_counts().sort_index()
    user_rows = pd.Index(examples_per_user.index)
    hits = {weight: np.zeros(len(user_rows)) for weight in weights}
    for batch in iter_example_batches(
        [manifest.path("validation")],
        # Blocks of at most VALIDATION_SCORE_CELLS (example, post) scores, however many posts there are.
        batch_rows=max(1, min(1024, VALIDATION_SCORE_CELLS // max(len(posts.post_ids), 1))),
        history_length=users.layout.history_length,
        first_engagements_only=True,
    ):
        histories, activity_counts = batch.histories, batch.activity_counts
        if as_new_users:
            histories = np.full_like(histories, HISTORY_PADDING_ID)
            activity_counts = np.zeros_like(activity_counts)
        queries = model.query_tower(
            _to_tensors(users.inputs(batch.user_ids, histories, activity_counts)), training=False
        )
        scores = tf.linalg.matmul(queries, candidates, transpose_b=True).numpy()
        scores[:, unborn] = -np.inf
        block_scores = None if post_blocks is None else factors.user_blocks(batch.histories) @ post_blocks
        history_columns = candidate_index.get_indexer(batch.histories.ravel()).reshape(batch.histories.shape)
        rows = np.broadcast_to(np.arange(len(batch))[:, None], history_columns.shape)
        known = history_columns >= 0
        scores[rows[known], history_columns[known]] = -np.inf
        targets = candidate_index.get_indexer(batch.post_ids)
        # Each example counts 1 / (its user's validation examples): the sum over users of their hit rates.
        example_weight = 1.0 / examples_per_user.reindex(batch.user_ids).to_numpy(np.float64)
        example_users = user_rows.get_indexer(batch.user_ids)
        known_targets = targets >= 0
        target_scores_at = (np.arange(len(batch)), np.where(known_targets, targets, 0))
        for block, prior in weights:
            weighted = scores + prior * log_views
            if block:
                weighted += block * block_scores
            # In the top k when fewer than k posts score above the target: a count, ten times faster than a
            # partial sort at 15,000 posts, and the same hits but for ties (which count for the target here).
            above = (weighted > weighted[target_scores_at][:, None]).sum(axis=1)
            np.add.at(hits[block, prior], example_users, example_weight * (known_targets & (above < k)))
    _set_tower_config(model, config)
    return hits if len(user_rows) else None


def _best_recall(recalls: dict[ServingWeights, float] | None) -> tuple[float | None, ServingWeights]:
    """(best recall, the (block, popularity) weights that reach it; the smallest among equals)."""
    if recalls is None:
        return None, (0.0, 0.0)
    weights = max(recalls, key=lambda w: (recalls[w], -w[0], -w[1]))
    return recalls[weights], weights


def _fix_seeds(seed: int) -> None:
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(
    dataset_dir: Path,
    user_features: pd.DataFrame,
    post_features: pd.DataFrame,
    params: TrainParams,
    out_dir: Path,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Trains on the dataset's train split, early-stops on validation recall@k, chooses the serving terms on
    validation and saves the towers and vocabularies under out_dir. Each training example sees its post as of
    the example's moment (popularity and age then); validation sees popularity as of the dataset's cutoff, so
    neither training nor evaluation sees later popularity. This is the model the evaluation period judges.
    With params.batch_size None, one training per BATCH_SIZES, a smaller batch kept only where it ranks
    validation better by the paired interval (_keep_best_batch_size)."""
    out_dir = Path(out_dir)

    def fit(batch_size: int, folder: Path) -> TrainResult:
        sized = replace(params, batch_size=batch_size)
        return _fit(dataset_dir, user_features, post_features, sized, folder, log, splits=("train",), serving=None)

    if params.batch_size is not None:
        return fit(params.batch_size, out_dir)
    if not read_manifest(dataset_dir).rows["validation"]:
        log(f"no validation examples to choose the batch size on: {max(BATCH_SIZES)}, the cheapest")
        return fit(max(BATCH_SIZES), out_dir)
    return _keep_best_batch_size(fit, out_dir, params.validation_k, log)


def _keep_best_batch_size(
    fit: Callable[[int, Path], TrainResult], out_dir: Path, k: int, log: Callable[[str], None]
) -> TrainResult:
    """fit(batch size, folder) for each of BATCH_SIZES, largest (cheapest) first, each in a hidden folder beside
    out_dir. A smaller batch replaces the one kept only where its served score ranks validation better by the
    paired interval over validation users, as the gate judges a candidate: a difference inside the noise keeps
    the cheaper training. The kept one moves to out_dir, the others are removed; only it stays in memory."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    folders: list[Path] = []
    recalls: dict[int, float | None] = {}
    best: TrainResult | None = None
    try:
        for size in sorted(BATCH_SIZES, reverse=True):
            log(f"batch size {size} (of {', '.join(map(str, BATCH_SIZES))}, chosen on validation)")
            folders.append(Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.batch-{size}-", dir=out_dir.parent)))
            result = fit(size, folders[-1])
            recalls[size] = result.served_validation_recall
            if best is None:
                best = result
                continue
            gain = _validation_gain(result, best)
            if gain is not None:
                log(
                    f"batch size {size} minus {best.params.batch_size}: validation recall@{k} "
                    f"{gain.value:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}]"
                )
            if gain is not None and gain.low > 0.0:
                best, result = result, best
            shutil.rmtree(result.model_dir)
        assert best is not None  # BATCH_SIZES is not empty
        shown = ", ".join(f"{size}: {recall or 0.0:.4f}" for size, recall in recalls.items())
        log(f"batch size {best.params.batch_size} chosen (validation recall@{k} of the served score: {shown})")
        shutil.rmtree(out_dir, ignore_errors=True)
        best.model_dir.rename(out_dir)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    return replace(best, model_dir=out_dir, batch_size_recalls=recalls)


def _validation_gain(result: TrainResult, kept: TrainResult) -> Interval | None:
    """The served validation recall of `result` minus `kept`'s, with the paired bootstrap interval over
    validation users that the gate uses (evaluation.intervals); None without both users' recalls."""
    if result.served_validation_hit_rates is None or kept.served_validation_hit_rates is None:
        return None
    intervals = ranker_intervals(
        {GATE_METRIC: result.served_validation_hit_rates},
        {"kept": {GATE_METRIC: kept.served_validation_hit_rates}},
        metrics=(GATE_METRIC,),
    )
    return None if intervals is None else intervals.model_minus["kept"][GATE_METRIC]


def refit(
    dataset_dir: Path,
    user_features: pd.DataFrame,
    post_features: pd.DataFrame,
    evaluated: TrainResult,
    out_dir: Path,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """The model to serve: the evaluated run's recipe (its params, its best epoch count and the serving terms it
    chose on validation) trained on every example of the dataset, validation and evaluation periods included.
    The evaluated model measures how well the recipe carries to later interactions; serving it instead would
    leave out the latest period, which holds the newest posts (untrained ids) and the users' current taste."""
    # Terms the evaluated run dropped (during training or after it) are not trained in the refit either.
    params = replace(
        evaluated.params,
        epochs=max(evaluated.best_epoch, 1),
        use_time_terms=evaluated.params.use_time_terms and evaluated.tower_config.use_time_terms,
    )
    config = evaluated.tower_config
    serving = ServingTerms(
        config.use_time_terms, config.popularity_weight, config.new_user_popularity_weight, config.itemitem_weight
    )
    return _fit(dataset_dir, user_features, post_features, params, out_dir, log, splits=SPLITS, serving=serving)


def _fit(
    dataset_dir: Path,
    user_features: pd.DataFrame,
    post_features: pd.DataFrame,
    params: TrainParams,
    out_dir: Path,
    log: Callable[[str], None],
    *,
    splits: tuple[str, ...],
    serving: ServingTerms | None,
) -> TrainResult:
    """Trains on `splits`, then fits the item-item block on the same interactions. Without `serving` it monitors
    validation (early stopping, then the serving terms); with it, it runs params.epochs and applies those terms."""
    _fix_seeds(params.seed)
    manifest = read_manifest(dataset_dir)
    out_dir = Path(out_dir)
    train_files = [manifest.path(split) for split in splits if manifest.rows[split]]
    monitored = manifest if serving is None else replace(manifest, rows={**manifest.rows, "validation": 0})
    # Validation holds each user's last engagements, ranked among the posts as they are at the end of the
    # training period (age and popularity then), as serving ranks them. Training examples see each post as it
    # was at the example's moment. A refit has no validation; its posts are as they are at the end of the data.
    validation_reference = pd.Timestamp(manifest.cutoff) if serving is None else None
    setup = _set_up(manifest, train_files, user_features, post_features, params, validation_reference)
    log(
        f"training on {setup.total_train} examples ({monitored.rows['validation']} validation), "
        f"{len(setup.users.user_ids)} users, {len(setup.posts.post_ids)} posts, dim {params.embedding_dim}"
    )
    epochs = _train_epochs(setup, monitored, params, log)
    model, users, posts, config, k = setup.model, setup.users, setup.posts, epochs.config, params.validation_k
    factors = _fit_itemitem_block(model, train_files, config.itemitem_rank, params.seed)
    served_rates: np.ndarray | None = None
    served_recall: float | None = None
    if serving is not None:
        config = replace(
            config,
            use_time_terms=serving.use_time_terms,
            popularity_weight=serving.popularity_weight,
            new_user_popularity_weight=serving.new_user_popularity_weight,
            itemitem_weight=serving.itemitem_weight if factors is not None else 0.0,
        )
    elif epochs.best_recall is not None:
        config = _choose_serving_terms(
            model, config, epochs.best_recall, epochs.best_popularity_weight, monitored, users, posts, k, factors
        )
        # Each validation user's recall@k under the served score: what a choice between trainings compares.
        _set_tower_config(model, config)
        served = (config.itemitem_weight, config.popularity_weight)
        rates = _validation_hit_rates(model, monitored, users, posts, k, factors, weights=[served])
        served_rates = None if rates is None else rates[served]
        served_recall = None if served_rates is None else float(served_rates.mean())
        log(
            f"serving terms: time terms {'on' if config.use_time_terms else 'off'}, "
            f"popularity weight {config.popularity_weight} (new users {config.new_user_popularity_weight}), "
            f"item-item weight {config.itemitem_weight}; validation recall@{k} {served_recall or 0.0:.4f}"
        )
    _set_tower_config(model, config)

    _save(model, setup.vocabularies, config, setup.layout, params, manifest, epochs.history, epochs.best_epoch, out_dir)
    return TrainResult(
        model_dir=out_dir,
        history=epochs.history,
        best_epoch=epochs.best_epoch,
        best_validation_recall=epochs.best_recall,
        stopped_early=epochs.stopped_early,
        train_examples=setup.total_train,
        tower_config=config,
        params=params,
        model=model,
        served_validation_recall=served_recall,
        served_validation_hit_rates=served_rates,
    )


@dataclass(frozen=True)
class _Setup:
    """What training starts from: the feature tables, vocabularies and tower config, the compiled model and the
    training examples as a dataset."""

    users: UserFeatureTable
    posts: PostFeatureTable
    layout: FeatureLayout
    vocabularies: Vocabularies
    config: TowerConfig
    model: TwoTowerModel
    train_dataset: tf.data.Dataset
    total_train: int


def _set_up(
    manifest: DatasetManifest,
    train_files: list[Path],
    user_features: pd.DataFrame,
    post_features: pd.DataFrame,
    params: TrainParams,
    validation_reference: pd.Timestamp | None,
) -> _Setup:
    # The training examples (first engagements): the post vocabulary and the sampling probabilities of logQ.
    train_counts = count_posts_by_kind(train_files, first_engagements_only=True)
    # Every training row: the posts' popularity as validation sees it (without the held-out engagements, as
    # serving sees a post without the engagements it is judged on).
    before_cutoff_counts = count_posts_by_kind(train_files)
    posts = PostFeatureTable(
        post_features_as_of(before_cutoff_counts, post_features), reference_time=validation_reference
    )
    layout = FeatureLayout(
        history_length=min(params.history_length, manifest.history_length), max_passions=params.max_passions
    )
    users = UserFeatureTable(user_features, layout)

    vocabularies = Vocabularies(
        text=_text_vocabulary(users, posts, params.max_text_tokens),
        passions=_passion_vocabulary(users),
        h3_cells=_h3_vocabulary(users, posts),
        post_ids=sorted(int(i) for i in train_counts["post_id"]),
    )
    user_count_mean, user_count_variance = _mean_and_variance(np.log1p(users.activity_counts))
    post_numeric_mean, post_numeric_variance = _mean_and_variance(posts.numeric)
    config = TowerConfig(
        embedding_dim=params.embedding_dim,
        feature_dim=params.feature_dim,
        hidden_units=params.hidden_units,
        history_decay=params.history_decay,
        history_length=layout.history_length,
        use_time_terms=params.use_time_terms,
        popularity_weight=0.0,
        new_user_popularity_weight=0.0,
        # A quarter of the vector at most, so small test models keep most of it for content.
        itemitem_rank=min(params.itemitem_rank, (params.embedding_dim - SCORE_TERMS) // 4),
        itemitem_weight=0.0,
        temperature=params.temperature,
        use_id_features=params.use_id_features,
        user_count_mean=user_count_mean,
        user_count_variance=user_count_variance,
        post_numeric_mean=post_numeric_mean,
        post_numeric_variance=post_numeric_variance,
    )
    post_ids = PostIdSpace(vocabularies.post_ids, params.feature_dim, content_dim(config))
    model = TwoTowerModel(
        QueryTower(config, vocabularies, post_ids),
        CandidateTower(config, vocabularies, post_ids),
        temperature=params.temperature,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=params.learning_rate))

    total_train = int(train_counts["total"].sum())
    sampling_probability = {
        int(post): count / total_train
        for post, count in zip(train_counts["post_id"], train_counts["total"], strict=True)
    }
    train_dataset = tf_example_dataset(
        train_files,
        users,
        posts,
        sampling_probability,
        batch_size=params.batch_size,
        shuffle_buffer=params.shuffle_buffer,
        seed=params.seed,
        id_dropout=params.id_dropout if params.use_id_features else 0.0,
        history_dropout=params.history_dropout,
    )
    return _Setup(users, posts, layout, vocabularies, config, model, train_dataset, total_train)


@dataclass(frozen=True)
class _Epochs:
    """The epochs' outcome: each epoch's row, the kept epoch (its weights are the model's now) with its
    validation recall and popularity weight, and the config as training left it (time terms maybe dropped)."""

    history: list[dict[str, float | int | None]]
    best_epoch: int
    best_recall: float | None
    best_popularity_weight: float
    stopped_early: bool
    config: TowerConfig


def _train_epochs(
    setup: _Setup, monitored: DatasetManifest, params: TrainParams, log: Callable[[str], None]
) -> _Epochs:
    """Up to params.epochs epochs with early stopping on validation recall (none without validation: every
    epoch runs and the last is kept); the freshness terms are dropped for good after an epoch that validates
    clearly better without them."""
    model, users, posts, config = setup.model, setup.users, setup.posts, setup.config
    history: list[dict[str, float | int | None]] = []
    best_recall: float | None = None
    best_epoch = 0
    best_popularity_weight = 0.0
    best_weights: list[np.ndarray] = []  # filled after the first epoch, when the weights exist
    stopped_early = False
    k = params.validation_k
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        loss = float(model.fit(setup.train_dataset, epochs=1, verbose=0).history[BATCH_LOSS_METRIC][-1])
        seconds = time.perf_counter() - started
        recall, (_, popularity_weight) = _best_recall(_validation_recalls(model, monitored, users, posts, k))
        switched = False
        if recall is not None and config.use_time_terms:
            without, without_weight = _recall_without_time_terms(model, config, monitored, users, posts, k)
            # Decided during training, not after it: where the terms learn an artefact of the data (a catalogue
            # whose items are all first engaged at age 0, say), every further epoch with them bends the content
            # part around that artefact.
            if without > recall * TIME_TERMS_MARGIN:
                config, recall, popularity_weight, switched = (
                    replace(config, use_time_terms=False),
                    without,
                    without_weight,
                    True,
                )
                _set_tower_config(model, config)
                # The compiled training step read the old config when it was traced: trace it again.
                model.train_function = None
                # The earlier epochs were scored with another score function; the comparison starts again here.
                best_recall = None
        history.append(
            {
                "epoch": epoch,
                "loss": loss,
                f"validation_recall@{k}": recall,
                "popularity_weight": popularity_weight,
                "train_seconds": seconds,
                "examples_per_second": setup.total_train / seconds if seconds > 0 else None,
            }
        )
        recall_text = "n/a" if recall is None else f"{recall:.4f} (popularity weight {popularity_weight})"
        log(f"epoch {epoch}/{params.epochs}: loss {loss:.4f}, validation recall@{k} {recall_text}")
        if switched:
            gain = f"{TIME_TERMS_MARGIN - 1:.0%}"
            log(f"time terms off from epoch {epoch + 1}: validation gains more than {gain} without")
        if recall is None:
            best_epoch, best_weights = epoch, model.get_weights()
            continue
        if best_recall is None or recall > best_recall:
            best_recall, best_epoch, best_weights = recall, epoch, model.get_weights()
            best_popularity_weight = popularity_weight
        elif epoch - best_epoch >= params.patience:
            stopped_early = True
            log(f"early stop: no validation gain for {params.patience} epochs; keeping epoch {best_epoch}")
            break
    model.set_weights(best_weights)
    return _Epochs(history, best_epoch, best_recall, best_popularity_weight, stopped_early, config)


def _fit_itemitem_block(model: TwoTowerModel, paths: list[Path], rank: int, seed: int) -> ItemItemFactors | None:
    """Fits the item-item factors on every row of the training files and puts them in both towers (at weight 0
    until the serving terms say otherwise); None where there is nothing to fit (rank 0, fewer than two posts)."""
    if rank < 1:
        return None
    pairs = pd.concat([pd.read_parquet(path, columns=["user_id", "post_id"]) for path in paths], ignore_index=True)
    factors = fit_itemitem_factors(
        pairs["user_id"].to_numpy(),
        pairs["post_id"].to_numpy(),
        rank=rank,
        l2=ITEMITEM_L2,
        max_posts=ITEMITEM_MAX_POSTS,
        seed=seed,
    )
    if factors is not None:
        block = ItemItemBlock(factors, rank)
        model.query_tower.itemitem = block
        model.candidate_tower.itemitem = block
    return factors


def _set_tower_config(model: TwoTowerModel, config: TowerConfig) -> None:
    model.query_tower.config = config
    model.candidate_tower.config = config


def _recall_without_time_terms(
    model: TwoTowerModel,
    config: TowerConfig,
    manifest: DatasetManifest,
    users: UserFeatureTable,
    posts: PostFeatureTable,
    k: int,
) -> tuple[float, float]:
    """(best validation recall@k without the freshness terms, its popularity weight); the model keeps config."""
    _set_tower_config(model, replace(config, use_time_terms=False))
    recall, (_, weight) = _best_recall(_validation_recalls(model, manifest, users, posts, k))
    _set_tower_config(model, config)
    return recall or 0.0, weight


def _choose_serving_terms(
    model: TwoTowerModel,
    config: TowerConfig,
    recall: float,
    popularity_weight: float,
    manifest: DatasetManifest,
    users: UserFeatureTable,
    posts: PostFeatureTable,
    k: int,
    factors: ItemItemFactors | None,
) -> TowerConfig:
    """Terms of the served score kept only where validation shows they help, on the kept weights. The freshness
    terms (appetite x freshness at the post's age): where what people engage with next is not what is freshest
    (a catalogue of artists, a Q&A site), ranking by age costs accuracy. The popularity prior (weight x the post's
    log view count, the weight that validation liked best): the training's logQ correction takes popularity out
    of the model's scores, and the prior puts back as much as the data calls for. The item-item block's weight,
    chosen with the prior (the two trade off: co-engagement carries popularity too). The prior's weight for users
    without history, chosen on the same examples ranked as if each user were new: with the block and the
    history's ids there, validation may keep no prior at all (the block carries popularity), and a new user,
    ranked then by a profile that may say nothing, would get a feed in no useful order (on Last.fm, whose real
    profiles are empty, that is what made one training of three lose to popularity on the evaluation period;
    such users, with no profile either, are now served the fallback: features.UserFeatureTable.blank)."""
    if config.use_time_terms:
        # Dropped only on a clear gain: validation holds each user's last engagements with posts that existed
        # before the cutoff, so it cannot see what freshness does for the posts that appear later.
        without, without_weight = _recall_without_time_terms(model, config, manifest, users, posts, k)
        if without > recall * TIME_TERMS_MARGIN:
            config, popularity_weight = replace(config, use_time_terms=False), without_weight
    # The config with the time terms as kept; each _validation_recalls call leaves the model as it found it.
    _set_tower_config(model, config)
    itemitem_weight = 0.0
    if factors is not None:
        _, (itemitem_weight, popularity_weight) = _best_recall(
            _validation_recalls(model, manifest, users, posts, k, factors)
        )
    _, (_, new_user_weight) = _best_recall(_validation_recalls(model, manifest, users, posts, k, as_new_users=True))
    return replace(
        config,
        popularity_weight=popularity_weight,
        new_user_popularity_weight=new_user_weight,
        itemitem_weight=itemitem_weight,
    )


def _save(
    model: TwoTowerModel,
    vocabularies: Vocabularies,
    config: TowerConfig,
    layout: FeatureLayout,
    params: TrainParams,
    manifest: DatasetManifest,
    history: list[dict[str, float | int | None]],
    best_epoch: int,
    out_dir: Path,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(ServingTower(model.query_tower, user_input_signature()), str(out_dir / QUERY_TOWER_DIR))
    tf.saved_model.save(ServingTower(model.candidate_tower, post_input_signature()), str(out_dir / CANDIDATE_TOWER_DIR))
    vocabularies.save(out_dir / VOCABULARIES_DIR)
    (out_dir / MODEL_CONFIG_FILE).write_text(
        json.dumps(
            {
                "tower": asdict(config),
                "layout": asdict(layout),
                "params": asdict(params),
                "dataset": manifest.to_dict(),
                "history": history,
                "best_epoch": best_epoch,
            },
            indent=2,
        )
    )


def read_model_config(model_dir: Path) -> dict[str, object]:
    return json.loads((Path(model_dir) / MODEL_CONFIG_FILE).read_text())


def _layout(model_dir: Path) -> FeatureLayout:
    return FeatureLayout(**read_model_config(model_dir)["layout"])


def _embedding_dim(model_dir: Path) -> int:
    return int(read_model_config(model_dir)["tower"]["embedding_dim"])


@functools.lru_cache(maxsize=4)
def _load_saved_tower(path: str) -> tf.Module:
    return tf.saved_model.load(path)


def load_tower(model_dir: Path, tower_dir: str) -> tf.Module:
    """A saved tower; call `.serve(features)` with the dict its signature names. Cached per process: model
    directories are versioned and never rewritten, and a long-lived process (or a preloading thread) should
    load each tower once."""
    return _load_saved_tower(str(Path(model_dir).resolve() / tower_dir))


def embed_users(
    model_dir: Path, user_features: pd.DataFrame, *, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids int64 [n], float32 [n, D] embeddings) from the saved query tower; history is each user's
    recent_post_ids and counts are the mart's, i.e. the users as they are now."""
    users = UserFeatureTable(user_features, _layout(model_dir))
    tower = load_tower(model_dir, QUERY_TOWER_DIR)
    vectors = _embed(tower.serve, users.serving_inputs(), len(users.user_ids), _embedding_dim(model_dir), batch_size)
    return users.user_ids.copy(), vectors


def embed_posts(
    model_dir: Path,
    post_features: pd.DataFrame,
    *,
    batch_size: int = 4096,
    as_of: pd.Timestamp | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(post ids int64 [n], float32 [n, D] embeddings) from the saved candidate tower. Post ages are measured
    at `as_of`, else at the frame's features_as_of (post_features_as_of(..., as_of=...)), else now."""
    posts = PostFeatureTable(post_features, reference_time=as_of)
    tower = load_tower(model_dir, CANDIDATE_TOWER_DIR)
    # Towers saved before post age was an input take the inputs they were saved with.
    accepted = set(tower.serve.concrete_functions[0].structured_input_signature[0][0])
    inputs = {name: values for name, values in posts.serving_inputs().items() if name in accepted}
    vectors = _embed(tower.serve, inputs, len(posts.post_ids), _embedding_dim(model_dir), batch_size)
    return posts.post_ids.copy(), vectors
