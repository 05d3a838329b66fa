"""Every setting of the platform, read once from the environment (TEAMU_*), typed.

The pure packages take a Settings (or plain values) as arguments; only this module reads os.environ.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# dbt-core as this virtualenv installs it, beside the running Python (the PATH may hold another dbt).
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")
# The chat model asked for post ideas when TEAMU_LLM_URL is set without TEAMU_LLM_MODEL, and how long one request
# may take (a slow answer is retried, then reported).
DEFAULT_LLM_MODEL = "gpt-4o-mini"
DEFAULT_LLM_TIMEOUT_SECONDS = 60.0


class SettingsError(ValueError):
    """An environment variable holds a value the platform can't use; the message names the variable."""


def _number(env: dict[str, str], name: str, default: float, kind: type[int] | type[float]) -> int | float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {noun}, got {raw!r}") from None


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
class LanguageModelSettings:
    """An OpenAI-compatible chat-completions endpoint for post ideas (teamu_assets.ideas)."""

    url: str
    model: str
    api_key: str | None
    timeout_seconds: float

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"LanguageModelSettings(url={self.url!r}, model={self.model!r}, timeout_seconds={self.timeout_seconds})"


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
    language_model: LanguageModelSettings | None = None
    """TEAMU_LLM_URL (+ TEAMU_LLM_MODEL, TEAMU_LLM_API_KEY, TEAMU_LLM_TIMEOUT_SECONDS); None: the offline generator."""
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
        dim = _number(env, "TEAMU_EMBEDDING_DIM", 512, int)
        if not 1 <= dim <= 2000:
            # 2000 is pgvector's limit for an HNSW-indexed vector column.
            raise SettingsError(f"TEAMU_EMBEDDING_DIM must be between 1 and 2000, got {dim}")
        username = env.get("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
        secret = env.get("MIXPANEL_SERVICE_ACCOUNT_SECRET")
        project_id = env.get("MIXPANEL_PROJECT_ID")
        mixpanel = MixpanelCredentials(username, secret, project_id) if username and secret and project_id else None
        llm_url = env.get("TEAMU_LLM_URL") or None
        language_model = None
        if llm_url:
            language_model = LanguageModelSettings(
                url=llm_url,
                model=env.get("TEAMU_LLM_MODEL") or DEFAULT_LLM_MODEL,
                api_key=env.get("TEAMU_LLM_API_KEY") or None,
                timeout_seconds=float(_number(env, "TEAMU_LLM_TIMEOUT_SECONDS", DEFAULT_LLM_TIMEOUT_SECONDS, float)),
            )
        return cls(
            home=home,
            database_url=env.get("TEAMU_DATABASE_URL") or None,
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").resolve(),
            embedding_dim=dim,
            mixpanel_landing_dir=Path(env.get("TEAMU_MIXPANEL_LANDING_DIR") or default_landing_dir(home)),
            mixpanel=mixpanel,
            retrain_min_interactions=int(_number(env, "TEAMU_RETRAIN_MIN_INTERACTIONS", 5000, int)),
            language_model=language_model,
            realtime_token=env.get("TEAMU_REALTIME_TOKEN") or None,
        )
