"""Dagster resources: thin, configurable handles on the pure core's settings."""

from __future__ import annotations

import threading
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from teamu_assets.db import registry
from teamu_assets.db.connection import dbt_env, resolve_url
from teamu_assets.db.store import EmbeddingStore
from teamu_assets.settings import (
    DEFAULT_LLM_MODEL,
    DEFAULT_LLM_TIMEOUT_SECONDS,
    LanguageModelSettings,
    MixpanelCredentials,
)


class TeamuDatabase(ConfigurableResource):
    """The app database: TEAMU_DATABASE_URL when set, else the embedded server under TEAMU_HOME."""

    teamu_home: str
    database_url: str | None = None

    def url(self) -> str:
        return resolve_url(self.database_url, Path(self.teamu_home) / "pgdata")

    def dbt_env(self) -> dict[str, str]:
        return dbt_env(self.url())

    def embedding_store(self) -> EmbeddingStore:
        """The serving tables' store on this database, with a connection of its own: use it in a `with` block."""
        return EmbeddingStore(self.url())


class MixpanelExport(ConfigurableResource):
    """Where Mixpanel events come from: the landing folder always; the live export API when credentials are set."""

    landing_dir: str
    service_account_username: str | None = None
    service_account_secret: str | None = None
    project_id: str | None = None

    def credentials(self) -> MixpanelCredentials | None:
        if self.service_account_username and self.service_account_secret and self.project_id:
            return MixpanelCredentials(self.service_account_username, self.service_account_secret, self.project_id)
        return None


class LanguageModel(ConfigurableResource):
    """The OpenAI-compatible chat-completions endpoint post ideas are written with (TEAMU_LLM_URL, TEAMU_LLM_MODEL,
    TEAMU_LLM_API_KEY as an EnvVar, so the key stays out of run configs and the UI); no url: the offline
    generator."""

    url: str | None = None
    model: str = DEFAULT_LLM_MODEL
    api_key: str | None = None
    timeout_seconds: float = DEFAULT_LLM_TIMEOUT_SECONDS

    def settings(self) -> LanguageModelSettings | None:
        if not self.url:
            return None
        return LanguageModelSettings(self.url, self.model, self.api_key or None, self.timeout_seconds)


class ArtifactStore(ConfigurableResource):
    """TEAMU_HOME: artifacts/{datasets,models}/<version>, reports/<version>, synthetic/ground_truth.npz."""

    root: str

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)


class TowerPreloader(ConfigurableResource):
    """Imports TensorFlow and the embedding code, and loads the promoted model's towers, in a background thread
    from the moment a run starts, so that in the incremental refresh the ~3 s of import and SavedModel loading
    overlap the ingest and dbt steps instead of adding to the time a new interaction takes to reach
    recommendations. The embedding assets call wait() before they embed; if preloading failed they load (and
    fail) themselves."""

    database: TeamuDatabase
    _thread: threading.Thread | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._thread = threading.Thread(target=self._preload, name="tower-preloader", daemon=True)
        self._thread.start()

    def _preload(self) -> None:
        try:
            # The embedding assets' entry point: its module imports the evaluation code too (not matplotlib, which
            # evaluation.report imports when it draws).
            import teamu_assets.model.pipeline  # noqa: F401
            from teamu_assets.model.train import CANDIDATE_TOWER_DIR, QUERY_TOWER_DIR, load_tower

            promoted = registry.promoted_model(self.database.url())
            if promoted is not None:
                for tower_dir in (QUERY_TOWER_DIR, CANDIDATE_TOWER_DIR):
                    load_tower(Path(promoted.artifact_path), tower_dir)
        except Exception:  # noqa: BLE001 - only a head start: the embedding step loads and reports on its own
            return

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
