"""dagster-dbt as the sensor-driven refresh can afford it: the one module that reaches into dagster-dbt's private
members, checked against the version it was written for.

dagster-dbt 0.29 pays two start-up costs in this process on every `dbt.cli` call, ~3-6 s on two cores:
- `dbt --version` in a subprocess, to learn the executable's version: the executable is this virtualenv's
  dbt-core, whose version is importable (`_cli_version`);
- a dbt adapter built here (parsing all of dbt's macros), used only to fetch row counts and column metadata
  after the build (`_initialize_dbt_core_adapter`): built when the caller asks for that metadata, skipped
  otherwise.
Public API does the rest: `cli(target_path=...)` gives each invocation a folder under its database's own target
path, which this module seeds with that database's partial-parse state and updates after the run.

Nothing here parses the dbt project: the manifest is built before the code location loads (`make manifest`,
the Docker image's build, or `dagster dev`, which re-parses on every load through DbtProject.prepare_if_dev).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster_dbt
from dagster import AssetExecutionContext
from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
from dbt import version as dbt_core_version
from packaging import version

from teamu_assets.settings import DBT_PROJECT_DIR

# The overrides below replace private members of exactly this release: another one may have renamed them, or
# stopped needing them. Re-check both, then change the pin here and in requirements.lock together.
DAGSTER_DBT_VERSION = "0.29.27"
if dagster_dbt.__version__ != DAGSTER_DBT_VERSION:
    raise ImportError(
        f"teamu_assets/assets/dbt_cli.py was written for dagster-dbt {DAGSTER_DBT_VERSION}, "
        f"found {dagster_dbt.__version__}: re-check its overrides of dagster-dbt's private members"
    )

PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# What dbt's partial-parse state depends on besides the project: the connection profile's database.
DATABASE_KEY = ("TEAMU_DBT_HOST", "TEAMU_DBT_PORT", "TEAMU_DBT_DBNAME")

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` (DAGSTER_IS_DEV_CLI set) dagster-dbt re-parses the project on every load, so edits to the
# models show up in the UI; everywhere else the manifest must exist already.
dbt_project.prepare_if_dev()


def manifest_path() -> Path:
    """The parsed project, which the code location's dbt assets and checks are read from."""
    path = Path(dbt_project.manifest_path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `make manifest` (or `dbt parse --project-dir dbt_project --profiles-dir "
            "dbt_project`) once after a clone and after changing dbt_project/"
        )
    return path


_with_adapter: ContextVar[bool] = ContextVar("teamu_dbt_with_adapter", default=False)


class TeamuDbtCliResource(DbtCliResource):
    """DbtCliResource without `dbt --version` on every call, and with dbt's adapter only when `build` asks
    for it (row counts and column metadata after the build)."""

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(dbt_core_version.__version__)

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return super()._initialize_dbt_core_adapter(args) if _with_adapter.get() else None

    def build(
        self,
        context: AssetExecutionContext,
        args: Sequence[str],
        connection: Mapping[str, str],
        *,
        with_adapter: bool,
    ) -> DbtCliInvocation:
        """`dbt.cli(args)` in a folder of its own under the connection's database's target path, seeded with
        that database's partial-parse state. `with_adapter`: build dbt's adapter, which `fetch_row_counts` and
        `fetch_column_metadata` need (seconds); without it they add nothing."""
        target = _database_target_path(connection) / f"{context.run.run_id[:8]}-{uuid.uuid4().hex[:8]}"
        saved = target.parent / PARTIAL_PARSE_FILE
        if saved.exists():
            target.mkdir(parents=True)
            shutil.copyfile(saved, target / PARTIAL_PARSE_FILE)
        token = _with_adapter.set(with_adapter)
        try:
            invocation = self.cli(args, context=context, target_path=target)
        finally:
            _with_adapter.reset(token)
        # The manifest names relations in the database it was parsed for (`make manifest`: teamu); the adapter
        # queries the one this run builds (a scratch database, Supabase's postgres), and Postgres refuses
        # references to another database.
        invocation.manifest = _in_database(invocation.manifest, connection["TEAMU_DBT_DBNAME"])
        return invocation


def _in_database(manifest: Mapping[str, Any], database: str) -> dict[str, Any]:
    """`manifest` with every model's and source's relation in `database`."""

    def moved(node: Mapping[str, Any]) -> dict[str, Any]:
        if not node.get("database") or node["database"] == database:
            return dict(node)
        relation = node.get("relation_name")
        prefix = f'"{node["database"]}".'
        if relation and relation.startswith(prefix):
            relation = f'"{database}".{relation[len(prefix) :]}'
        return {**node, "database": database, "relation_name": relation}

    return {
        **manifest,
        "nodes": {unique_id: moved(node) for unique_id, node in manifest["nodes"].items()},
        "sources": {unique_id: moved(node) for unique_id, node in manifest["sources"].items()},
    }


def _database_target_path(connection: Mapping[str, str]) -> Path:
    """Partial parsing holds only for the connection profile that wrote the state (host, port and database are
    part of it): each database keeps its own."""
    key = "-".join(connection[name] for name in DATABASE_KEY)
    return Path(dbt_project.project_dir, dbt_project.target_path, "by_database", key)


def keep_partial_parse_state(invocation: DbtCliInvocation) -> None:
    """dbt wrote an updated partial-parse file into the invocation's folder: copied back to the database's target
    path, the next run against the same database parses only what changed instead of the whole project (~8 s of
    the incremental refresh on two cores)."""
    source = invocation.target_path / PARTIAL_PARSE_FILE
    if not source.exists():
        return
    destination = invocation.target_path.parent / PARTIAL_PARSE_FILE
    staged = destination.with_name(f"{PARTIAL_PARSE_FILE}.{os.getpid()}.tmp")
    shutil.copyfile(source, staged)
    staged.replace(destination)  # atomic: a concurrent invocation copies either the old or the new file


@contextmanager
def connection_environment(connection: Mapping[str, str]) -> Iterator[None]:
    """dagster-dbt hands os.environ to the dbt process and to its adapter, and profiles.yml reads the connection
    from it: the connection is set there for the invocation (no other way in), and the previous values put
    back after."""
    previous = {name: os.environ.get(name) for name in connection}
    os.environ.update(connection)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
