"""The whole asset graph on small synthetic data in a real Postgres. First a candidate worse than popularity:
the promotion gate's blocking check fails, nothing is promoted, the embedding assets don't run and
ml.recommend_posts serves its popularity fallback. Then ingest, dbt, train, evaluate, serve for real; then the
gate refuses a worse model and serving keeps the promoted one."""

from pathlib import Path

import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, materialize
from pgvector.psycopg import register_vector

from teamu_assets import definitions, demo
from teamu_assets.db import bootstrap, registry
from teamu_assets.db.connection import connect
from teamu_assets.db.recommend import recommend
from teamu_assets.jobs import incremental_refresh_job, post_freshness_job
from teamu_assets.settings import default_landing_dir
from teamu_assets.synthetic import generate, save_truth, write_mixpanel_files, write_supabase
from tests.e2e.world import SMALL_MODEL, WORLD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Untrained (learning rate 0: the towers keep their random initial weights), and of another dimension than the
# models after it: refused, it must not fix the embedding tables' dimension either.
UNTRAINED_MODEL = {"epochs": 1, "embedding_dim": 4, "batch_size": 256, "learning_rate": 0.0}
EMBEDDINGS = (AssetKey(["ml", "post_embeddings"]), AssetKey(["ml", "user_embeddings"]))
# Every asset but the partitioned embedding ones, which run one partition a run in their own job (full_refresh
# leaves them out too).
ASSETS = [asset for asset in definitions.defs.assets if getattr(asset, "partitions_def", None) is None]


def _run(home: Path, module_db_url: str, model_config: dict, gate_tolerance: float = 0.02):
    # raise_on_error=False: a refused model fails the gate's blocking check, and so the run; the tests look at it.
    return materialize(
        [*ASSETS, *definitions.defs.asset_checks],
        instance=DagsterInstance.ephemeral(),
        resources=definitions.build_resources(home, module_db_url),
        run_config={
            "ops": {
                "two_tower_model": {"config": model_config},
                "evaluation_report": {"config": {"tolerance": gate_tolerance}},
            }
        },
        raise_on_error=False,
    )


def _checks(result) -> dict:
    return {check.asset_check_key.name: check for check in result.get_asset_check_evaluations()}


def _materialized(result) -> set:
    return {event.asset_key for event in result.get_asset_materialization_events()}


def _fallback_ranking(url: str, user_id: int, count: int, decay: float) -> list[int]:
    """ml.recommend_posts' popularity fallback, written out: engaged users / (1 + age in days)^decay over the posts
    the user may be shown."""
    with connect(url) as conn:
        rows = conn.execute(
            "select pf.post_id from marts.post_features pf, marts.user_features uf"
            " where uf.user_id = %(user)s and pf.user_id is distinct from uf.user_id"
            " and ml.local_post_visible(pf.is_local, pf.latitude, pf.longitude, uf.latitude, uf.longitude, 50)"
            " and not exists (select 1 from marts.interactions i where i.user_id = uf.user_id"
            " and i.post_id = pf.post_id)"
            " order by pf.engaged_user_count::float8"
            " / power(1 + greatest(extract(epoch from now() - pf.created_at), 0) / 86400, %(decay)s) desc,"
            " pf.post_id limit %(count)s",
            {"user": user_id, "count": count, "decay": decay},
        ).fetchall()
    return [post_id for (post_id,) in rows]


