"""`make demo`: the whole platform on the embedded default, from an empty machine to recommendations.

The console gets the four steps, one line per finished step of the Dagster run, the evaluation and sample
recommendations. Everything else the run writes (Dagster's log at INFO, dbt's output, TensorFlow's and ScaNN's
native logs) goes to TEAMU_HOME/logs/demo.log.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from teamu_assets.settings import Settings

if TYPE_CHECKING:
    from dagster import (
        AssetCheckEvaluation,
        DagsterEvent,
        DagsterInstance,
        EventLogEntry,
        ExecuteInProcessResult,
        JobDefinition,
    )

# Read by TensorFlow and dbt when they start, in this process or a subprocess: set before either is imported.
QUIET_ENVIRONMENT = {
    # 3 hides TensorFlow's C++ errors too: without a usable GPU it logs "failed call to cuInit" as one, then runs on
    # the CPU. Errors that stop the training raise in Python all the same.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # dbt's output goes to the log file: no colour codes in it.
    "DBT_USE_COLORS": "false",
}
# tf.keras warns at every save that the towers' constructor arguments can't go into a Keras config. The towers are
# saved with tf.saved_model.save and loaded with tf.saved_model.load (teamu_assets/model/train.py), which need none.
KERAS_CONFIG_WARNING = "Model's `__init__()` arguments contain non-serializable objects."
# Where a finished step's duration starts on the console.
STEP_COLUMN = 64


class _DropMessages(logging.Filter):
    """Drops the log records whose message starts with one of `prefixes`: known warnings nobody can act on."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_libraries() -> None:
    """The environment and log filters above, for this process and the ones it starts; before TF is imported."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    tensorflow_logger = logging.getLogger("tensorflow")  # the logger TensorFlow's Python side writes to
    if not any(isinstance(existing, _DropMessages) for existing in tensorflow_logger.filters):
        tensorflow_logger.addFilter(_DropMessages(KERAS_CONFIG_WARNING))


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


def summary(url: str, *, brief: bool = False) -> str:
    """The latest evaluation's summary. brief: without the paired differences and the per-segment recall (what
    the demo leaves to `teamu report`)."""
    from teamu_assets.db.registry import latest_evaluation
    from teamu_assets.evaluation.summary import format_summary

    record = latest_evaluation(url)
    if record is None:
        return "no evaluation yet: materialize evaluation_report (make demo does)"
    # format_summary prints a paired-difference line for each `vs_<baseline>` entry of the metrics.
    metrics = {k: v for k, v in record.metrics.items() if not k.startswith("vs_")} if brief else record.metrics
    return format_summary(
        record.model_version,
        record.evaluated_at,
        metrics,
        record.baselines,
        {} if brief else record.segments,
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


def _outcome(check: AssetCheckEvaluation) -> str:
    if check.passed:
        return "passed"
    return "warned" if check.severity.value == "WARN" else "failed"


class RunProgress:
    """One console line per finished step of a run, from the run's Dagster events: what the step materialized
    and checked, and how long it took."""

    def __init__(self) -> None:
        self._assets: dict[str, list[str]] = defaultdict(list)
        self._checks: dict[str, list[AssetCheckEvaluation]] = defaultdict(list)

    def line(self, event: DagsterEvent) -> str | None:
        """The line for a step's end (success, failure, skip); None for other events, which it remembers."""
        step = event.step_key
        if step is None:
            return None
        if event.is_step_materialization:
            self._assets[step].append(event.asset_key.to_user_string())
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            self._checks[step].append(event.asset_check_evaluation_data)
        elif event.is_step_success:
            return f"    {self._what(step):<{STEP_COLUMN}} {event.step_success_data.duration_ms / 1000:6.1f} s"
        elif event.is_step_failure:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
                return f"    {self._what(step)}: blocking, so the run stops here"
            reason = error.message.strip().splitlines()[0] if error is not None else "no error recorded"
            return f"    {self._what(step)}: FAILED: {reason}"
        elif event.is_step_skipped:
            return f"    {step}: skipped"
        return None

    def _what(self, step: str) -> str:
        assets = self._assets.pop(step, [])
        checks = self._checks.pop(step, [])
        parts = []
        if len(assets) == 1:
            parts.append(assets[0])
        elif assets:
            parts.append(f"{step}: {len(assets)} assets")
        if len(checks) == 1:
            parts.append(f"check {checks[0].check_name} {_outcome(checks[0])}")
        elif checks:
            outcomes = Counter(_outcome(check) for check in checks)
            parts.append(f"{len(checks)} checks: " + ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items()))
        return "; ".join(parts) or step


