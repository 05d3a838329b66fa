"""Sensors: new interactions refresh embeddings within seconds; enough of them retrain through the promotion gate."""

import hashlib
import json
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from teamu_assets.db.watermarks import Watermarks, current_watermarks, interactions_since_last_training
from teamu_assets.jobs import full_refresh_job, incremental_refresh_job
from teamu_assets.resources import MixpanelExport, TeamuDatabase
from teamu_assets.settings import Settings

RUNS_REQUESTED = "runs_requested"
RETRAIN_MIN_INTERACTIONS = Settings.from_env().retrain_min_interactions


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
