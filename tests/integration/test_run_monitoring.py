"""Run monitoring: a run whose worker process died is marked failed by the daemon's monitoring and no longer
holds a place in the run queue; a run whose worker lives is left alone. Drives Dagster's own monitoring code
(the daemon's monitor_started_run) on an instance configured by the dagster.yaml `teamu db start` writes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import EngineEventData
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, DagsterRun
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from teamu_assets.db.connection import database_of
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.jobs import WRITES_MARTS_AND_EMBEDDINGS
from teamu_assets.run_launcher import LocalRunLauncher

pytestmark = pytest.mark.integration


@pytest.fixture
def instance(db_url: str, tmp_path: Path) -> Iterator[DagsterInstance]:
    write_dagster_yaml(tmp_path, db_url, database=database_of(db_url))
    with DagsterInstance.from_config(str(tmp_path)) as real_instance:
        yield real_instance


LAUNCHED = "Started process for run (pid: {pid})."  # what a launched run's worker reports first
IN_CALLER = "Executing steps in process (pid: {pid})"  # execute_in_process (`teamu demo`): the caller's process


def started_run(instance: DagsterInstance, worker_pid: int | None, message: str = LAUNCHED) -> DagsterRun:
    """An incremental_refresh run in STARTED whose worker reported `worker_pid` as Dagster reports it (None: no
    pid reported yet)."""
    run = create_run_for_test(
        instance, job_name="incremental_refresh", status=DagsterRunStatus.STARTED, tags=WRITES_MARTS_AND_EMBEDDINGS
    )
    if worker_pid is not None:
        instance.report_engine_event(message.format(pid=worker_pid), run, EngineEventData.in_process(worker_pid))
    return run


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def monitor(instance: DagsterInstance, run: DagsterRun) -> DagsterRunStatus:
    """One pass of the daemon's run monitoring over the run; its status afterwards."""
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    # The workspace is only used to resume a run, which max_resume_run_attempts 0 never does.
    monitor_started_run(instance, None, record, logging.getLogger("run_monitoring"))  # type: ignore[arg-type]
    status = instance.get_run_by_id(run.run_id)
    assert status is not None
    return status.status


def in_progress(instance: DagsterInstance) -> set[str]:
    """The runs the queued run coordinator counts against its limits."""
    records = instance.get_run_records(RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)))
    return {record.dagster_run.run_id for record in records}


def test_the_instance_monitors_runs_with_a_launcher_that_checks_workers(instance: DagsterInstance) -> None:
    assert instance.run_monitoring_enabled
    assert isinstance(instance.run_launcher, LocalRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health
    # Never resumed: DefaultRunLauncher can't resume a run, and the daemon would fail trying.
    assert instance.run_monitoring_max_resume_run_attempts == 0


def test_a_run_whose_worker_died_is_failed_and_leaves_the_queue(instance: DagsterInstance) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = started_run(instance, worker.pid)
    assert monitor(instance, run) == DagsterRunStatus.STARTED  # alive: left alone
    worker.kill()
    worker.wait()
    assert run.run_id in in_progress(instance)
    assert monitor(instance, run) == DagsterRunStatus.FAILURE
    assert run.run_id not in in_progress(instance)
    messages = [record.dagster_event.message for record in instance.all_logs(run.run_id) if record.dagster_event]
    assert any(f"pid {worker.pid} is gone" in (message or "") for message in messages)


def test_a_live_worker_keeps_its_run(instance: DagsterInstance) -> None:
    run = started_run(instance, os.getpid())
    assert monitor(instance, run) == DagsterRunStatus.STARTED
    assert run.run_id in in_progress(instance)


def test_a_run_executing_in_its_callers_process_is_judged_by_that_process(instance: DagsterInstance) -> None:
    assert monitor(instance, started_run(instance, os.getpid(), IN_CALLER)) == DagsterRunStatus.STARTED
    assert monitor(instance, started_run(instance, dead_pid(), IN_CALLER)) == DagsterRunStatus.FAILURE


def test_a_run_without_a_worker_pid_yet_is_not_failed(instance: DagsterInstance) -> None:
    run = started_run(instance, None)
    assert monitor(instance, run) == DagsterRunStatus.STARTED


def test_a_finished_step_subprocess_is_not_the_worker(instance: DagsterInstance) -> None:
    run = started_run(instance, os.getpid())
    step = dead_pid()
    instance.report_engine_event(f"Executing step a in subprocess (pid: {step})", run, EngineEventData.in_process(step))
    assert monitor(instance, run) == DagsterRunStatus.STARTED