@contextmanager
def _output_to(log_path: Path) -> Iterator[TextIO]:
    """For the block, send what this process and its children write to stdout and stderr, from Python or native
    code, to log_path; yield a stream on the console as it was."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    with open(os.dup(1), "w", buffering=1) as console, open(log_path, "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python streams that don't write to fds 1 and 2 (pytest's captured ones) are replaced too. These stay on
        # fds 1 and 2, never closing them: a logging handler made during the block writes to the console after it.
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - outlives the block on purpose
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)


def full_refresh_run_config(ops: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The demo's run config of the full_refresh job, with `ops` (op name -> its config) added."""
    return {
        # The seed rewrote the raw tables, so the incremental dbt models are rebuilt from scratch.
        "ops": {"teamu_dbt_models": {"config": {"full_refresh": True}}, **(ops or {})},
        # Dagster's console logger writes into the log file: INFO, not its default DEBUG (every event).
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }


def materialize_with_progress(
    job: JobDefinition, instance: DagsterInstance, run_config: Mapping[str, Any], log_path: Path
) -> ExecuteInProcessResult:
    """Run `job` in this process, printing one line per finished step; everything else the run writes goes to
    log_path. raise_on_error=False: a refused model fails the gate's blocking check, which is an outcome to
    report, not a traceback."""
    run_id = str(uuid.uuid4())
    progress = RunProgress()
    with _output_to(log_path) as console:

        def show(entry: EventLogEntry) -> None:
            line = progress.line(entry.dagster_event) if entry.dagster_event is not None else None
            if line is not None:
                print(line, file=console)

        instance.add_event_listener(run_id, show)
        return job.execute_in_process(run_config=run_config, instance=instance, run_id=run_id, raise_on_error=False)


def _teamu_command() -> str:
    """How to call `teamu` from here: the virtualenv's, relative to the current folder when it is inside it."""
    teamu = Path(sys.executable).parent / "teamu"
    return str(teamu.relative_to(Path.cwd())) if teamu.is_relative_to(Path.cwd()) else str(teamu)


def report(url: str, result: ExecuteInProcessResult, log_path: Path, started: float) -> int:
    """Step 3's outcome and 4: the evaluation, sample recommendations, where to look next. The exit code."""
    from teamu_assets.db.recommend import recommend

    refusal = None if result.success else gate_refusal(result)
    if result.success:
        print(f"    run {result.run_id} succeeded")
    elif refusal is None:
        print(f"the full_refresh run {result.run_id} failed: see {log_path}, or the run in the UI (`make ui`)")
        return 1
    else:
        print(f"    the model was not promoted: {refusal}")
        print(f"    serving keeps {serving_now(url)}")

    print("4/4 results\n")
    print(summary(url, brief=True))
    samples = sample_users(url)
    print()
    for user_id, label in samples:
        rows = recommend(url, user_id, 3)
        source = rows[0].source if rows else "nothing to recommend"
        print(f"Top 3 for user {user_id} ({label}), from the {source}:")
        for rank, row in enumerate(rows, start=1):
            print(f"  {rank}. {row.score:8.3f}  {row.title}")
    teamu = _teamu_command()
    recommend_example = f"{teamu} recommend --user {samples[0][0] if samples else 1}"
    width = len(recommend_example) + 2
    print(f"\nDone in {time.monotonic() - started:.0f} s. Next:")
    print(f"  {'make ui':<{width}}the run, the asset graph, checks and plots at http://127.0.0.1:3000")
    print(f"  {teamu + ' report':<{width}}the whole evaluation, with paired intervals and per-segment recall")
    print(f"  {recommend_example:<{width}}anyone's recommendations; scores: docs/DATA_CONTRACT.md")
    if refusal is not None:
        print(f"Not promoted: {refusal}; serving keeps {serving_now(url)}")
        return 1
    return 0


def run_demo(settings: Settings, *, users: int, posts: int, days: int, seed_value: int) -> int:
    from teamu_assets.db.bootstrap import bootstrap

    quiet_libraries()
    started = time.monotonic()
    ready = bootstrap(settings)
    print(f"1/4 database ready: pgvector {ready.pgvector_version}")
    print(
        "2/4 " + seed(settings, ready.app_url, users=users, posts=posts, days=days, seed=seed_value, bad_fraction=0.01)
    )

    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    from dagster import DagsterInstance

    from teamu_assets.definitions import defs

    log_path = settings.home / "logs" / "demo.log"
    print("3/4 materializing every asset (ingest, dbt, dataset, training, evaluation, embeddings): a few minutes")
    print(f"    Dagster's log, with dbt's and TensorFlow's output: {log_path}")
    with DagsterInstance.get() as instance:
        result = materialize_with_progress(
            defs.resolve_job_def("full_refresh"), instance, full_refresh_run_config(), log_path
        )
    return report(ready.app_url, result, log_path, started)
