"""The dbt project as Dagster assets: sources upstream, staging -> intermediate -> marts, tests as checks."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, Config, Output
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dbt import version as dbt_core_version
from packaging import version

from teamu_assets.contract import DBT_VARS
from teamu_assets.db import features
from teamu_assets.resources import TeamuDatabase
from teamu_assets.settings import DBT_PROJECT_DIR

DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")
PARTIAL_PARSE_FILE = "partial_parse.msgpack"
DATABASE_KEY = ("TEAMU_DBT_HOST", "TEAMU_DBT_PORT", "TEAMU_DBT_DBNAME")

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


class TeamuDbtCliResource(DbtCliResource):
    """DbtCliResource without two start-up costs that dagster-dbt 0.29 pays in this process on every `dbt.cli`
    call, ~3-6 s on two cores, which the sensor-driven refresh cannot afford on every run:
    - `dbt --version` in a subprocess, to learn the executable's version: the executable is this virtualenv's
      dbt-core, whose version is importable;
    - a dbt adapter built here (parsing all of dbt's macros) only to count the built models' rows: the asset
      counts them through TeamuDatabase instead (_with_row_counts).
    Both override private members of the pinned dagster-dbt; tests/e2e/test_full_graph.py runs the assets with
    this resource and checks the tables' materializations carry their row counts."""

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(dbt_core_version.__version__)

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:  # type: ignore[override]
        return None


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, dagster_dbt_translator=TeamuDbtTranslator())
def teamu_dbt_models(
    context: AssetExecutionContext, config: DbtBuildConfig, dbt: DbtCliResource, database: TeamuDatabase
) -> Iterator[Any]:
    """`dbt build` of the selected models: runs them and their tests, incrementally where the model says so."""
    # DbtCliResource hands os.environ to the dbt process; profiles.yml reads the connection from it. Each
    # database gets its own target folder: dbt's partial-parse state holds for one connection profile only.
    connection = database.dbt_env()
    os.environ.update(connection)
    os.environ["DBT_TARGET_PATH"] = str(
        Path(dbt_project.target_path, "by_database", "-".join(connection[k] for k in DATABASE_KEY))
    )
    # The contract's values (history length, event names) come from teamu_assets/contract.py, not from
    # dbt_project.yml's defaults, so the marts and the model can't disagree.
    args = ["build", "--vars", json.dumps(DBT_VARS), *(["--full-refresh"] if config.full_refresh else [])]
    invocation = dbt.cli(args, context=context)
    yield from _with_row_counts(context, invocation.stream(), database.url())
    _keep_partial_parse_state(invocation.target_path)


def _with_row_counts(context: AssetExecutionContext, events: Iterable[Any], url: str) -> Iterator[Any]:
    """Each built table's materialization with its row count (dagster/row_count, shown in the UI); views are
    not counted, as counting one runs its whole query."""
    for event in events:
        if isinstance(event, Output):
            key = context.asset_key_for_output(event.output_name)
        elif isinstance(event, AssetMaterialization):
            key = event.asset_key
        else:
            yield event
            continue
        rows = features.table_row_count(url, *key.path) if len(key.path) == 2 else None
        yield event if rows is None else event.with_metadata({**event.metadata, "dagster/row_count": rows})


def _keep_partial_parse_state(invocation_target: Path) -> None:
    """dagster-dbt gives every invocation its own folder under the target path and seeds it with the target
    path's partial-parse file; dbt writes an updated one there. Partial parsing holds only for the connection
    profile that wrote the file (host, port and database are part of it): copied back to the database's own
    target path, the next run against the same database parses only what changed instead of the whole project
    (~8 s of the incremental refresh on two cores)."""
    source = invocation_target / PARTIAL_PARSE_FILE
    if not source.exists():
        return
    destination = invocation_target.parent / PARTIAL_PARSE_FILE
    staged = destination.with_name(f"{PARTIAL_PARSE_FILE}.{os.getpid()}.tmp")
    shutil.copyfile(source, staged)
    staged.replace(destination)  # atomic: a concurrent invocation copies either the old or the new file
