"""The partitioned_embedding_refresh job's assets through Dagster, on a small synthetic world with dbt-built marts
and a promoted tiny model: each partition a run of its own; until the last one the served table is untouched,
then it holds exactly the vectors the batch path computes, with the partition tables gone."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetsDefinition, DagsterInstance, materialize

from teamu_assets.assets.partitioned import post_embedding_partitions, user_embedding_partitions
from teamu_assets.db import bootstrap, features
from teamu_assets.db.connection import connect
from teamu_assets.db.partitions import DEFAULT_PARTITIONS
from teamu_assets.definitions import build_resources
from teamu_assets.ingest.loader import load_landing_folder
from teamu_assets.synthetic import SyntheticConfig, generate, write_mixpanel_files, write_supabase
from tests.integration.test_realtime import VERSION, World, _train_and_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("partitioned")
    bootstrap.prepare_app_database(module_db_url)
    dataset = generate(SyntheticConfig(users=120, posts=80, days=20, seed=5))
    write_supabase(module_db_url, dataset)
    write_mixpanel_files(dataset, home / "landing", seed=5)
    load_landing_folder(module_db_url, home / "landing")
    world = World(module_db_url, home, home / "model")
    world.dbt("build")
    _train_and_serve(module_db_url, home)
    return world


def _live(url: str, kind: str) -> tuple[int, object]:
    with connect(url) as conn:
        return conn.execute(f"select count(*), max(updated_at) from ml.{kind}_embeddings").fetchone()


def _stored(url: str, kind: str) -> dict[int, np.ndarray]:
    with connect(url) as conn:
        rows = conn.execute(f"select {kind}_id, embedding::real[] from ml.{kind}_embeddings").fetchall()
    return {row_id: np.array(vector, dtype=np.float32) for row_id, vector in rows}


@pytest.mark.parametrize("asset", [user_embedding_partitions, post_embedding_partitions], ids=["user", "post"])
def test_each_partition_a_run_and_the_last_one_swaps_all_in(world: World, asset: AssetsDefinition) -> None:
    from teamu_assets.model.train import embed_posts, embed_users

    kind = "user" if asset is user_embedding_partitions else "post"
    resources = build_resources(world.home, world.url)
    before = _live(world.url, kind)
    staged = 0
    with DagsterInstance.ephemeral() as instance:
        for partition in range(DEFAULT_PARTITIONS):
            result = materialize([asset], partition_key=str(partition), resources=resources, instance=instance)
            assert result.success
            metadata = result.asset_materializations_for_node(asset.op.name)[0].metadata
            staged += metadata["rows"].value
            last = partition == DEFAULT_PARTITIONS - 1
            assert metadata["published"].value == last
            if not last:
                assert _live(world.url, kind) == before, "a partition changed the served table before the last"
    assert staged == before[0]

    if kind == "user":
        ids, vectors = embed_users(world.model_dir, features.read_user_features(world.url))
    else:
        posts = features.read_post_features(world.url)
        ids, vectors = embed_posts(world.model_dir, posts, as_of=features.data_clock(world.url))
    stored = _stored(world.url, kind)
    assert sorted(stored) == sorted(ids.tolist())
    for row_id, vector in zip(ids.tolist(), vectors, strict=True):
        np.testing.assert_allclose(stored[row_id], vector, atol=1e-5)
    with connect(world.url) as conn:
        versions = conn.execute(f"select array_agg(distinct model_version) from ml.{kind}_embeddings").fetchone()[0]
        leftovers = conn.execute(
            "select count(*) from pg_tables where schemaname = 'ml' and tablename like %s",
            (f"{kind}_embeddings_part%",),
        ).fetchone()[0]
    assert versions == [VERSION] and leftovers == 0
    assert _live(world.url, kind)[1] != before[1]


def test_a_partition_with_no_promoted_model_stages_nothing(world: World) -> None:
    with connect(world.url) as conn:
        conn.execute("update ml.model_versions set promoted = false")
    try:
        result = materialize(
            [user_embedding_partitions], partition_key="0", resources=build_resources(world.home, world.url)
        )
        metadata = result.asset_materializations_for_node(user_embedding_partitions.op.name)[0].metadata
        assert metadata["staged"].value is False and "no model is promoted" in metadata["reason"].value
    finally:
        with connect(world.url) as conn:
            conn.execute("update ml.model_versions set promoted = (model_version = %s)", (VERSION,))
