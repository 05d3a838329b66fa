"""The dbt project as Dagster assets: sources upstream, staging -> intermediate -> marts, tests as checks."""

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, Config
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from teamu_assets.resources import TeamuDatabase
from teamu_assets.settings import DBT_PROJECT_DIR

DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` the manifest is re-parsed on every load; elsewhere (tests, the demo, a fresh clone) it is
# parsed once when missing. Parsing needs no database.
dbt_project.prepare_if_dev()
if not dbt_project.manifest_path.exists():
    subprocess.run(
        [
            DBT_EXECUTABLE,
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        check=True,
    )


class TeamuDbtTranslator(DagsterDbtTranslator):
    """Models are keyed by schema and name (marts/user_features); sources by source and table (supabase/users)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            return f"raw_{dbt_resource_props['source_name']}"
        return dbt_resource_props["schema"]


class DbtBuildConfig(Config):
    full_refresh: bool = False
    """Rebuild incremental models from scratch: after raw rows were deleted or rewritten (e.g. a reseed)."""


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, dagster_dbt_translator=TeamuDbtTranslator())
def teamu_dbt_models(
    context: AssetExecutionContext, config: DbtBuildConfig, dbt: DbtCliResource, database: TeamuDatabase
) -> Iterator[Any]:
    """`dbt build` of the selected models: runs them and their tests, incrementally where the model says so."""
    # DbtCliResource hands os.environ to the dbt process; profiles.yml reads the connection from it.
    os.environ.update(database.dbt_env())
    args = ["build", "--full-refresh"] if config.full_refresh else ["build"]
    yield from dbt.cli(args, context=context).stream().fetch_row_counts()
