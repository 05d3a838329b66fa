"""Make a server ready for the platform: databases, pgvector, the schemas this project owns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from teamu_assets.db import recommend, schema, server
from teamu_assets.db.connection import (
    DatabaseError,
    connect,
    ddl_transaction,
    describe,
    ensure_database,
    ensure_pgvector,
    with_database,
)
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.settings import Settings

# Applied in this order on every start; each file is idempotent. The Supabase shim comes first: the roles it
# creates (anon, authenticated, service_role) are named by the migrations applied after these files.
OWNED_SCHEMAS = ("supabase_shim", "raw_supabase", "raw_mixpanel", "ml", "analyst_role")


# How long a bootstrap waits for another bootstrap of the same database to finish (one takes seconds).
BOOTSTRAP_WAIT = "120s"


@contextmanager
def _one_bootstrap_at_a_time(app_url: str) -> Iterator[None]:
    """Holds the database's bootstrap lock (a session advisory lock) while the body runs. Two bootstraps of one
    database at once (`teamu db start` beside `make demo`, two test sessions) would rewrite the same grants
    together, and Postgres fails one of them ("tuple concurrently updated"): the second waits for the first."""
    with connect(app_url, autocommit=True) as conn:
        conn.execute(f"set lock_timeout = '{BOOTSTRAP_WAIT}'")
        try:
            conn.execute("select pg_advisory_lock(hashtext('teamu.prepare_app_database'))")
        except psycopg.errors.LockNotAvailable:
            raise DatabaseError(
                f"Another bootstrap of {describe(app_url)} has been running for over {BOOTSTRAP_WAIT}: "
                "wait for it (or end it) and run this again."
            ) from None
        yield  # the lock goes with the session


def prepare_app_database(app_url: str) -> str:
    """Ensure pgvector (>= 0.8), the owned schemas, the Supabase migrations (the app-facing API and its grants)
    and the serving functions in the app database; return the pgvector version. The serving functions are
    installed here once; the pipeline only verifies them (teamu_assets.db.store.EmbeddingStore.ensure_ready).
    One bootstrap of a database runs at a time; a second waits for the first."""
    with _one_bootstrap_at_a_time(app_url):
        version = ensure_pgvector(app_url)
        schema.apply(app_url, *[name for name in OWNED_SCHEMAS if name in schema.available()])
        schema.apply_migrations(app_url)
        with ddl_transaction(app_url, "installing the serving functions") as conn:
            recommend.install(conn)
    return version


def prepare_server(server_url: str, app_database: str = server.APP_DATABASE) -> str:
    """Create the app and Dagster databases on a server we own (the embedded one); return the app URL."""
    maintenance_url = with_database(server_url, "postgres")
    ensure_database(maintenance_url, app_database)
    ensure_database(maintenance_url, server.DAGSTER_DATABASE)
    return with_database(server_url, app_database)


@dataclass(frozen=True)
class Bootstrapped:
    app_url: str
    pgvector_version: str
    dagster_yaml: Path
    server: server.ServerInfo | None  # None when TEAMU_DATABASE_URL points elsewhere


def bootstrap(settings: Settings) -> Bootstrapped:
    """Start (or reuse) the embedded server, or check TEAMU_DATABASE_URL; prepare databases and dagster.yaml."""
    info = None
    if settings.uses_embedded_server:
        info = server.start(settings.pgdata)
        app_url = prepare_server(info.url())
    else:
        app_url = settings.database_url
    version = prepare_app_database(app_url)
    if info is None:
        ensure_database(with_database(app_url, "postgres"), server.DAGSTER_DATABASE)
    return Bootstrapped(app_url, version, write_dagster_yaml(settings.dagster_home, app_url), info)
