"""Screenshots of the Dagster catalog for the docs: a dbt mart's page (column types) and lineage, the
evaluation's checks with the promotion gate passed, and the gate failed on a worse model.

    .venv/bin/python scripts/screenshot_catalog.py

Everything happens in scratch places, dropped afterwards: a database of its own on the project's server (the
embedded one must be running: `teamu db start`), a TEAMU_HOME and a DAGSTER_HOME (SQLite) in a temporary folder.
It seeds small synthetic data, materializes the whole graph with a small model (promoted), starts
`dagster-webserver` on that instance and takes the first two screenshots; then a model that barely trained, against
a gate with no tolerance, fails the gate (as tests/e2e/test_full_graph.py does it) for the third. Needs a headless
Chromium on PATH (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from screenshot_asset_graph import dismiss_community_dialog, project_webserver, screenshot

from teamu_assets.db.connection import resolve_url, scratch_database
from teamu_assets.settings import PROJECT_ROOT, Settings

DOCS = PROJECT_ROOT / "docs"
# As tests/e2e/test_full_graph.py: a model small enough to train in a minute, and one that barely trains.
SMALL_MODEL = {"epochs": 4, "embedding_dim": 32, "batch_size": 256, "patience": 2}
WORSE_MODEL = {**SMALL_MODEL, "epochs": 1, "learning_rate": 1e-7}
PAGES = {
    # The mart's page: its columns with their types (from the dbt contract and the database) and descriptions.
    "asset-columns.png": "/assets/marts/user_features",
    # Its lineage, asset by asset. The column lineage each build records (dagster/column_lineage metadata) is
    # drawn by Dagster+ only: the open-source UI doesn't show it.
    "asset-lineage.png": "/assets/marts/user_features?view=lineage",
    # The checks of the evaluation: the promotion gate, passed.
    "checks-promotion-gate.png": "/assets/evaluation_report?view=checks",
}
FAILED_GATE_PAGE = ("promotion-gate-failed.png", "/assets/evaluation_report?view=checks&checkDetail=promotion_gate")


def _seed(url: str, home: Path) -> None:
    from teamu_assets.db import bootstrap
    from teamu_assets.settings import default_landing_dir
    from teamu_assets.synthetic import SyntheticConfig, generate, save_truth, write_mixpanel_files, write_supabase

    bootstrap.prepare_app_database(url)
    dataset = generate(SyntheticConfig(users=300, posts=200, days=30, seed=11, bad_fraction=0.02))
    write_supabase(url, dataset)
    write_mixpanel_files(dataset, default_landing_dir(home), bad_fraction=0.02, seed=11)
    save_truth(dataset.truth, home / "synthetic" / "ground_truth.npz")


def _materialize(url: str, home: Path, model: dict[str, Any], tolerance: float) -> bool:
    """What the full_refresh job materializes, on the instance under DAGSTER_HOME; whether the run succeeded."""
    from dagster import DagsterInstance, materialize

    from teamu_assets import definitions
    from teamu_assets.jobs import full_refresh_job

    result = materialize(
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        instance=DagsterInstance.get(),
        resources=definitions.build_resources(home, url),
        selection=full_refresh_job.selection,
        run_config={
            "ops": {
                "two_tower_model": {"config": model},
                "evaluation_report": {"config": {"tolerance": tolerance}},
            }
        },
        raise_on_error=False,
    )
    return result.success


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=DOCS, help="folder for the PNGs")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    server = resolve_url(settings.database_url, settings.pgdata)
    with tempfile.TemporaryDirectory(prefix="teamu-screens-") as scratch, scratch_database(server, "screens") as url:
        home, dagster_home = Path(scratch, "home"), Path(scratch, "dagster")
        dagster_home.mkdir(parents=True)
        # The code location the webserver loads reads these, as does this process's instance.
        os.environ.update({"TEAMU_HOME": str(home), "TEAMU_DATABASE_URL": url, "DAGSTER_HOME": str(dagster_home)})
        _seed(url, home)
        if not _materialize(url, home, SMALL_MODEL, tolerance=0.02):
            raise RuntimeError("the full graph with the small model failed: see the run in the scratch instance")
        with project_webserver(dagster_home) as base_url:
            dismiss_community_dialog(base_url)
            for name, page in PAGES.items():
                print(screenshot(f"{base_url}{page}", args.output_dir / name))
            if _materialize(url, home, WORSE_MODEL, tolerance=0.0):
                raise RuntimeError("the gate passed a model that barely trained")
            name, page = FAILED_GATE_PAGE
            print(screenshot(f"{base_url}{page}", args.output_dir / name))


if __name__ == "__main__":
    main()
