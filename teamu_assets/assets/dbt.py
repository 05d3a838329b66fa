"""The dbt project as Dagster assets: sources upstream, staging -> intermediate -> marts, every dbt test a check."""

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, Config, Output
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from teamu_assets.assets.dbt_cli import (
    TeamuDbtCliResource,
    connection_environment,
    dbt_project,
    keep_partial_parse_state,
    manifest_path,
)
from teamu_assets.contract import DBT_VARS
from teamu_assets.db import features
from teamu_assets.db.connection import connect
from teamu_assets.resources import TeamuDatabase


class TeamuDbtTranslator(DagsterDbtTranslator):
    """Models are keyed by schema and name (marts/user_features); sources by source and table (supabase/users).
    Every dbt test is an asset check: model tests, source tests (on the Supabase and Mixpanel assets), and
    singular tests (the model their dbt meta names when they read several)."""

    def __init__(self) -> None:
        super().__init__(DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_source_tests_as_checks=True))

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


@dbt_assets(manifest=manifest_path(), project=dbt_project, dagster_dbt_translator=TeamuDbtTranslator())
def teamu_dbt_models(
    context: AssetExecutionContext, config: DbtBuildConfig, dbt: TeamuDbtCliResource, database: TeamuDatabase
) -> Iterator[Any]:
    """`dbt build` of the selected models and their tests, incrementally where the model says so."""
    # The contract's values (history length, event names) come from teamu_assets/contract.py, not from
    # dbt_project.yml's defaults, so the marts and the model can't disagree.
    args = ["build", "--vars", json.dumps(DBT_VARS), *(["--full-refresh"] if config.full_refresh else [])]
    # A run that selects no check is the sensor's incremental refresh, whose latency budget has no room for
    # tests: dagster-dbt would still run the source tests upstream of the selected models; the full refresh
    # runs them all. Such a run also skips dbt's adapter: the rows of the tables it built are counted here.
    with_tests = bool(context.selected_asset_check_keys)
    if not with_tests:
        args += ["--exclude", "resource_type:test"]
    connection = database.dbt_env()
    with connection_environment(connection):
        _rebuild_missing_views(context, dbt, database.url())
        invocation = dbt.build(context, args, connection, with_adapter=with_tests)
        if with_tests:
            yield from invocation.stream().fetch_row_counts().fetch_column_metadata()
        else:
            yield from _with_row_counts(context, invocation.stream(), database.url())
    keep_partial_parse_state(invocation)


def _rebuild_missing_views(context: AssetExecutionContext, dbt: TeamuDbtCliResource, url: str) -> None:
    """Recreate the project's views that are missing from the database before building: a failed `dbt build`
    can leave views dropped (dbt replaces a view by dropping the old one with cascade, which takes the views
    built on it, and the skipped ones are never recreated), and the incremental refresh selects no view."""
    manifest = json.loads(manifest_path().read_text())
    built_anyway = {tuple(key.path) for key in context.selected_asset_keys}  # keys are (schema, name)
    views = [
        (node["schema"], node["name"])
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"]["materialized"] == "view"
    ]
    missing = features.missing_relations(url, [view for view in views if view not in built_anyway])
    if missing:
        context.log.warning(f"Recreating views missing from the database: {', '.join(map('.'.join, missing))}")
        # One argument: dagster-dbt takes a single value after --select; dbt reads the spaces as a union.
        select = ["--select", " ".join(name for _, name in missing)]
        dbt.cli(["run", "--vars", json.dumps(DBT_VARS), *select], manifest=manifest).wait()


def _with_row_counts(context: AssetExecutionContext, events: Iterable[Any], url: str) -> Iterator[Any]:
    """Each built table's materialization with its row count (dagster/row_count, as fetch_row_counts gives a
    full build); views are not counted, as counting one runs its whole query. One connection counts them all; in
    autocommit, so that no transaction of it holds a lock that dbt's next model waits for."""
    with connect(url, autocommit=True) as conn:
        for event in events:
            if isinstance(event, Output):
                key = context.asset_key_for_output(event.output_name)
            elif isinstance(event, AssetMaterialization):
                key = event.asset_key
            else:
                yield event
                continue
            rows = features.relation_rows(conn, *key.path) if len(key.path) == 2 else None
            yield event if rows is None else event.with_metadata({**event.metadata, "dagster/row_count": rows})
