"""Schedules: the daily post-freshness rewrite (on) and the nightly retraining through the gate (off)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from teamu_assets.jobs import full_refresh_job, post_freshness_job

daily_post_freshness_schedule = ScheduleDefinition(
    job=post_freshness_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily rewrite of the post embeddings: post ages move on even when nothing else changes.",
)

nightly_retrain_schedule = ScheduleDefinition(
    job=full_refresh_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Nightly retraining through the promotion gate.",
)
