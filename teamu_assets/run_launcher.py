"""The run launcher: Dagster's default one, plus a health check of each run's worker process for run monitoring.

Dagster's DefaultRunLauncher can't tell the daemon whether a run's worker is alive, so with it run monitoring
never fails a run whose worker died together with the code server (a killed `dagster dev`, an OOM kill of the
container's processes, a reboot): the run stays STARTED forever and holds its place in the run queue (the
refresh jobs' tag limit of 1), and the sensor's incremental_refresh runs wait QUEUED behind it. Here every
process of the platform runs on one machine (`make ui`, the Docker image), so the pid of the process executing a
run, which Dagster records in the run's engine events (WORKER_EVENTS), tells whether it is still alive.
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterInstance, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

# A process whose start is later than the worker's event by more than this is another process under a reused pid.
PID_REUSE_SLACK_SECONDS = 1.0
# The engine events that name the process executing a run, with its pid: the run worker a launcher started (the
# webserver, the sensor, the schedule), or the process that executes a run itself (`teamu demo`'s
# execute_in_process, `dagster job execute`) as its executor reports it. Step subprocesses of the multiprocess
# executor report pids too, and end normally: they are not the run's worker.
WORKER_EVENTS = (
    "Started process for run",
    "Executing steps in process",
    "Executing steps using multiprocess executor: parent process",
)


def worker_process(instance: DagsterInstance, run: DagsterRun) -> tuple[int, float] | None:
    """The pid of the process executing the run and when it was reported, from the run's first WORKER_EVENTS
    event; None before any was written."""
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event is None or not (event.message or "").startswith(WORKER_EVENTS):
            continue
        data = event.engine_event_data
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None:
            return int(pid.value), record.timestamp
    return None


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring checks by pid (the daemon runs on the workers' machine)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = worker_process(self._instance, run)
        if worker is None:
            # Not judged: run monitoring fails a run on any status but RUNNING or SUCCESS, and a launched run's
            # worker writes its pid before the run is STARTED; a run executing in its caller's process writes it
            # as its steps begin.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded yet")
        pid, reported_at = worker
        try:
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE
            reused = process.create_time() > reported_at + PID_REUSE_SLACK_SECONDS
        except psutil.NoSuchProcess:
            alive, reused = False, False
        if alive and not reused:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} is gone (killed or crashed)")
