"""The code location as the Dagster catalog shows it: every dbt test of the project an asset check on the asset it
tests, and the catalog metadata every asset carries (owners, code versions, table names, column types,
freshness policies). No database: the project is parsed afresh, so a manifest older than dbt_project/ fails too.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from dagster import AssetKey
from dagster._core.definitions.freshness import CronFreshnessPolicy, TimeWindowFreshnessPolicy

from teamu_assets import definitions
from teamu_assets.catalog import FRESHNESS, OWNERS_BY_GROUP
from teamu_assets.schedules import daily_post_freshness_schedule
from teamu_assets.settings import DBT_EXECUTABLE, DBT_PROJECT_DIR

MARTS_WITH_CONTRACTS = ("interactions", "user_features", "post_features")


@pytest.fixture(scope="module")
def fresh_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """dbt_project/ parsed now, into a folder of its own (parsing needs no database)."""
    target = tmp_path_factory.mktemp("dbt_target")
    subprocess.run(
        [
            DBT_EXECUTABLE,
            "parse",
            "--quiet",
            *("--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)),
            *("--target-path", str(target), "--log-path", str(target)),
        ],
        check=True,
        cwd=DBT_PROJECT_DIR,
    )
    return json.loads((target / "manifest.json").read_text())


def _asset_key(node: dict[str, Any]) -> AssetKey:
    """The code location's key of a dbt model or source (teamu_assets/assets/dbt.py's translator)."""
    if node["resource_type"] == "source":
        return AssetKey([node["source_name"], node["name"]])
    return AssetKey([node["schema"], node["name"]])


def test_every_dbt_test_is_an_asset_check_on_an_asset_it_reads(fresh_manifest: dict[str, Any]) -> None:
    graph = definitions.defs.get_repository_def().asset_graph
    checks = {key.name: key.asset_key for key in graph.asset_check_keys}
    nodes = {**fresh_manifest["nodes"], **fresh_manifest["sources"]}
    tests = [node for node in fresh_manifest["nodes"].values() if node["resource_type"] == "test"]
    assert len(tests) > 100
    missing = sorted(test["name"] for test in tests if test["name"] not in checks)
    assert not missing, f"dbt tests with no asset check (stale manifest? run `make manifest`): {missing}"
    for test in tests:
        read = {_asset_key(nodes[unique_id]) for unique_id in test["depends_on"]["nodes"]}
        assert checks[test["name"]] in read, test["name"]
    # The kinds the issue named: source tests on the raw assets, tests that read several models.
    raw_checks = {name for name, key in checks.items() if key.path[0] in ("supabase", "mixpanel")}
    assert "source_unique_supabase_users_user_id" in raw_checks
    assert "source_not_null_mixpanel_events_insert_id" in raw_checks
    assert "source_references_supabase_posts_user_id__user_id__users" in raw_checks
    assert checks["user_features_counts_match_interactions"] == AssetKey(["marts", "user_features"])
    assert checks["staging_invalid_locations_are_dropped"] == AssetKey(["staging", "stg_supabase__posts"])


def test_every_asset_has_owners_and_a_code_version() -> None:
    graph = definitions.defs.get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == OWNERS_BY_GROUP[node.group_name], key
        assert node.code_version, key


def test_table_assets_name_their_table_and_the_marts_their_typed_columns() -> None:
    graph = definitions.defs.get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if "postgres" in node.kinds:
            database, schema, table = node.metadata["dagster/table_name"].split(".")
            assert table == key.path[-1] and schema in (key.path[0], f"raw_{key.path[0]}"), key
    for mart in MARTS_WITH_CONTRACTS:
        columns = graph.get(AssetKey(["marts", mart])).metadata["dagster/column_schema"].columns
        assert columns and all(column.type != "?" and column.description for column in columns), mart
    user_features = graph.get(AssetKey(["marts", "user_features"])).metadata["dagster/column_schema"]
    assert {column.name: column.type for column in user_features.columns}["recent_post_ids"] == "bigint[]"


def test_freshness_policies_follow_the_schedule_and_the_sensor() -> None:
    graph = definitions.defs.get_repository_def().asset_graph
    post = graph.get(AssetKey(["ml", "post_embeddings"])).freshness_policy
    # The daily post_freshness schedule's run must have written the post vectors within the hour after it starts.
    minute, hour, *_ = str(daily_post_freshness_schedule.cron_schedule).split()
    assert isinstance(post, CronFreshnessPolicy)
    assert post.deadline_cron.split()[:2] == [minute, str(int(hour) + 1)]
    assert post.lower_bound_delta == timedelta(hours=1)
    for key in FRESHNESS.keys() - {AssetKey(["ml", "post_embeddings"])}:
        policy = graph.get(key).freshness_policy
        assert isinstance(policy, TimeWindowFreshnessPolicy), key
        assert policy.fail_window.to_timedelta() == timedelta(days=1), key
