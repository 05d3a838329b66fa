"""The Teamu code location: every asset, check, job, sensor, schedule and resource in one Definitions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from dagster import Definitions, EnvVar, map_asset_specs

from teamu_assets.assets.dbt import teamu_dbt_models
from teamu_assets.assets.dbt_cli import TeamuDbtCliResource, dbt_project
from teamu_assets.assets.ideas import post_ideas
from teamu_assets.assets.ingestion import mixpanel_events, supabase_tables
from teamu_assets.assets.ml import (
    evaluation_report,
    post_embeddings,
    post_embeddings_are_complete_and_sane,
    promotion_gate,
    training_dataset,
    two_tower_model,
    user_embeddings,
    user_embeddings_are_complete_and_sane,
)
from teamu_assets.assets.partitioned import (
    partitioned_embedding_refresh_job,
    post_embedding_partitions,
    user_embedding_partitions,
)
from teamu_assets.catalog import catalog_mapper
from teamu_assets.jobs import full_refresh_job, incremental_refresh_job, post_freshness_job
from teamu_assets.k8s import full_refresh_k8s_job
from teamu_assets.resources import ArtifactStore, LanguageModel, MixpanelExport, TeamuDatabase, TowerPreloader
from teamu_assets.schedules import daily_post_freshness_schedule, nightly_retrain_schedule
from teamu_assets.sensors import new_interactions_sensor, online_updater_sensor, retrain_on_new_interactions_sensor
from teamu_assets.settings import DBT_EXECUTABLE, Settings, default_landing_dir

settings = Settings.from_env()
# dagster-dbt and dbt's own subprocesses look for executables on PATH: the virtualenv's come first.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _env_or_none(name: str) -> EnvVar | None:
    """EnvVar keeps a secret out of the run config and the UI; unset optional settings stay None."""
    return EnvVar(name) if os.environ.get(name) else None


def _language_model(settings: Settings) -> LanguageModel:
    """The post-ideas endpoint as Settings reads it (its defaults for model and timeout); the key as an EnvVar."""
    llm = settings.language_model
    if llm is None:
        return LanguageModel()
    return LanguageModel(
        url=llm.url, model=llm.model, api_key=_env_or_none("TEAMU_LLM_API_KEY"), timeout_seconds=llm.timeout_seconds
    )


def build_resources(
    teamu_home: Path,
    database_url: str | EnvVar | None,
    mixpanel: MixpanelExport | None = None,
    language_model: LanguageModel | None = None,
) -> dict[str, Any]:
    """Every resource the assets need, for a TEAMU_HOME and a database: the code location's own, and those
    of tests and benchmarks that run the assets against a scratch database. Mixpanel defaults to the landing
    folder under TEAMU_HOME that Settings defaults to, without live-export credentials; the language model to
    none (post ideas from the offline generator)."""
    database = TeamuDatabase(teamu_home=str(teamu_home), database_url=database_url)
    return {
        "database": database,
        "tower_preloader": TowerPreloader(database=database),
        "artifacts": ArtifactStore(root=str(teamu_home)),
        "mixpanel": mixpanel or MixpanelExport(landing_dir=str(default_landing_dir(teamu_home))),
        "language_model": language_model or LanguageModel(),
        "dbt": TeamuDbtCliResource(
            project_dir=dbt_project, profiles_dir=str(dbt_project.profiles_dir), dbt_executable=DBT_EXECUTABLE
        ),
    }


defs = Definitions(
    # Owners, code versions, table names and freshness policies for every asset: teamu_assets/catalog.py.
    assets=map_asset_specs(
        catalog_mapper(),
        [
            *supabase_tables,
            mixpanel_events,
            teamu_dbt_models,
            training_dataset,
            two_tower_model,
            evaluation_report,
            post_embeddings,
            user_embeddings,
            post_ideas,
            user_embedding_partitions,
            post_embedding_partitions,
        ],
    ),
    asset_checks=[promotion_gate, post_embeddings_are_complete_and_sane, user_embeddings_are_complete_and_sane],
    jobs=[
        full_refresh_job,
        incremental_refresh_job,
        post_freshness_job,
        full_refresh_k8s_job,
        partitioned_embedding_refresh_job,
    ],
    sensors=[new_interactions_sensor, retrain_on_new_interactions_sensor, online_updater_sensor],
    schedules=[nightly_retrain_schedule, daily_post_freshness_schedule],
    resources=build_resources(
        settings.home,
        _env_or_none("TEAMU_DATABASE_URL"),
        MixpanelExport(
            landing_dir=str(settings.mixpanel_landing_dir),
            service_account_username=_env_or_none("MIXPANEL_SERVICE_ACCOUNT_USERNAME"),
            service_account_secret=_env_or_none("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
            project_id=_env_or_none("MIXPANEL_PROJECT_ID"),
        ),
        _language_model(settings),
    ),
)
