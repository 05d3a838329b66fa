"""What the Dagster catalog shows for every asset, set in one place over the whole code location (Definitions'
map_asset_specs) rather than asset by asset: owners, code versions, table names and freshness policies.

dagster-dbt sets what the dbt project knows (each model's code version, table name and column types); this
module fills in the rest and leaves what is already set alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from dagster import AssetKey, AssetSpec, FreshnessPolicy

from teamu_assets.assets.dbt_cli import manifest_path
from teamu_assets.schedules import daily_post_freshness_schedule

PACKAGE = Path(__file__).resolve().parent
DATA_PLATFORM = "team:data-platform"
ML = "team:ml"

# Who answers for an asset, by its group: the warehouse (raw tables, dbt) and the model (training, serving, ideas).
OWNERS_BY_GROUP = {
    "raw_supabase": [DATA_PLATFORM],
    "raw_mixpanel": [DATA_PLATFORM],
    "staging": [DATA_PLATFORM],
    "intermediate": [DATA_PLATFORM],
    "marts": [DATA_PLATFORM],
    "ml": [ML],
    "serving": [ML],
    "ideas": [ML],
}

# The code that makes an asset dagster-dbt doesn't version, by group (paths under teamu_assets/): its asset
# module and the core packages that module calls. The code version is a digest of those files, so it changes
# exactly when they do and the UI marks what was materialized with older code. The Supabase tables are the
# app's: their version is the raw contract's DDL, the shape the platform reads them in.
CODE_BY_GROUP = {
    "raw_supabase": ["db/sql/raw_supabase.sql"],
    "raw_mixpanel": ["assets/ingestion.py", "ingest", "db/sql/raw_mixpanel.sql"],
    "ml": ["assets/ml.py", "model", "evaluation", "contract.py"],
    "serving": ["assets/ml.py", "model", "db", "contract.py"],
    "ideas": ["assets/ideas.py", "ideas"],
}

# Tables in the ml schema the assets write (the raw ones are named by the dbt sources).
ML_TABLES = {
    AssetKey(["ml", "post_embeddings"]): "post_embeddings",
    AssetKey(["ml", "user_embeddings"]): "user_embeddings",
    AssetKey(["ml", "post_ideas"]): "post_ideas",
}


def _after_an_hour(cron: str) -> str:
    """A daily cron ("M H * * *") an hour later."""
    minute, hour, *rest = cron.split()
    return " ".join([minute, str((int(hour) + 1) % 24), *rest])


# The promises of README.md and docs/OPERATIONS.md as Dagster freshness policies:
# - post vectors carry the post's age, so the daily post_freshness job rewrites them all: written within the
#   hour after that schedule's time, every day;
# - the marts and the user vectors follow new interactions within seconds (the sensor's incremental refresh;
#   the online updater rewrites user vectors outside Dagster): a day without a refresh means the sensor is off,
#   or a day passed without any interaction, which the UI then shows as stale.
DAILY = FreshnessPolicy.time_window(fail_window=timedelta(days=1))
FRESHNESS = {
    AssetKey(["ml", "post_embeddings"]): FreshnessPolicy.cron(
        deadline_cron=_after_an_hour(str(daily_post_freshness_schedule.cron_schedule)),
        lower_bound_delta=timedelta(hours=1),
        timezone=daily_post_freshness_schedule.execution_timezone or "UTC",
    ),
    AssetKey(["ml", "user_embeddings"]): DAILY,
    AssetKey(["marts", "interactions"]): DAILY,
    AssetKey(["marts", "user_features"]): DAILY,
    AssetKey(["marts", "post_features"]): DAILY,
}


def code_version(paths: list[str]) -> str:
    """sha1 (12 hex digits) of the files under teamu_assets/ at `paths` (folders: their .py and .sql files)."""
    digest = hashlib.sha1()
    for path in sorted(paths):
        target = PACKAGE / path
        files = sorted(target.rglob("*")) if target.is_dir() else [target]
        for file in files:
            if file.suffix in (".py", ".sql") and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(PACKAGE)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _table_names() -> dict[AssetKey, str]:
    """database.schema.table of the raw tables (the dbt sources, whose keys match the raw assets') and of the
    ml tables, named as dagster-dbt names the models (the database the dbt project was parsed for)."""
    manifest = json.loads(manifest_path().read_text())
    sources = manifest["sources"].values()
    names = {
        AssetKey([source["source_name"], source["name"]]): ".".join(
            (source["database"], source["schema"], source["identifier"])
        )
        for source in sources
    }
    database = next(iter(sources))["database"]
    return names | {key: f"{database}.ml.{table}" for key, table in ML_TABLES.items()}


def with_catalog_metadata(spec: AssetSpec, table_names: dict[AssetKey, str]) -> AssetSpec:
    """`spec` with its group's owners, a code version, its table name and its freshness policy, where they apply
    and are not set already."""
    group = spec.group_name or ""
    changes: dict[str, Any] = {}
    if not spec.owners and group in OWNERS_BY_GROUP:
        changes["owners"] = OWNERS_BY_GROUP[group]
    if spec.code_version is None and group in CODE_BY_GROUP:
        changes["code_version"] = code_version(CODE_BY_GROUP[group])
    if spec.freshness_policy is None and spec.key in FRESHNESS:
        changes["freshness_policy"] = FRESHNESS[spec.key]
    if "dagster/table_name" not in spec.metadata and spec.key in table_names:
        changes["metadata"] = {**spec.metadata, "dagster/table_name": table_names[spec.key]}
    return spec.replace_attributes(**changes) if changes else spec


def catalog_mapper() -> Callable[[AssetSpec], AssetSpec]:
    """The mapping for Definitions.map_asset_specs (reads the dbt manifest once)."""
    table_names = _table_names()
    return lambda spec: with_catalog_metadata(spec, table_names)
