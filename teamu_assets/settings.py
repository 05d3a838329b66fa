"""Every setting of the platform, read once from the environment (TEAMU_*), typed.

The pure packages take a Settings (or plain values) as arguments; only this module reads os.environ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def default_landing_dir(home: Path) -> Path:
    """Where Mixpanel export files land under a TEAMU_HOME unless TEAMU_MIXPANEL_LANDING_DIR says otherwise."""
    return home / "landing" / "mixpanel"


@dataclass(frozen=True)
class MixpanelCredentials:
    service_account_username: str
    service_account_secret: str
    project_id: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"MixpanelCredentials(username={self.service_account_username!r}, project_id={self.project_id!r})"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    dagster_home: Path
    embedding_dim: int
    mixpanel_landing_dir: Path
    mixpanel: MixpanelCredentials | None
    retrain_min_interactions: int
    """New interactions in marts.interactions since the last training that make the retrain sensor retrain."""
    realtime_token: str | None = field(default=None, repr=False)
    """TEAMU_REALTIME_TOKEN: the bearer token `teamu realtime --http-port` requires; None: loopback only."""

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def uses_embedded_server(self) -> bool:
        return self.database_url is None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("TEAMU_HOME") or PROJECT_ROOT / ".teamu").resolve()
        dim = int(env.get("TEAMU_EMBEDDING_DIM") or 512)
        if not 1 <= dim <= 2000:
            # 2000 is pgvector's limit for an HNSW-indexed vector column.
            raise ValueError(f"TEAMU_EMBEDDING_DIM must be between 1 and 2000, got {dim}")
        username = env.get("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
        secret = env.get("MIXPANEL_SERVICE_ACCOUNT_SECRET")
        project_id = env.get("MIXPANEL_PROJECT_ID")
        mixpanel = MixpanelCredentials(username, secret, project_id) if username and secret and project_id else None
        return cls(
            home=home,
            database_url=env.get("TEAMU_DATABASE_URL") or None,
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").resolve(),
            embedding_dim=dim,
            mixpanel_landing_dir=Path(env.get("TEAMU_MIXPANEL_LANDING_DIR") or default_landing_dir(home)),
            mixpanel=mixpanel,
            retrain_min_interactions=int(env.get("TEAMU_RETRAIN_MIN_INTERACTIONS") or 5000),
            realtime_token=env.get("TEAMU_REALTIME_TOKEN") or None,
        )
