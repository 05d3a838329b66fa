"""Sensors and schedules: new interactions refresh embeddings within seconds; enough of them, or the night,
retrain through the promotion gate."""

import hashlib
import json
import os
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)
from dagster_dbt import build_dbt_asset_selection

from teamu_assets.assets.dbt import teamu_dbt_models
from teamu_assets.db.watermarks import Watermarks, current_watermarks, interactions_since_last_training
from teamu_assets.resources import MixpanelExport, TeamuDatabase

EMBEDDINGS = [AssetKey(["ml", "post_embeddings"]), AssetKey(["ml", "user_embeddings"])]
# Both refresh jobs write the marts and the embedding tables: the run queue lets one of them run at a time
# (tag_concurrency_limits in the instance's dagster.yaml, teamu_assets/instance.py).
WRITES_MARTS_AND_EMBEDDINGS = {"teamu/writes": "marts-and-embeddings"}
RUNS_REQUESTED = "runs_requested"
RETRAIN_MIN_INTERACTIONS = int(os.environ.get("TEAMU_RETRAIN_MIN_INTERACTIONS") or 5000)

# Ingest new events, run the incremental dbt models, and upsert embeddings of changed users/posts with the
# promoted model. In-process: one Python start-up and one TensorFlow import per run, not one per step.
incremental_refresh_job = define_asset_job(
    "incremental_refresh",
    # Only the incremental models: views have nothing to refresh (re-creating them costs a lock and a round
    # trip each) and dbt's tests run in full_refresh. Without their checks dagster-dbt runs `dbt build` with no
    # tests, which is most of the latency budget saved. The embedding checks stay: they are cheap and guard serving.
    selection=(
        AssetSelection.keys(AssetKey(["mixpanel", "events"]))
        | build_dbt_asset_selection([teamu_dbt_models], dbt_select="config.materialized:incremental").without_checks()
        | AssetSelection.assets(*EMBEDDINGS)
    ),
    executor_def=in_process_executor,
    tags=WRITES_MARTS_AND_EMBEDDINGS,
    config={
        "ops": {
            "ml__post_embeddings": {"config": {"incremental": True}},
            "ml__user_embeddings": {"config": {"incremental": True}},
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
    config={"ops": {"ml__post_embeddings": {"config": {"rewrite_with_promoted": True}}}},
    description="Rewrite every post embedding with the promoted model, so post freshness follows the clock.",
)

daily_post_freshness_schedule = ScheduleDefinition(
    job=post_freshness_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily rewrite of the post embeddings: post ages move on even when nothing else changes.",
)

full_refresh_job = define_asset_job(
    "full_refresh",
    selection=AssetSelection.all(),
    tags=WRITES_MARTS_AND_EMBEDDINGS,
    description="Everything: ingest, dbt build, training data, train, evaluate and gate, embeddings.",
)


@sensor(
    job=incremental_refresh_job,
    minimum_interval_seconds=2,
    default_status=DefaultSensorStatus.RUNNING,
    description="New votes, comments, profile/post edits in Supabase or new Mixpanel export files.",
)
def new_interactions_sensor(
    context: SensorEvaluationContext, database: TeamuDatabase, mixpanel: MixpanelExport
) -> SensorResult | SkipReason:
    """Cursor = the raw inputs' watermarks plus a count of the runs requested so far (kept in the Dagster
    instance, so it survives daemon restarts). One run per move of the watermarks: a burst of events between two
    ticks becomes one run. The run key is that count with a hash of the watermarks: a re-evaluated tick (same
    stored cursor) repeats the key, so Dagster launches nothing twice, while the same watermarks seen again
    after the raw tables were rewritten (a reseed) still get a run of their own."""
    now = current_watermarks(database.url(), Path(mixpanel.landing_dir))
    if context.cursor is None:
        # First tick: everything present so far is what the full refresh covers; watch from here.
        return SensorResult(cursor=json.dumps({**now.as_dict(), RUNS_REQUESTED: 0}), skip_reason="started watching")
    stored = json.loads(context.cursor)
    runs_requested = int(stored.pop(RUNS_REQUESTED, 0)) + 1
    if not now.moved_from(Watermarks.from_dict(stored)):
        return SkipReason("no new interactions")
    state = json.dumps(now.as_dict(), sort_keys=True)
    run_key = f"interactions-{runs_requested}-{hashlib.sha256(state.encode()).hexdigest()[:12]}"
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key)],
        cursor=json.dumps({**now.as_dict(), RUNS_REQUESTED: runs_requested}, sort_keys=True),
    )


@sensor(
    job=full_refresh_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description=f"Retrain once {RETRAIN_MIN_INTERACTIONS} new interactions reached the marts since the last model.",
)
def retrain_on_new_interactions_sensor(
    context: SensorEvaluationContext, database: TeamuDatabase
) -> RunRequest | SkipReason:
    new, last_version = interactions_since_last_training(database.url())
    if new < RETRAIN_MIN_INTERACTIONS:
        return SkipReason(f"{new} new interactions since {last_version or 'the start'} (< {RETRAIN_MIN_INTERACTIONS})")
    # One retraining per registered model: the key changes once the retrained model is registered.
    return RunRequest(run_key=f"retrain-after-{last_version or 'nothing'}")


nightly_retrain_schedule = ScheduleDefinition(
    job=full_refresh_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Nightly retraining through the promotion gate.",
)
