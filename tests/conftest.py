"""Fixtures shared by every test: the real Postgres server, one fresh database per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from teamu_assets.db import server
from teamu_assets.db.connection import resolve_url, scratch_database
from teamu_assets.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def server_url(settings: Settings) -> str:
    """The server the tests use: TEAMU_DATABASE_URL's, or the embedded one, started detached when down."""
    if settings.uses_embedded_server:
        server.start(settings.pgdata)
    return resolve_url(settings.database_url, settings.pgdata)


@pytest.fixture(scope="session")
def db_url(server_url: str) -> Iterator[str]:
    """A database of its own for this test session; dropped at the end."""
    with scratch_database(server_url, "teamu_test") as url:
        yield url


@pytest.fixture(scope="module")
def module_db_url(server_url: str) -> Iterator[str]:
    """A database of its own for one test module (one that builds the whole graph, or truncates raw tables)."""
    with scratch_database(server_url, "teamu_test") as url:
        yield url
