"""`make demo`'s console output, from a real run of the full_refresh job on a small world: the steps, one line per
finished step, the evaluation, sample recommendations, where to look next; the run's own logging goes to the log
file."""

import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions

from teamu_assets import definitions, demo
from teamu_assets.db import bootstrap
from teamu_assets.resources import MixpanelExport
from teamu_assets.sensors import full_refresh_job
from teamu_assets.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Small and quick: the output is under test, not the model (the gate may refuse it; the demo reports both).
SMALL_MODEL = {"epochs": 1, "embedding_dim": 8, "batch_size": 512}
# The steps of the full_refresh job up to the gate (the embedding steps run only for a promoted model).
STEPS = (
    "mixpanel/events",
    "teamu_dbt_models: ",
    "training_dataset",
    "two_tower_model",
    "evaluation_report",
    "check promotion_gate",
)


def test_the_demo_prints_a_few_dozen_lines_and_logs_the_rest(
    module_db_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env({"TEAMU_HOME": str(tmp_path), "TEAMU_DATABASE_URL": module_db_url})
    bootstrap.prepare_app_database(module_db_url)
    demo.quiet_libraries()
    started = time.monotonic()
    print("2/4 " + demo.seed(settings, module_db_url, users=300, posts=200, days=30, seed=11, bad_fraction=0.02))
    resources = definitions.build_resources(
        tmp_path, module_db_url, MixpanelExport(landing_dir=str(settings.mixpanel_landing_dir))
    )
    job = Definitions(
        assets=definitions.defs.assets,
        asset_checks=definitions.defs.asset_checks,
        jobs=[full_refresh_job],
        resources=resources,
    ).resolve_job_def(full_refresh_job.name)
    log_path = tmp_path / "logs" / "demo.log"
    with DagsterInstance.ephemeral() as instance:
        result = demo.materialize_with_progress(
            job,
            instance,
            demo.full_refresh_run_config({"two_tower_model": {"config": SMALL_MODEL}}),
            log_path,
        )
    assert result.success or demo.gate_refusal(result) is not None, "promoted, or refused by the gate"
    demo.report(module_db_url, result, log_path, started)

    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert err == "", "nothing on stderr: warnings and logs go to the log file"
    assert len(lines) + 1 < 60, "with step 1's line (the database), not run here:\n" + out
    for step in STEPS:
        assert any(line.startswith(f"    {step}") for line in lines), f"no line for {step}:\n{out}"
    assert "recall@20" in out and "Top 3 for user" in out and "Done in" in out

    log = log_path.read_text()
    assert " - dagster - INFO - full_refresh - " in log, "Dagster's log at INFO"
    assert " - DEBUG - " not in log and "Running with dbt=" in log
