"""`make demo`: the whole platform on the embedded default, from an empty machine to recommendations."""

from __future__ import annotations

import os
import time
from typing import Any

from teamu_assets.settings import Settings


def seed(
    settings: Settings,
    url: str,
    *,
    users: int,
    posts: int,
    days: int,
    seed: int,
    bad_fraction: float,
    **world: float,
) -> str:
    """Generate synthetic Teamu data into raw_supabase and the landing folder; return a one-line summary. `world`
    holds other SyntheticConfig fields (popularity_tail, prolific_authors, active_days, ...)."""
    from teamu_assets.synthetic import SyntheticConfig, generate, save_truth, write_mixpanel_files, write_supabase

    config = SyntheticConfig(users=users, posts=posts, days=days, seed=seed, bad_fraction=bad_fraction, **world)
    dataset = generate(config)
    counts = write_supabase(url, dataset)
    files = write_mixpanel_files(dataset, settings.mixpanel_landing_dir, bad_fraction=bad_fraction, seed=seed)
    save_truth(dataset.truth, settings.home / "synthetic" / "ground_truth.npz")
    tables = ", ".join(f"{table} {rows}" for table, rows in counts.items())
    return f"raw_supabase: {tables}; Mixpanel export: {files.lines} lines in {len(files.files)} files"


def sample_users(url: str) -> list[tuple[int, str]]:
    """A few users to show: the most active ones and a cold-start user (profile only, no interactions)."""
    from teamu_assets.db.connection import connect

    with connect(url) as conn:
        active = conn.execute(
            "select user_id from marts.user_features order by viewed_count desc, user_id limit 2"
        ).fetchall()
        cold = conn.execute(
            "select user_id from marts.user_features where viewed_count + upvoted_count + commented_count = 0 "
            "order by user_id limit 1"
        ).fetchall()
    return [(row[0], "active user") for row in active] + [(row[0], "cold-start user") for row in cold]


def summary(url: str) -> str:
    from teamu_assets.db.registry import latest_evaluation
    from teamu_assets.evaluation.summary import format_summary

    record = latest_evaluation(url)
    if record is None:
        return "no evaluation yet: materialize evaluation_report (make demo does)"
    return format_summary(
        record.model_version,
        record.evaluated_at,
        record.metrics,
        record.baselines,
        record.segments,
        record.promoted,
        record.report_path,
        record.gate,
    )


def gate_refusal(result: Any) -> str | None:
    """The promotion gate's reason when it alone stopped the run (its blocking check failed), else None."""
    failures = [event for event in result.all_events if event.is_step_failure]
    if any(event.event_specific_data.error.cls_name != "DagsterAssetCheckFailedError" for event in failures):
        return None
    # Only failed blocking checks fail steps (and runs); a non-blocking one is a warning in the UI.
    blocking_failures = [check for check in result.get_asset_check_evaluations() if not check.passed and check.blocking]
    if [check.asset_check_key.name for check in blocking_failures] != ["promotion_gate"]:
        return None
    return blocking_failures[0].description or "the promotion gate refused the model"


def serving_now(url: str) -> str:
    from teamu_assets.db.registry import promoted_model

    promoted = promoted_model(url)
    return "the popularity fallback (no model is promoted)" if promoted is None else promoted.model_version


def run_demo(settings: Settings, *, users: int, posts: int, days: int, seed_value: int) -> int:
    from teamu_assets.db.bootstrap import bootstrap
    from teamu_assets.db.recommend import recommend

    started = time.monotonic()
    ready = bootstrap(settings)
    print(f"1/4 database ready: pgvector {ready.pgvector_version}")
    print(
        "2/4 " + seed(settings, ready.app_url, users=users, posts=posts, days=days, seed=seed_value, bad_fraction=0.01)
    )

    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    from dagster import DagsterInstance

    from teamu_assets.definitions import defs

    print("3/4 materializing every asset (ingest, dbt, dataset, training, evaluation, embeddings)...")
    with DagsterInstance.get() as instance:
        # The seed rewrote the raw tables, so the incremental dbt models are rebuilt from scratch.
        # raise_on_error=False: a refused model fails the gate's blocking check, which is an outcome to report,
        # not a traceback.
        result = defs.get_job_def("full_refresh").execute_in_process(
            instance=instance,
            run_config={"ops": {"teamu_dbt_models": {"config": {"full_refresh": True}}}},
            raise_on_error=False,
        )
    refusal = None if result.success else gate_refusal(result)
    if result.success:
        print(f"    run {result.run_id} succeeded")
    elif refusal is None:
        print(f"the full_refresh run {result.run_id} failed; see the run in the Dagster UI (`make ui`)")
        return 1
    else:
        print(f"    run {result.run_id}: the model was not promoted: {refusal}")
        print(f"    serving keeps {serving_now(ready.app_url)}")

    print("4/4 results\n")
    print(summary(ready.app_url))
    for user_id, label in sample_users(ready.app_url):
        print(f"\nTop 5 for user {user_id} ({label}):")
        for rank, row in enumerate(recommend(ready.app_url, user_id, 5), start=1):
            print(f"  {rank}. {row.score:6.3f}  {row.title}")
    print(f"\nDone in {time.monotonic() - started:.0f} s. Explore it: `make ui`, then http://127.0.0.1:3000")
    if refusal is not None:
        print(f"Not promoted: {refusal}; serving keeps {serving_now(ready.app_url)}")
        return 1
    return 0
