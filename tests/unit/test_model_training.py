"""The trained two-tower model on a small topic-structured world: quality against popularity on the temporal
evaluation split (warm and cold-start users), saved towers, the exported retrieval indexes, and seeding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from teamu_assets.model.dataset import (
    build_training_examples,
    post_features_as_of,
    user_features_as_of,
    write_dataset,
)
from teamu_assets.model.features import VIEW_COUNT_INDEX, FeatureLayout, PostFeatureTable, UserFeatureTable
from tests.unit.model_fixtures import SyntheticWorld, make_world, rank_excluding, recall_at_k

if TYPE_CHECKING:
    from teamu_assets.model.train import TrainResult

pytestmark = pytest.mark.slow

PARAMS = {
    "epochs": 10,
    "batch_size": 128,
    "embedding_dim": 32,
    "feature_dim": 32,
    "hidden_units": 64,
    "patience": 3,
    "shuffle_buffer": 2000,
}


@dataclass(frozen=True)
class Trained:
    world: SyntheticWorld
    result: TrainResult
    dataset_dir: Path
    model_dir: Path
    users_at_cutoff: pd.DataFrame
    posts_at_cutoff: pd.DataFrame
    logged: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from teamu_assets.model.train import TrainParams, train

    world = make_world()
    root = tmp_path_factory.mktemp("two_tower")
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    write_dataset(data, root / "dataset")
    logged: list[str] = []
    result = train(
        root / "dataset",
        world.user_features,
        world.post_features,
        TrainParams(**PARAMS),
        root / "model",
        log=logged.append,
    )
    before = world.interactions.loc[world.interactions["occurred_at"] < world.cutoff]
    post_counts = before.groupby(["post_id", "kind"]).size().unstack(fill_value=0).reset_index()
    return Trained(
        world=world,
        result=result,
        dataset_dir=root / "dataset",
        model_dir=root / "model",
        users_at_cutoff=user_features_as_of(world.interactions, world.user_features, world.cutoff),
        posts_at_cutoff=post_features_as_of(post_counts, world.post_features, as_of=world.cutoff),
        logged=logged,
    )


def test_model_beats_popularity_for_warm_and_cold_start_users(trained: Trained) -> None:
    from teamu_assets.model.train import embed_posts, embed_users

    world = trained.world
    user_ids, user_vectors = embed_users(trained.model_dir, trained.users_at_cutoff)
    post_ids, post_vectors = embed_posts(trained.model_dir, trained.posts_at_cutoff)
    before = world.interactions.loc[world.interactions["occurred_at"] < world.cutoff]
    after = world.interactions.loc[world.interactions["occurred_at"] >= world.cutoff]
    seen = before.groupby("user_id")["post_id"].agg(set).to_dict()
    relevant = {
        user: posts - seen.get(user, set()) for user, posts in after.groupby("user_id")["post_id"].agg(set).items()
    }
    model_ranking = rank_excluding(user_vectors @ post_vectors.T, user_ids, post_ids, seen)
    popularity = before.groupby("post_id").size().reindex(post_ids, fill_value=0).to_numpy(np.float64)
    popularity_ranking = rank_excluding(np.tile(popularity, (len(user_ids), 1)), user_ids, post_ids, seen)

    cold = set(world.cold_user_ids)
    # Warm users are placed by their history's post vectors: far above popularity. Cold-start users have a
    # profile only (30 users here), which the content MLP maps: above popularity by a smaller margin.
    for segment, factor in (([u for u in user_ids if u not in cold], 3.0), (sorted(cold), 1.1)):
        model_recall = recall_at_k(model_ranking, relevant, segment)
        popularity_recall = recall_at_k(popularity_ranking, relevant, segment)
        assert model_recall > factor * popularity_recall, (model_recall, popularity_recall)


def test_training_logs_and_records_each_epoch(trained: Trained) -> None:
    from teamu_assets.model.train import read_model_config

    history = trained.result.history
    assert 1 <= len(history) <= PARAMS["epochs"]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    recalls = [h["validation_recall@20"] for h in history]
    assert all(0.0 <= r <= 1.0 for r in recalls)
    assert trained.result.best_validation_recall == max(recalls)
    assert history[trained.result.best_epoch - 1]["validation_recall@20"] == max(recalls)
    assert history[-1]["loss"] < history[0]["loss"]
    assert sum(line.startswith("epoch ") for line in trained.logged) == len(history)
    saved = read_model_config(trained.model_dir)
    assert saved["history"] == history
    assert saved["tower"]["embedding_dim"] == PARAMS["embedding_dim"]
    assert (trained.model_dir / "vocabularies" / "text.txt").read_text().split("\n")
    assert "climbing" in (trained.model_dir / "vocabularies" / "passions.txt").read_text().split("\n")


def test_saved_towers_reproduce_the_in_memory_towers(trained: Trained) -> None:
    import tensorflow as tf

    from teamu_assets.model.towers import NEW_USER_PRIOR_SCALE, SCORE_TERMS
    from teamu_assets.model.train import embed_posts, embed_users, read_model_config

    user_ids, user_vectors = embed_users(trained.model_dir, trained.users_at_cutoff)
    post_ids, post_vectors = embed_posts(trained.model_dir, trained.posts_at_cutoff)
    assert user_vectors.shape == (len(trained.users_at_cutoff), PARAMS["embedding_dim"])
    # The layout the inner product relies on: [sqrt(item-item weight) x history factors, content / temperature,
    # appetite, 1, new-user prior] . [sqrt(item-item weight) x post factors, content, freshness, quality, log views].
    tower = read_model_config(trained.model_dir)["tower"]
    block = slice(0, tower["itemitem_rank"])
    content = slice(tower["itemitem_rank"], PARAMS["embedding_dim"] - SCORE_TERMS)
    assert tower["itemitem_rank"] > 0
    np.testing.assert_allclose(np.linalg.norm(post_vectors[:, content], axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(user_vectors[:, content], axis=1), 1.0 / tower["temperature"], rtol=1e-4)
    np.testing.assert_allclose(user_vectors[:, -2], 1.0)
    # A user without history gets the new users' prior in place of everyone's (the difference, times the post's
    # log view count); a user with one gets nothing on top of everyone's.
    has_history = np.array([len(h) > 0 for h in trained.users_at_cutoff["recent_post_ids"]])
    assert has_history.any()
    np.testing.assert_allclose(user_vectors[has_history, -1], 0.0)
    as_new = trained.users_at_cutoff.copy()
    as_new["recent_post_ids"] = [[] for _ in range(len(as_new))]
    _, new_user_vectors = embed_users(trained.model_dir, as_new)
    extra = tower["new_user_popularity_weight"] - tower["popularity_weight"]
    np.testing.assert_allclose(new_user_vectors[:, -1] * NEW_USER_PRIOR_SCALE, extra, atol=1e-6)
    log_views = PostFeatureTable(trained.posts_at_cutoff).numeric[:, VIEW_COUNT_INDEX]
    np.testing.assert_allclose(post_vectors[:, -1], NEW_USER_PRIOR_SCALE * log_views, rtol=1e-5)
    # The block: zeros for posts without training interactions; on both sides sqrt(weight) x factors whose post
    # rows have a mean norm of 1 (so the HNSW graph, built from post vectors, weighs the block as the score does),
    # and zeros on both where the weight is 0.
    trained_posts = set(map(int, (trained.model_dir / "vocabularies" / "post_ids.txt").read_text().split()))
    block_norms = np.linalg.norm(post_vectors[:, block], axis=1)
    covered = block_norms > 0
    assert {int(p) for p in post_ids[covered]} <= trained_posts
    if tower["itemitem_weight"] == 0:
        np.testing.assert_array_equal(user_vectors[:, block], 0.0)
        assert not covered.any()
    else:
        np.testing.assert_allclose(block_norms[covered].mean(), np.sqrt(tower["itemitem_weight"]), rtol=1e-3)

    layout = FeatureLayout(history_length=50)
    user_inputs = UserFeatureTable(trained.users_at_cutoff, layout).serving_inputs()
    post_inputs = PostFeatureTable(trained.posts_at_cutoff).serving_inputs()
    model = trained.result.model
    in_memory_users = model.query_tower({k: tf.constant(v) for k, v in user_inputs.items()}).numpy()
    in_memory_posts = model.candidate_tower({k: tf.constant(v) for k, v in post_inputs.items()}).numpy()
    np.testing.assert_allclose(user_vectors, in_memory_users, atol=1e-5)
    np.testing.assert_allclose(post_vectors, in_memory_posts, atol=1e-5)


def _in_memory_top_k(trained: Trained, user_inputs: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    model = trained.result.model
    post_inputs = PostFeatureTable(trained.posts_at_cutoff).serving_inputs()
    queries = model.query_tower({name: tf.constant(v) for name, v in user_inputs.items()})
    candidates = model.candidate_tower({name: tf.constant(v) for name, v in post_inputs.items()})
    scores, indices = tf.math.top_k(tf.linalg.matmul(queries, candidates, transpose_b=True), k=k)
    return scores.numpy(), post_inputs["post_id"][indices.numpy()]


def test_exported_brute_force_index_returns_the_in_memory_top_k(trained: Trained, tmp_path: Path) -> None:
    import tensorflow as tf

    from teamu_assets.model.export import export_retrieval_index, load_retrieval_index

    index_dir = export_retrieval_index(
        trained.model_dir, trained.posts_at_cutoff, tmp_path / "brute_force", k=20, kind="brute_force"
    )
    index = load_retrieval_index(index_dir)
    user_inputs = UserFeatureTable(trained.users_at_cutoff, FeatureLayout(history_length=50)).serving_inputs()
    scores, post_ids = index({name: tf.constant(v) for name, v in user_inputs.items()})
    expected_scores, expected_ids = _in_memory_top_k(trained, user_inputs, 20)
    assert post_ids.shape == (len(trained.users_at_cutoff), 20)
    np.testing.assert_array_equal(post_ids.numpy(), expected_ids)
    np.testing.assert_allclose(scores.numpy(), expected_scores, atol=1e-5)


def test_exported_scann_index_agrees_with_brute_force(trained: Trained, tmp_path: Path) -> None:
    import tensorflow as tf

    from teamu_assets.model.export import export_serving_indexes, load_retrieval_index

    exported = export_serving_indexes(trained.model_dir, trained.posts_at_cutoff, tmp_path / "indexes", k=10)
    assert set(exported) == {"brute_force", "scann"}
    user_inputs = UserFeatureTable(trained.users_at_cutoff, FeatureLayout(history_length=50)).serving_inputs()
    tensors = {name: tf.constant(v) for name, v in user_inputs.items()}
    _, exact_ids = load_retrieval_index(exported["brute_force"])(tensors)
    _, approximate_ids = load_retrieval_index(exported["scann"])(tensors)
    assert approximate_ids.shape == exact_ids.shape
    overlap = np.mean(
        [len(set(a) & set(e)) / 10 for a, e in zip(approximate_ids.numpy(), exact_ids.numpy(), strict=True)]
    )
    assert overlap > 0.8


def test_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    from teamu_assets.model.train import TrainParams, embed_posts, train

    world = make_world(warm_users=30, cold_users=0, posts=60, events_per_user=10)
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    write_dataset(data, tmp_path / "dataset")
    params = TrainParams(**{**PARAMS, "epochs": 2, "batch_size": 64, "embedding_dim": 16})
    vectors = []
    for run in ("a", "b"):
        train(
            tmp_path / "dataset",
            world.user_features,
            world.post_features,
            params,
            tmp_path / run,
            log=lambda _: None,
        )
        vectors.append(embed_posts(tmp_path / run, world.post_features)[1])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)


def test_without_a_batch_size_each_is_trained_and_validation_keeps_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from teamu_assets.model import train as training

    monkeypatch.setattr(training, "BATCH_SIZES", (32, 128))
    world = make_world(warm_users=30, cold_users=0, posts=60, events_per_user=10)
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    write_dataset(data, tmp_path / "dataset")
    params = training.TrainParams(**{**PARAMS, "epochs": 2, "batch_size": None, "embedding_dim": 16})
    logged: list[str] = []
    result = training.train(
        tmp_path / "dataset", world.user_features, world.post_features, params, tmp_path / "model", log=logged.append
    )
    recalls = result.batch_size_recalls
    assert set(recalls) == {32, 128}
    assert all(recall is not None for recall in recalls.values())
    chosen = result.params.batch_size
    assert chosen in recalls
    assert result.served_validation_recall == recalls[chosen]
    assert result.served_validation_hit_rates is not None
    assert result.served_validation_hit_rates.mean() == pytest.approx(recalls[chosen])
    assert result.model_dir == tmp_path / "model"
    assert training.read_model_config(result.model_dir)["params"]["batch_size"] == chosen
    assert f"batch size {chosen} chosen" in "\n".join(logged)
    # The other training's folder is gone; the kept towers load and embed.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dataset", "model"]
    post_ids, vectors = training.embed_posts(tmp_path / "model", world.post_features)
    assert vectors.shape == (len(post_ids), 16) and np.isfinite(vectors).all()
    # A run that sets the batch size trains that one only.
    fixed = training.train(
        tmp_path / "dataset",
        world.user_features,
        world.post_features,
        training.replace(params, batch_size=128),
        tmp_path / "fixed",
        log=lambda _: None,
    )
    assert fixed.params.batch_size == 128 and fixed.batch_size_recalls == {}
    assert fixed.served_validation_recall == recalls[128]


@pytest.mark.parametrize(("gain", "kept"), [("clear", 256), ("noise", 1024)])
def test_a_smaller_batch_is_kept_only_when_it_wins_validation_by_the_paired_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gain: str, kept: int
) -> None:
    from teamu_assets.model import train as training

    monkeypatch.setattr(training, "BATCH_SIZES", (256, 1024))
    rng = np.random.default_rng(0)
    larger = rng.uniform(0.0, 1.0, 400)
    # "clear": every user gains 0.05. "noise": a higher mean by 0.01, but user by user shuffled, so the paired
    # interval holds 0 (a rule by the means alone would take the smaller batch).
    smaller = larger + 0.05 if gain == "clear" else rng.permutation(larger) + 0.01
    rates = {1024: larger, 256: smaller}

    def fit(size: int, folder: Path) -> training.TrainResult:
        (folder / "trained_with").write_text(str(size))
        return training.TrainResult(
            model_dir=folder,
            history=[],
            best_epoch=1,
            best_validation_recall=float(rates[size].mean()),
            stopped_early=False,
            train_examples=0,
            tower_config=None,  # type: ignore[arg-type]
            params=training.TrainParams(batch_size=size),
            model=None,  # type: ignore[arg-type]
            served_validation_recall=float(rates[size].mean()),
            served_validation_hit_rates=rates[size],
        )

    logged: list[str] = []
    out_dir = tmp_path / "models" / "evaluated"
    result = training._keep_best_batch_size(fit, out_dir, 20, logged.append)
    assert result.params.batch_size == kept
    assert result.model_dir == out_dir
    assert (out_dir / "trained_with").read_text() == str(kept)
    assert result.batch_size_recalls == {size: pytest.approx(rates[size].mean()) for size in (256, 1024)}
    # The other training's hidden folder is gone.
    assert sorted(path.name for path in out_dir.parent.iterdir()) == ["evaluated"]
    assert any(line.startswith("batch size 256 minus 1024") for line in logged)


def test_refit_trains_the_evaluated_recipe_on_every_period(trained: Trained, tmp_path: Path) -> None:
    from teamu_assets.model.train import read_model_config, refit

    evaluated = trained.result
    world = trained.world
    served_dir = tmp_path / "served"
    served = refit(trained.dataset_dir, world.user_features, world.post_features, evaluated, served_dir, log=print)
    # The evaluated run's epoch count, no validation to stop on, and the serving terms it chose.
    assert len(served.history) == evaluated.best_epoch
    assert all(h["validation_recall@20"] is None for h in served.history)
    assert served.tower_config.popularity_weight == evaluated.tower_config.popularity_weight
    assert served.tower_config.itemitem_weight == evaluated.tower_config.itemitem_weight
    assert served.tower_config.use_time_terms == evaluated.tower_config.use_time_terms
    # Trained on the validation and evaluation periods too: posts first engaged after the cutoff have ids.
    assert served.train_examples > evaluated.train_examples
    after = world.interactions.loc[world.interactions["occurred_at"] >= world.cutoff, "post_id"]
    before = world.interactions.loc[world.interactions["occurred_at"] < world.cutoff, "post_id"]
    only_later = set(after) - set(before)
    assert only_later
    vocabulary = {int(i) for i in (served_dir / "vocabularies" / "post_ids.txt").read_text().split()}
    evaluated_vocabulary = {int(i) for i in (trained.model_dir / "vocabularies" / "post_ids.txt").read_text().split()}
    assert only_later <= vocabulary
    assert not only_later & evaluated_vocabulary
    assert read_model_config(served_dir)["best_epoch"] == evaluated.best_epoch


def test_time_terms_dropped_during_training_stop_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where validation gains without the freshness terms, the following epochs train without them: their
    weights stay as they were after the epoch that decided (the compiled step is traced again)."""
    from teamu_assets.model import train as training

    calls = iter(range(1_000))

    def recalls_preferring_no_time_terms(
        model: training.TwoTowerModel, *args: object, **kwargs: object
    ) -> dict[training.ServingWeights, float]:
        # Better without the terms, and better with every call, so that each later epoch is kept as the best.
        recall = (0.1 if model.query_tower.config.use_time_terms else 0.2) + next(calls) / 10_000
        return {(0.0, 0.0): recall, (0.0, 1.0): recall / 2}

    monkeypatch.setattr(training, "_validation_recalls", recalls_preferring_no_time_terms)
    world = make_world(warm_users=30, cold_users=0, posts=60, events_per_user=10)
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    write_dataset(data, tmp_path / "dataset")
    params = training.TrainParams(**{**PARAMS, "batch_size": 64, "embedding_dim": 16, "patience": 10})
    freshness = []
    logged: list[str] = []
    for epochs in (1, 3):
        result = training.train(
            tmp_path / "dataset",
            world.user_features,
            world.post_features,
            training.replace(params, epochs=epochs),
            tmp_path / f"epochs{epochs}",
            log=logged.append,
        )
        freshness.append(result.model.candidate_tower.freshness_net.get_weights())
        assert not result.tower_config.use_time_terms
    assert "time terms off from epoch 2: validation gains more than 5% without" in logged
    for after_one, after_three in zip(*freshness, strict=True):
        np.testing.assert_array_equal(after_one, after_three)


