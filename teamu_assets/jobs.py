"""Jobs: the incremental refresh the sensor requests, the daily post-freshness rewrite, the full refresh."""

from dagster import AssetKey, AssetSelection, define_asset_job, in_process_executor
from dagster_dbt import build_dbt_asset_selection

from teamu_assets.assets.dbt import teamu_dbt_models
from teamu_assets.assets.ideas import POST_IDEAS
from teamu_assets.assets.partitioned import EMBEDDING_PARTITIONS

EMBEDDINGS = [AssetKey(["ml", "post_embeddings"]), AssetKey(["ml", "user_embeddings"])]
# Every refresh job writes the marts and the embedding tables: the run queue lets one of them run at a time
# (tag_concurrency_limits in the instance's dagster.yaml, teamu_assets/instance.py).
WRITES_MARTS_AND_EMBEDDINGS = {"teamu/writes": "marts-and-embeddings"}

# Ingest new events, run the incremental dbt models, and upsert embeddings of changed users/posts with the
# promoted model. In-process: one Python start-up and one TensorFlow import per run, not one per step.
incremental_refresh_job = define_asset_job(
    "incremental_refresh",
    # Only the incremental models: views have nothing to refresh (re-creating them costs a lock and a round
    # trip each) and dbt's tests run in full_refresh. Without their checks dagster-dbt runs `dbt build` with no
    # tests, which is most of the latency budget saved. The embedding checks stay: they are cheap and guard serving.
    # The dbt source tests on mixpanel/events are its checks too: taken out with the others.
    selection=(
        AssetSelection.keys(AssetKey(["mixpanel", "events"]))
        | build_dbt_asset_selection([teamu_dbt_models], dbt_select="config.materialized:incremental").without_checks()
        | AssetSelection.assets(*EMBEDDINGS)
    )
    - AssetSelection.checks(*teamu_dbt_models.check_keys),
    executor_def=in_process_executor,
    tags=WRITES_MARTS_AND_EMBEDDINGS,
    config={
        "ops": {
            "ml__post_embeddings": {"config": {"mode": "incremental"}},
            "ml__user_embeddings": {"config": {"mode": "incremental"}},
        }
    },
    description="New interactions to fresh embeddings, no retraining: cost grows with the changed rows.",
)

# Post vectors carry each post's freshness as of when they were written (teamu_assets/model/towers.py): a daily
# rewrite with the promoted model keeps posts that nobody touched from looking as fresh as on the day they were
# embedded. Seconds at the demo size; a full table swap (new table, HNSW build) at any size.
post_freshness_job = define_asset_job(
    "post_freshness",
    selection=AssetSelection.assets(AssetKey(["ml", "post_embeddings"])),
    executor_def=in_process_executor,
    tags=WRITES_MARTS_AND_EMBEDDINGS,
    config={"ops": {"ml__post_embeddings": {"config": {"mode": "rewrite"}}}},
    description="Rewrite every post embedding with the promoted model, so post freshness follows the clock.",
)

# Post ideas are left out: with TEAMU_LLM_URL set they call an outside service, and nothing downstream needs them.
# So are the partitioned embedding assets: their job (partitioned_embedding_refresh) runs one partition a run.
full_refresh_job = define_asset_job(
    "full_refresh",
    # all() leaves out the Supabase tables (external assets), and so the dbt source tests that are their checks.
    selection=(AssetSelection.all() | AssetSelection.all_asset_checks())
    - AssetSelection.assets(POST_IDEAS, *EMBEDDING_PARTITIONS),
    tags=WRITES_MARTS_AND_EMBEDDINGS,
    description="Everything: ingest, dbt build, training data, train, evaluate and gate, embeddings.",
)
