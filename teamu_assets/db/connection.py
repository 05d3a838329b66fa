"""Connections by URL: the embedded server's or TEAMU_DATABASE_URL's, with errors that say where and why."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from teamu_assets.db import server

MIN_PGVECTOR = (0, 8)
# How long the DDL of `teamu db start` (schemas, migrations, serving functions, databases, pgvector, the server's
# roles) waits for a lock before it gives up. Without a limit an open transaction elsewhere (an analyst's, a
# refresh's) makes the DDL wait as long as it stays open, and every query on the same table, ml.recommend_posts
# included, queues behind the waiting DDL. Failing fast changes nothing (the transaction rolls back); rerun later.
DDL_LOCK_TIMEOUT = "2s"


class DatabaseError(RuntimeError):
    """The database can't be used; the message names host and database, never a password."""


def describe(url: str) -> str:
    """'host H port P, database D' for messages: the parts of a URL that are safe to show."""
    parts = conninfo_to_dict(url)
    return f"host {parts.get('host', 'localhost')} port {parts.get('port', 5432)}, database {parts.get('dbname', '?')}"


def resolve_url(database_url: str | None, pgdata: Path) -> str:
    """TEAMU_DATABASE_URL when set, else the running embedded server's URL."""
    if database_url:
        return database_url
    info = server.status(pgdata)
    if info is None:
        raise DatabaseError(
            f"The embedded Postgres server under {pgdata} is not running: start it with `teamu db start`, "
            "or point TEAMU_DATABASE_URL at a Postgres server with pgvector."
        )
    return info.url()


def database_of(url: str) -> str:
    """The database a URL names; not its text after the last '/', which a query string (`?sslmode=require`, the
    embedded server's `?passfile=/path/...`) can hold too."""
    return str(conninfo_to_dict(url)["dbname"])


def with_database(url: str, database: str) -> str:
    """The same server, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def dbt_env(url: str) -> dict[str, str]:
    """The connection as the TEAMU_DBT_* variables that dbt_project/profiles.yml reads, and PGPASSFILE when the
    URL names a password file (the embedded server's): dbt-postgres has no setting for one, libpq reads it there."""
    parts = conninfo_to_dict(url)
    env = {
        "TEAMU_DBT_HOST": str(parts.get("host", "localhost")),
        "TEAMU_DBT_PORT": str(parts.get("port", 5432)),
        "TEAMU_DBT_USER": str(parts.get("user", "postgres")),
        "TEAMU_DBT_PASSWORD": str(parts.get("password", "")),
        "TEAMU_DBT_DBNAME": str(parts["dbname"]),
    }
    if parts.get("passfile"):
        env["PGPASSFILE"] = str(parts["passfile"])
    return env


def _lock_timeout_error(url: str, what: str, exc: psycopg.errors.LockNotAvailable) -> DatabaseError:
    where = " ".join((exc.diag.context or "").split()[:12])
    return DatabaseError(
        f"{what} at {describe(url)} gave up after waiting {DDL_LOCK_TIMEOUT} (lock_timeout) for a lock another "
        f"session holds{f' ({where})' if where else ''}; nothing was changed. End that session's open transaction "
        "(pg_stat_activity lists it as 'idle in transaction') and run it again."
    )


@contextmanager
def ddl_transaction(url: str, what: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A connection for bootstrap DDL whose statements wait at most DDL_LOCK_TIMEOUT for a lock: a lock held
    elsewhere is a DatabaseError naming `what`, and everything done in the transaction is rolled back. With
    autocommit, for DDL that can't run in a transaction block (CREATE DATABASE). The connection is this DDL's
    alone, so the timeout is set for its session."""
    with connect(url, autocommit=autocommit) as conn:
        conn.execute(f"set lock_timeout = '{DDL_LOCK_TIMEOUT}'")
        try:
            yield conn
        except psycopg.errors.LockNotAvailable as exc:
            raise _lock_timeout_error(url, what, exc) from None


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseError(f"Cannot connect to Postgres at {describe(url)}: {reason}") from None


def ensure_database(url: str, database: str) -> None:
    """Create `database` on the server of `url` when missing."""
    with ddl_transaction(url, f"creating database {database}", autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))


def ensure_pgvector(url: str) -> str:
    """Create the vector extension when missing; return its version, refusing one older than 0.8."""
    with ddl_transaction(url, "creating the vector extension", autocommit=True) as conn:
        available = conn.execute("select default_version from pg_available_extensions where name = 'vector'").fetchone()
        if available is None:
            raise DatabaseError(f"Postgres at {describe(url)} lacks the pgvector extension (vector >= 0.8 is required)")
        conn.execute("create extension if not exists vector")
        (version,) = conn.execute("select extversion from pg_extension where extname = 'vector'").fetchone()
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_PGVECTOR:
        raise DatabaseError(
            f"Postgres at {describe(url)} has pgvector {version}; 0.8 or newer is required "
            "(ALTER EXTENSION vector UPDATE)"
        )
    return version


@contextmanager
def scratch_database(server_url: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new database named <prefix>_<random> with pgvector on the server of `server_url`, dropped afterwards
    (unless `keep`): tests and benchmarks work beside the app database, never in it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    maintenance = with_database(server_url, "postgres")
    with connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    try:
        ensure_pgvector(url)
        yield url
    finally:
        if not keep:
            drop_database(server_url, name)


# Tries of a forced drop that meets a session the platform role may not end, a second apart (see drop_database).
_DROP_TRIES = 30


def drop_database(server_url: str, name: str) -> None:
    """`drop database if exists ... with (force)` on the server of `server_url`, tried again while it meets a
    session the connecting role may not end: on the secured embedded server the platform is no superuser, and an
    autovacuum worker (a superuser's process) that happens to be in the database makes the drop fail until the
    worker is done, which is seconds."""
    maintenance_url = with_database(server_url, "postgres")
    statement = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
    for attempt in range(_DROP_TRIES):
        try:
            with connect(maintenance_url, autocommit=True) as conn:
                conn.execute(statement)
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == _DROP_TRIES - 1:
                raise
            time.sleep(1.0)
