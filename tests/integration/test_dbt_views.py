"""A failed `dbt build` can leave the project's views dropped (dbt replaces a view by dropping the old one with
cascade, which takes the views built on it; the build's failure skips recreating them). The incremental refresh,
which selects only the incremental models, must recreate them instead of failing on a missing relation."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetSelection, DagsterInstance, materialize
from dagster_dbt import build_dbt_asset_selection

from teamu_assets.assets.dbt import teamu_dbt_models
from teamu_assets.assets.dbt_cli import TeamuDbtCliResource, dbt_project
from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect
from teamu_assets.db.features import missing_relations
from teamu_assets.resources import TeamuDatabase
from teamu_assets.settings import DBT_EXECUTABLE
from teamu_assets.synthetic import SyntheticConfig, generate, write_supabase

pytestmark = pytest.mark.integration

# The intermediate view the issue saw missing, and the views built on it that its drop takes along.
DROPPED = ("intermediate", "int_interaction_candidates")


def _materialize(url: str, home: Path, selection: AssetSelection) -> bool:
    result = materialize(
        [teamu_dbt_models],
        instance=DagsterInstance.ephemeral(),
        resources={
            "database": TeamuDatabase(teamu_home=str(home), database_url=url),
            "dbt": TeamuDbtCliResource(
                project_dir=dbt_project, profiles_dir=str(dbt_project.profiles_dir), dbt_executable=DBT_EXECUTABLE
            ),
        },
        selection=selection,
        raise_on_error=False,
    )
    return result.success


def test_the_incremental_refresh_recreates_missing_views(module_db_url: str, tmp_path: Path) -> None:
    url = module_db_url
    bootstrap.prepare_app_database(url)
    write_supabase(url, generate(SyntheticConfig(users=60, posts=40, days=10, seed=3)))
    assert _materialize(url, tmp_path, AssetSelection.assets(teamu_dbt_models).without_checks())
    with connect(url) as conn:
        conn.execute(f"drop view {'.'.join(DROPPED)} cascade")
        interactions = conn.execute("select count(*) from marts.interactions").fetchone()[0]
    assert missing_relations(url, [DROPPED]) == [DROPPED]
    # The incremental refresh job's dbt selection (teamu_assets/jobs.py).
    incremental = build_dbt_asset_selection([teamu_dbt_models], dbt_select="config.materialized:incremental")
    assert _materialize(url, tmp_path, incremental.without_checks())
    assert missing_relations(url, [DROPPED, ("intermediate", "int_interactions")]) == []
    with connect(url) as conn:
        assert conn.execute("select count(*) from marts.interactions").fetchone()[0] == interactions
