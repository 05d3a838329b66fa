"""The whole asset graph on small synthetic data in a real Postgres: ingest, dbt, train, evaluate, serve; then
the promotion gate refuses a worse model and serving keeps the promoted one."""

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize
from pgvector.psycopg import register_vector

from teamu_assets import definitions
from teamu_assets.db import bootstrap, registry
from teamu_assets.db.connection import connect
from teamu_assets.db.recommend import recommend
from teamu_assets.sensors import incremental_refresh_job, post_freshness_job
from teamu_assets.synthetic import SyntheticConfig, generate, save_truth, write_mixpanel_files, write_supabase

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMALL_MODEL = {"epochs": 4, "embedding_dim": 32, "batch_size": 256, "patience": 2}


def _run(home: Path, module_db_url: str, model_config: dict, gate_tolerance: float = 0.02):
    return materialize(
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        instance=DagsterInstance.ephemeral(),
        resources=definitions.build_resources(home, module_db_url),
        run_config={
            "ops": {
                "two_tower_model": {"config": model_config},
                "evaluation_report": {"config": {"tolerance": gate_tolerance}},
            }
        },
    )


@pytest.fixture(scope="module")
def seeded(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("teamu_home")
    bootstrap.prepare_app_database(module_db_url)
    dataset = generate(SyntheticConfig(users=300, posts=200, days=30, seed=11, bad_fraction=0.02))
    write_supabase(module_db_url, dataset)
    write_mixpanel_files(dataset, home / "landing", bad_fraction=0.02, seed=11)
    save_truth(dataset.truth, home / "synthetic" / "ground_truth.npz")
    return home, module_db_url


def _metadata(result, *key: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(list(key))]
    metadata = events[-1].step_materialization_data.materialization.metadata
    return {name: value.value for name, value in metadata.items()}


def test_full_graph_then_gate_keeps_the_promoted_model(seeded: tuple[Path, str]) -> None:
    home, module_db_url = seeded
    first = _run(home, module_db_url, SMALL_MODEL)
    assert first.success

    # dbt's tables carry their row counts (counted by the asset, not by dagster-dbt's adapter); views none.
    with connect(module_db_url) as conn:
        user_rows = conn.execute("select count(*) from marts.user_features").fetchone()[0]
    assert _metadata(first, "marts", "user_features")["dagster/row_count"] == user_rows > 0
    assert "dagster/row_count" not in _metadata(first, "staging", "stg_supabase__users")

    ingested = _metadata(first, "mixpanel", "events")
    assert ingested["quarantined"] > 0 and ingested["duplicates"] > 0
    assert ingested["lines_read"] == ingested["loaded"] + ingested["duplicates"] + ingested["quarantined"]

    evaluation = _metadata(first, "evaluation_report")
    assert evaluation["promoted"] is True
    assert evaluation["recall@20"] > evaluation["popularity_recall@20"]
    assert "oracle_recall@20" in evaluation
    report_dir = Path(evaluation["report_path"]).parent
    assert len(list(report_dir.glob("*.png"))) >= 3

    checks = {c.asset_check_key.name: c.passed for c in first.get_asset_check_evaluations()}
    assert checks["post_embeddings_are_complete_and_sane"] and checks["user_embeddings_are_complete_and_sane"]

    promoted = registry.promoted_model(module_db_url)
    assert promoted is not None and promoted.model_version == evaluation["model_version"]
    with connect(module_db_url) as conn:
        served = conn.execute("select distinct model_version from ml.post_embeddings").fetchall()
        a_user = conn.execute("select user_id from marts.user_features order by viewed_count desc limit 1").fetchone()
    assert served == [(promoted.model_version,)]
    assert len(recommend(module_db_url, a_user[0], 10)) == 10

    # A model that barely trained, against a gate with no tolerance: not promoted, serving unchanged.
    second = _run(home, module_db_url, {**SMALL_MODEL, "epochs": 1, "learning_rate": 1e-7}, gate_tolerance=0.0)
    assert second.success
    rejected = _metadata(second, "evaluation_report")
    assert rejected["promoted"] is False
    assert "not promoted" in rejected["gate"].lower() or "below" in rejected["gate"].lower()
    assert registry.promoted_model(module_db_url).model_version == promoted.model_version
    with connect(module_db_url) as conn:
        assert conn.execute("select distinct model_version from ml.post_embeddings").fetchall() == served
    assert _metadata(second, "ml", "post_embeddings")["written"] is False


def test_incremental_refresh_reembeds_only_what_changed(seeded: tuple[Path, str]) -> None:
    """After the full graph: one new upvote -> ingest + incremental dbt + upsert of the changed rows only."""
    home, url = seeded
    with connect(url) as conn:
        user_id, post_id = conn.execute(
            "select u.user_id, p.post_id from marts.user_features u cross join marts.post_features p "
            "where p.user_id <> u.user_id and not exists (select 1 from marts.interactions i "
            "where i.user_id = u.user_id and i.post_id = p.post_id) order by u.user_id, p.post_id limit 1"
        ).fetchone()
        before = dict(conn.execute("select user_id, updated_at from ml.user_embeddings").fetchall())
        conn.execute(
            "insert into raw_supabase.votes select max(vote_id) + 1, %s, %s, 1, now() from raw_supabase.votes",
            (post_id, user_id),
        )
    result = materialize(
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        instance=DagsterInstance.ephemeral(),
        resources=definitions.build_resources(home, url),
        selection=incremental_refresh_job.selection,
        run_config={
            "ops": {
                "ml__post_embeddings": {"config": {"incremental": True}},
                "ml__user_embeddings": {"config": {"incremental": True}},
            }
        },
    )
    assert result.success
    users = _metadata(result, "ml", "user_embeddings")
    assert users["mode"] == "upsert" and 1 <= users["rows"] < len(before)
    with connect(url) as conn:
        after = dict(conn.execute("select user_id, updated_at from ml.user_embeddings").fetchall())
        served = [row[0] for row in conn.execute("select post_id from ml.recommend_posts(%s, 50)", (user_id,))]
    assert after[user_id] > before[user_id], "the voting user is re-embedded"
    assert sum(after[u] != before[u] for u in before) == users["rows"], "no other user is touched"
    assert post_id not in served, "the upvoted post is no longer recommended to that user"


def _post_vectors(url: str) -> dict:
    """post_id -> (vector, updated_at) of every row of ml.post_embeddings."""
    with connect(url) as conn:
        register_vector(conn)
        rows = conn.execute("select post_id, embedding, updated_at from ml.post_embeddings").fetchall()
    return {post_id: (embedding.to_numpy(), updated_at) for post_id, embedding, updated_at in rows}


def test_post_freshness_rewrites_every_post_with_the_promoted_model(seeded: tuple[Path, str]) -> None:
    """After the refreshes above (the data clock moved to now): every post vector is rewritten with the promoted
    model, untouched posts included, so their freshness term is measured at the new clock."""
    home, url = seeded
    promoted = registry.promoted_model(url)
    before = _post_vectors(url)
    result = materialize(
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        instance=DagsterInstance.ephemeral(),
        resources=definitions.build_resources(home, url),
        selection=post_freshness_job.selection,
        run_config={"ops": {"ml__post_embeddings": {"config": {"rewrite_with_promoted": True}}}},
    )
    assert result.success
    written = _metadata(result, "ml", "post_embeddings")
    assert written["mode"] == "full" and written["rows"] == len(before)
    assert written["model_version"] == promoted.model_version
    assert all(check.passed for check in result.get_asset_check_evaluations())
    after = _post_vectors(url)
    assert after.keys() == before.keys()
    assert len({updated for _, updated in after.values()}) == 1, "one write"
    oldest = min(updated for _, updated in before.values())
    untouched = [post for post, (_, updated) in before.items() if updated == oldest]
    # The freshness term is the post vector's second-to-last dimension (towers.py): older now, so it moved.
    assert untouched and all(after[p][0][-2] != before[p][0][-2] for p in untouched)
