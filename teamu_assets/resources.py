"""Dagster resources: thin, configurable handles on the pure core's settings."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from teamu_assets.db.connection import dbt_env, resolve_url
from teamu_assets.settings import MixpanelCredentials


class TeamuDatabase(ConfigurableResource):
    """The app database: TEAMU_DATABASE_URL when set, else the embedded server under TEAMU_HOME."""

    teamu_home: str
    database_url: str | None = None

    def url(self) -> str:
        return resolve_url(self.database_url, Path(self.teamu_home) / "pgdata")

    def dbt_env(self) -> dict[str, str]:
        return dbt_env(self.url())


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


class ArtifactStore(ConfigurableResource):
    """TEAMU_HOME: artifacts/{datasets,models}/<version>, reports/<version>, synthetic/ground_truth.npz."""

    root: str

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)
