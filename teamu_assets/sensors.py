"""Sensors: new interactions refresh embeddings within seconds; enough of them retrain through the promotion gate;
the online updater's progress shows on ml/user_embeddings."""

import hashlib
import json
import time
from pathlib import Path

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
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
ATTEMPTS = "attempts"
RETRAIN_MIN_INTERACTIONS = Settings.from_env().retrain_min_interactions
# A refresh whose run failed is requested again on a later tick, up to this many runs for the same work; then the
# sensor says so and waits (for new interactions, or for someone to fix the cause and materialize by hand).
MAX_ATTEMPTS = 3
# The tag Dagster gives a run a sensor requested with a run key.
RUN_KEY_TAG = "dagster/run_key"


def _attempt_after(instance: DagsterInstance, run_key: str, attempt: int) -> int | None:
    """The attempt to request next for the work that run_key (its attempt-th run) was requested for: the same
    while that run hasn't failed (queued, running, done, or canceled by someone), the next once it failed, None
    when MAX_ATTEMPTS runs failed."""
    runs = instance.get_runs(filters=RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    if not runs or runs[0].status != DagsterRunStatus.FAILURE:
        return attempt
    return attempt + 1 if attempt < MAX_ATTEMPTS else None


def _interactions_run_key(runs_requested: int, watermarks: Watermarks) -> str:
    state = json.dumps(watermarks.as_dict(), sort_keys=True)
    return f"interactions-{runs_requested}-{hashlib.sha256(state.encode()).hexdigest()[:12]}"


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
    after the raw tables were rewritten (a reseed) still get a run of their own. When the run for the
    watermarks failed, a later tick requests another (a new count), up to MAX_ATTEMPTS runs: the changes are
    in the raw tables still, and would otherwise wait for the next interaction."""
    now = current_watermarks(database.url(), Path(mixpanel.landing_dir))
    if context.cursor is None:
        # First tick: everything present so far is what the full refresh covers; watch from here.
        return SensorResult(cursor=json.dumps({**now.as_dict(), RUNS_REQUESTED: 0}), skip_reason="started watching")
    stored = json.loads(context.cursor)
    runs_requested = int(stored.pop(RUNS_REQUESTED, 0))
    attempts = int(stored.pop(ATTEMPTS, 1))
    last = Watermarks.from_dict(stored)
    if now.moved_from(last):
        attempts = 1
    elif not runs_requested:
        return SkipReason("no new interactions")
    else:
        retry = _attempt_after(context.instance, _interactions_run_key(runs_requested, last), attempts)
        if retry is None:
            return SkipReason(f"the last {attempts} runs for these changes failed: the next change requests another")
        if retry == attempts:  # the last run has not failed
            return SkipReason("no new interactions")
        attempts = retry
    runs_requested += 1
    return SensorResult(
        run_requests=[RunRequest(run_key=_interactions_run_key(runs_requested, now))],
        cursor=json.dumps({**now.as_dict(), RUNS_REQUESTED: runs_requested, ATTEMPTS: attempts}, sort_keys=True),
    )


@sensor(
    job=full_refresh_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description=f"Retrain once {RETRAIN_MIN_INTERACTIONS} new interactions reached the marts since the last model.",
)
def retrain_on_new_interactions_sensor(
    context: SensorEvaluationContext, database: TeamuDatabase
) -> SensorResult | SkipReason:
    """One retraining per registered model: the run key changes once the retrained model is registered. A run
    that failed before registering one (a dbt test, a lock timeout, memory) is requested again on a later tick,
    up to MAX_ATTEMPTS runs; the cursor holds the model retrained after and the attempt."""
    new, last_version = interactions_since_last_training(database.url())
    if new < RETRAIN_MIN_INTERACTIONS:
        return SkipReason(f"{new} new interactions since {last_version or 'the start'} (< {RETRAIN_MIN_INTERACTIONS})")
    after = last_version or "nothing"
    stored = json.loads(context.cursor) if context.cursor else {}
    attempt = int(stored.get(ATTEMPTS, 1)) if stored.get("after") == after else 1
    retry = _attempt_after(context.instance, _retrain_run_key(after, attempt), attempt)
    if retry is None:
        return SkipReason(
            f"the last {attempt} retraining runs after {after} failed: fix the cause, then run full_refresh"
        )
    attempt = retry
    return SensorResult(
        run_requests=[RunRequest(run_key=_retrain_run_key(after, attempt))],
        cursor=json.dumps({"after": after, ATTEMPTS: attempt}),
    )


def _retrain_run_key(after: str, attempt: int) -> str:
    return f"retrain-after-{after}" if attempt == 1 else f"retrain-after-{after}-attempt-{attempt}"


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="The online updater's (teamu realtime) progress, as observations of ml/user_embeddings.",
)
def online_updater_sensor(context: SensorEvaluationContext, database: TeamuDatabase) -> SensorResult | SkipReason:
    """The updater runs outside Dagster (a long-lived process, teamu_assets/realtime); this puts what it applied
    since the last tick, its throughput, lag and queue beside the batch path's materializations in the UI.
    Cursor: the applied count and the time of the last observation."""
    from teamu_assets.realtime.updater import progress

    now = progress(database.url())
    if now is None:
        return SkipReason("the online updater (teamu realtime) is not installed")
    last = json.loads(context.cursor) if context.cursor else {"applied_rows": 0, "at": None}
    if now.applied_rows < last["applied_rows"]:
        # The updater was installed again (`teamu realtime --uninstall`, then a start): it counts from 0.
        last = {"applied_rows": 0, "at": None}
    if now.applied_rows == last["applied_rows"]:
        return SkipReason(f"nothing applied since the last observation; {now.queued} rows queued")
    observed_at = time.time()
    applied = now.applied_rows - last["applied_rows"]
    metadata: dict[str, float | int | str] = {
        "online_applied_rows": applied,
        "online_applied_rows_total": now.applied_rows,
        "online_embedded_users_total": now.embedded_users,
        "online_queued": now.queued,
        "online_last_lag_seconds": now.last_lag_seconds or 0.0,
        "online_last_applied_at": now.last_applied_at.isoformat() if now.last_applied_at else "",
    }
    if last["at"] is not None:
        metadata["online_rows_per_second"] = applied / max(observed_at - last["at"], 1e-9)
    return SensorResult(
        asset_events=[AssetObservation(asset_key=AssetKey(["ml", "user_embeddings"]), metadata=metadata)],
        cursor=json.dumps({"applied_rows": now.applied_rows, "at": observed_at}),
    )