@pytest.fixture(scope="module")
def seeded(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("teamu_home")
    bootstrap.prepare_app_database(module_db_url)
    dataset = generate(WORLD)
    write_supabase(module_db_url, dataset)
    write_mixpanel_files(dataset, default_landing_dir(home), bad_fraction=0.02, seed=11)
    save_truth(dataset.truth, home / "synthetic" / "ground_truth.npz")
    return home, module_db_url


def _metadata(result, *key: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(list(key))]
    metadata = events[-1].step_materialization_data.materialization.metadata
    return {name: value.value for name, value in metadata.items()}


def test_a_first_model_worse_than_popularity_is_not_promoted_and_serving_falls_back(
    seeded: tuple[Path, str],
) -> None:
    home, url = seeded
    refused = _run(home, url, UNTRAINED_MODEL)
    assert not refused.success, "a failed blocking check fails the run"
    # The first run ingested the landing folder, bad and repeated lines included.
    ingested = _metadata(refused, "mixpanel", "events")
    assert ingested["quarantined"] > 0 and ingested["duplicates"] > 0
    assert ingested["lines_read"] == ingested["loaded"] + ingested["duplicates"] + ingested["quarantined"]
    trained = _metadata(refused, "two_tower_model")
    assert trained["epochs_run"] == 1 and trained["refit"] is True and trained["refit_examples"] > 0
    assert len(trained["history"].splitlines()) == 2 + 1  # header, rule, the one epoch
    assert {"time_terms", "popularity_weight", "itemitem_weight"} <= trained.keys()  # the served score's terms
    gate = _checks(refused)["promotion_gate"]
    assert not gate.passed and gate.severity == AssetCheckSeverity.ERROR
    assert "rule 1 (beats popularity) failed" in gate.description
    figures = {name: value.value for name, value in gate.metadata.items()}
    assert figures["recall@20_minus_popularity_ci_low"] <= 0
    assert figures["serving"] == "serving keeps the popularity fallback (no model is promoted)"
    # What `teamu demo` prints instead of a traceback.
    assert demo.gate_refusal(refused) == gate.description
    assert demo.serving_now(url) == "the popularity fallback (no model is promoted)"
    evaluation = _metadata(refused, "evaluation_report")
    assert evaluation["promoted"] is False and evaluation["gate_rule"] == "beats_popularity"
    assert evaluation["itemitem_recall@20"] > 0
    # The fallback's decay, chosen on validation by the same evaluation, is the one serving reads.
    decay = evaluation["popularity_fallback_decay"]
    assert registry.fallback_decay(url) == decay
    # The gate stopped the embedding assets (and so their checks): nothing written, nothing promoted.
    assert not set(EMBEDDINGS) & _materialized(refused)
    assert not {"post_embeddings_are_complete_and_sane", "user_embeddings_are_complete_and_sane"} & set(
        _checks(refused)
    )
    with connect(url) as conn:
        assert conn.execute("select count(*) from ml.model_versions where promoted").fetchone()[0] == 0
        assert conn.execute("select count(*) from ml.model_versions").fetchone()[0] == 1
        assert conn.execute("select to_regclass('ml.post_embeddings')").fetchone()[0] is None
        stored = conn.execute("select promoted, gate, metrics -> 'vs_popularity' from ml.model_evaluations").fetchall()
        active_user = conn.execute(
            "select user_id from marts.user_features order by viewed_count desc, user_id limit 1"
        ).fetchone()[0]
    assert registry.promoted_model(url) is None
    [(promoted, stored_gate, vs_popularity)] = stored
    assert promoted is False and stored_gate["reason"] == gate.description
    assert round(vs_popularity["recall@20_ci"][0], 4) == figures["recall@20_minus_popularity_ci_low"]
    # The app's RPC answers anyway: the serving functions were installed before the gate, and serve popularity.
    served = [r.post_id for r in recommend(url, active_user, 10)]
    assert len(served) == 10 and served == _fallback_ranking(url, active_user, 10, decay)


def test_full_graph_then_gate_keeps_the_promoted_model(seeded: tuple[Path, str]) -> None:
    home, module_db_url = seeded
    first = _run(home, module_db_url, SMALL_MODEL)
    assert first.success

    # A build with tests: dagster-dbt's adapter gives the tables their row counts (views none) and every model its
    # column types and column lineage, in the scratch database the manifest was not parsed for.
    with connect(module_db_url) as conn:
        user_rows = conn.execute("select count(*) from marts.user_features").fetchone()[0]
    user_features = _metadata(first, "marts", "user_features")
    assert user_features["dagster/row_count"] == user_rows > 0
    assert "dagster/row_count" not in _metadata(first, "staging", "stg_supabase__users")
    columns = {column.name: column.type for column in user_features["dagster/column_schema"].columns}
    assert columns["user_id"] == "bigint" and columns["viewed_count"] == "bigint" and len(columns) == 16
    lineage = user_features["dagster/column_lineage"].deps_by_column
    assert {(dep.asset_key, dep.column_name) for dep in lineage["username"]} == {
        (AssetKey(["staging", "stg_supabase__users"]), "username")
    }
    # Every dbt test ran as an asset check: source tests on the raw assets, singular tests on the model they name.
    dbt_checks = _checks(first)
    assert dbt_checks["source_unique_supabase_users_user_id"].passed
    assert dbt_checks["source_references_supabase_posts_user_id__user_id__users"].passed
    assert dbt_checks["user_features_counts_match_interactions"].passed
    rejected = dbt_checks["interactions_rejected_are_reported"]
    assert not rejected.passed and rejected.severity == AssetCheckSeverity.WARN, "a warning, not a failure"

    evaluation = _metadata(first, "evaluation_report")
    assert evaluation["recall@20"] == round(evaluation["recall@20"], 4), "metrics rounded for the catalog"
    # Nothing is promoted yet (the test above): rule 1 alone decides, the paired interval above 0.
    assert evaluation["promoted"] is True
    assert evaluation["recall@20"] > evaluation["popularity_recall@20"]
    assert evaluation["recall@20_minus_popularity_ci"][0] > 0
    assert "oracle_recall@20" in evaluation and "itemitem_recall@20" in evaluation
    # The ceiling of a ranking made at the cutoff is below the oracle, which knows how the new posts will do.
    assert 0 < evaluation["knowable_oracle_recall@20"] <= evaluation["oracle_recall@20"]
    report_dir = Path(evaluation["report_path"]).parent
    assert len(list(report_dir.glob("*.png"))) >= 4
    assert "## Intervals" in (report_dir / "report.md").read_text()

    checks = {name: check.passed for name, check in _checks(first).items()}
    assert checks["promotion_gate"] and checks["post_embeddings_are_complete_and_sane"]
    assert checks["user_embeddings_are_complete_and_sane"]
    assert "rule 1 (beats popularity) passed" in _checks(first)["promotion_gate"].description

    promoted = registry.promoted_model(module_db_url)
    assert promoted is not None and promoted.model_version == evaluation["model_version"]
    with connect(module_db_url) as conn:
        served = conn.execute("select distinct model_version from ml.post_embeddings").fetchall()
        a_user = conn.execute("select user_id from marts.user_features order by viewed_count desc limit 1").fetchone()
    assert served == [(promoted.model_version,)]
    assert len(recommend(module_db_url, a_user[0], 10)) == 10

    # Post ideas for the five most active teams, offline, ranked by the promoted model's post tower.
    ideas = _metadata(first, "ml", "post_ideas")
    assert ideas["teams"] == 5 and ideas["ideas"] == 50 and ideas["model_version"] == promoted.model_version
    with connect(module_db_url) as conn:
        stored = conn.execute("select count(distinct project_id), count(*), min(model_version) from ml.post_ideas")
        assert stored.fetchone() == (5, 50, promoted.model_version)

    # A model that barely trained, against a gate with no tolerance: not promoted, serving unchanged.
    second = _run(home, module_db_url, {**SMALL_MODEL, "epochs": 1, "learning_rate": 1e-7}, gate_tolerance=0.0)
    assert not second.success
    rejected = _metadata(second, "evaluation_report")
    assert rejected["promoted"] is False and "not promoted" in rejected["gate"]
    gate = _checks(second)["promotion_gate"]
    assert not gate.passed and gate.description == rejected["gate"]
    assert gate.metadata["serving"].value == f"serving keeps {promoted.model_version}"
    assert registry.promoted_model(module_db_url).model_version == promoted.model_version
    with connect(module_db_url) as conn:
        assert conn.execute("select distinct model_version from ml.post_embeddings").fetchall() == served
    assert not set(EMBEDDINGS) & _materialized(second)


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
        [*ASSETS, *definitions.defs.asset_checks],
        instance=DagsterInstance.ephemeral(),
        resources=definitions.build_resources(home, url),
        selection=incremental_refresh_job.selection,
        run_config={
            "ops": {
                "ml__post_embeddings": {"config": {"mode": "incremental"}},
                "ml__user_embeddings": {"config": {"mode": "incremental"}},
            }
        },
    )
    assert result.success
    # The sensor's refresh runs no dbt test (its latency budget), not even the source tests on mixpanel/events.
    assert set(_checks(result)) == {
        "export_files_loaded",
        "post_embeddings_are_complete_and_sane",
        "user_embeddings_are_complete_and_sane",
    }
    assert _metadata(result, "marts", "user_features")["dagster/row_count"] > 0, "counted without dbt's adapter"
    users = _metadata(result, "ml", "user_embeddings")
    assert users["mode"] == "upsert" and 1 <= users["rows"] < len(before)
    assert users["dagster/row_count"] == len(before), "the table's rows, not the rows the upsert wrote"
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
    from teamu_assets.model.params import SCORE_TERMS
    from teamu_assets.model.train import read_model_config

    home, url = seeded
    promoted = registry.promoted_model(url)
    before = _post_vectors(url)
    result = materialize(
        [*ASSETS, *definitions.defs.asset_checks],
        instance=DagsterInstance.ephemeral(),
        resources=definitions.build_resources(home, url),
        selection=post_freshness_job.selection,
        run_config={"ops": {"ml__post_embeddings": {"config": {"mode": "rewrite"}}}},
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
    assert untouched
    # The freshness term is the post vector's third-to-last dimension (towers.py): older now, so it moved. Where
    # validation dropped the freshness terms (train._choose_serving_terms), it is 0 in every vector.
    freshness = -SCORE_TERMS
    if read_model_config(Path(promoted.artifact_path))["tower"]["use_time_terms"]:
        assert all(after[p][0][freshness] != before[p][0][freshness] for p in untouched)
    else:
        assert all(after[p][0][freshness] == 0.0 for p in after)
