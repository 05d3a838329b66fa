"""Fixtures shared by every test: the real Postgres server, one fresh database per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from psycopg import sql

from teamu_assets.db import server
from teamu_assets.db.connection import connect, ensure_pgvector, resolve_url, with_database
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


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database with pgvector, dropped afterwards."""
    name = f"teamu_test_{uuid.uuid4().hex[:10]}"
    with connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    try:
        ensure_pgvector(url)
        yield url
    finally:
        with connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def db_url(server_url: str) -> Iterator[str]:
    """A database of its own for this test session; dropped at the end."""
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_db_url(server_url: str) -> Iterator[str]:
    """A database of its own for one test module (one that builds the whole graph, or truncates raw tables)."""
    with scratch_database(server_url) as url:
        yield url