def test_validation_recall_is_averaged_over_users(trained: Trained, tmp_path: Path) -> None:
    """A heavy user's many validation examples weigh as much as any one user's: with one user's validation
    examples repeated twenty times, every validation figure stays as it was."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from teamu_assets.model import train as training
    from teamu_assets.model.dataset import count_posts_by_kind, read_manifest

    copy = tmp_path / "dataset"
    shutil.copytree(trained.dataset_dir, copy)
    manifest = read_manifest(copy)
    validation = pq.read_table(manifest.path("validation"))
    first = validation.filter(validation["first_engagement"])
    heavy = first.filter(pa.compute.equal(first["user_id"], first["user_id"][0]))
    pq.write_table(pa.concat_tables([validation, *[heavy] * 20]), manifest.path("validation"))

    original = read_manifest(trained.dataset_dir)
    counts = count_posts_by_kind([original.path("train")])
    posts = PostFeatureTable(
        post_features_as_of(counts, trained.world.post_features), reference_time=pd.Timestamp(original.cutoff)
    )
    users = UserFeatureTable(trained.world.user_features, FeatureLayout(history_length=original.history_length))
    model = trained.result.model
    before = training._validation_recalls(model, original, users, posts, 20)
    after = training._validation_recalls(model, manifest, users, posts, 20)
    assert before is not None and after is not None
    assert after == pytest.approx(before)


def test_validation_ranks_only_posts_that_existed_before_the_cutoff(trained: Trained) -> None:
    """Validation holds engagements from before the cutoff, so the posts created after it were no candidates
    then: every validation figure is the same with those posts in the table as without them, however popular
    they look (before the fix they pushed the targets out of the top k)."""
    from teamu_assets.model import train as training
    from teamu_assets.model.dataset import count_posts_by_kind, read_manifest

    manifest = read_manifest(trained.dataset_dir)
    cutoff = pd.Timestamp(manifest.cutoff)
    post_features = post_features_as_of(count_posts_by_kind([manifest.path("train")]), trained.world.post_features)
    later = post_features["created_at"] > cutoff
    assert later.any()
    post_features.loc[later, "view_count"] = 10**6
    existing = post_features.loc[~later]
    users = UserFeatureTable(trained.world.user_features, FeatureLayout(history_length=manifest.history_length))
    model = trained.result.model
    with_later = training._validation_recalls(
        model, manifest, users, PostFeatureTable(post_features, reference_time=cutoff), 20
    )
    without_later = training._validation_recalls(
        model, manifest, users, PostFeatureTable(existing, reference_time=cutoff), 20
    )
    assert with_later is not None and without_later is not None
    assert with_later == pytest.approx(without_later)


def test_validation_as_new_users_ranks_by_the_profile_alone(trained: Trained, tmp_path: Path) -> None:
    """The new users' prior is chosen on validation with every user ranked as if new: what the examples say of
    the user's past (the history's order, the activity counts) changes every figure of the usual validation and
    none of the as-new one, whose weights are the new users' grid without the item-item block."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from teamu_assets.model import train as training
    from teamu_assets.model.dataset import count_posts_by_kind, read_manifest

    original = read_manifest(trained.dataset_dir)
    copy = tmp_path / "dataset"
    shutil.copytree(trained.dataset_dir, copy)
    manifest = read_manifest(copy)
    table = pq.read_table(manifest.path("validation"))
    reversed_histories = pa.array([list(reversed(h)) for h in table["history"].to_pylist()], pa.list_(pa.int64()))
    table = table.set_column(table.schema.get_field_index("history"), "history", reversed_histories)
    for column in ("viewed_count", "upvoted_count", "commented_count"):
        table = table.set_column(table.schema.get_field_index(column), column, pa.array([500] * len(table)))
    pq.write_table(table, manifest.path("validation"))

    counts = count_posts_by_kind([original.path("train")])
    posts = PostFeatureTable(
        post_features_as_of(counts, trained.world.post_features), reference_time=pd.Timestamp(original.cutoff)
    )
    users = UserFeatureTable(trained.world.user_features, FeatureLayout(history_length=original.history_length))
    model = trained.result.model
    usual = [training._validation_recalls(model, m, users, posts, 20) for m in (original, manifest)]
    as_new = [training._validation_recalls(model, m, users, posts, 20, as_new_users=True) for m in (original, manifest)]
    assert usual[0] is not None and usual[1] is not None and as_new[0] is not None
    assert usual[0] != pytest.approx(usual[1])
    assert as_new[0] == pytest.approx(as_new[1])
    assert set(as_new[0]) == {(0.0, weight) for weight in (0.0, *training.NEW_USER_POPULARITY_WEIGHTS)}
    assert trained.result.tower_config.new_user_popularity_weight in {w for _, w in as_new[0]}
