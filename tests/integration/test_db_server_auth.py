"""Password (SCRAM) authentication on embedded servers of the tests' own (never the shared one): a new data
directory is secured before its server first listens, one initialized before password authentication is secured
(and its objects handed to the platform role) the next time it is started; every platform connection (psycopg,
dbt, Dagster) logs in as the platform role, not a superuser, with the password from the password file, and no
password is in a URL, a config file, the server's command line or its log."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
import yaml

from teamu_assets.db import bootstrap, server
from teamu_assets.db.connection import connect, dbt_env, with_database
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.settings import Settings
from tests.integration.test_dbt import Dbt

pytestmark = pytest.mark.integration

ROLES = (server.PLATFORM_ROLE, server.SUPERUSER)
# Objects of the platform's databases still owned by the superuser, outside the system schemas and extensions:
# after the takeover there are none.
SUPERUSER_OWNED = """
select kind, name from (
    select 'schema' as kind, n.nspname::text as name, n.nspowner as owner, n.oid, 'pg_namespace'::regclass as cls,
        n.nspname as schema_name
    from pg_namespace n
    union all
    select 'relation', c.oid::regclass::text, c.relowner, c.oid, 'pg_class'::regclass, n.nspname
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    union all
    select 'routine', p.oid::regprocedure::text, p.proowner, p.oid, 'pg_proc'::regclass, n.nspname
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    union all
    select 'type', t.oid::regtype::text, t.typowner, t.oid, 'pg_type'::regclass, n.nspname
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
) o
where owner = 'postgres'::regrole and schema_name !~ '^pg_' and schema_name <> 'information_schema'
    and not exists (select from pg_depend d where d.classid = o.cls and d.objid = o.oid and d.deptype = 'e')
union all
select 'database', datname::text from pg_database where datname = current_database() and datdba = 'postgres'::regrole
"""


def passwords(pgdata: Path) -> dict[str, str]:
    lines = server.password_file(pgdata).read_text().splitlines()
    return {line.split(":")[3]: line.split(":", 4)[4] for line in lines}


def refusal(url: str) -> str:
    """Why the server refused the connection (the test fails if it accepted it)."""
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        return str(exc)
    raise AssertionError(f"connected to {url} without the right password")


def assert_password_required(info: server.ServerInfo) -> None:
    """Over TCP every role needs its password: none and a wrong one are refused, the file's is accepted."""
    right = passwords(info.pgdata)
    for role in ROLES:
        bare = f"postgresql://{role}@{server.HOST}:{info.port}/postgres"
        assert "no password supplied" in refusal(bare)
        assert "password authentication failed" in refusal(bare.replace(f"{role}@", f"{role}:wrong-{right[role]}@"))
        with psycopg.connect(bare.replace(f"{role}@", f"{role}:{right[role]}@")) as conn:
            assert conn.execute("select current_user").fetchone() == (role,)


@dataclass(frozen=True)
class Fresh:
    settings: Settings
    ready: bootstrap.Bootstrapped

    @property
    def info(self) -> server.ServerInfo:
        assert self.ready.server is not None
        return self.ready.server


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fresh]:
    """`teamu db start` on a new TEAMU_HOME: its own server, secured from the start."""
    settings = Settings.from_env({"TEAMU_HOME": str(tmp_path_factory.mktemp("fresh"))})
    ready = bootstrap.bootstrap(settings)
    try:
        yield Fresh(settings, ready)
    finally:
        server.stop(settings.pgdata)


def test_a_new_data_directory_asks_every_role_for_its_password(fresh: Fresh) -> None:
    info = fresh.info
    assert info.secured
    assert stat.S_IMODE(server.password_file(info.pgdata).stat().st_mode) == 0o600
    rules = [line.split() for line in (info.pgdata / "pg_hba.conf").read_text().splitlines()]
    rules = [rule for rule in rules if rule and not rule[0].startswith("#")]
    assert rules and all(rule[0] == "host" and rule[-1] == "scram-sha-256" for rule in rules)
    assert_password_required(info)


def test_the_platform_connects_as_its_own_role_which_is_no_superuser(fresh: Fresh) -> None:
    with connect(fresh.ready.app_url) as conn:
        user, superuser, createrole = conn.execute(
            "select rolname, rolsuper, rolcreaterole from pg_roles where rolname = current_user"
        ).fetchone()
        assert (user, superuser, createrole) == (server.PLATFORM_ROLE, False, False)
        # It owns the app database's schemas, and acts as a signed-in API user the way the security tests do.
        owners = conn.execute("select distinct nspowner::regrole::text from pg_namespace where nspname like 'raw_%'")
        assert owners.fetchall() == [(server.PLATFORM_ROLE,)]
        conn.execute("set local role authenticated")
        conn.execute("reset role")
        conn.commit()
        # What the superuser could do (issue 13: `copy ... from program 'id'` ran OS commands), it can't.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("copy (select 1) to program 'id'")
    # The databases it creates (tests, benchmarks) get pgvector, which only a superuser may create.
    with connect(with_database(fresh.ready.app_url, "postgres"), autocommit=True) as conn:
        conn.execute("create database auth_scratch")
    try:
        with connect(with_database(fresh.ready.app_url, "auth_scratch")) as conn:
            assert conn.execute("select '[3,4]'::vector <#> '[1,0]'::vector").fetchone() == (-3.0,)
    finally:
        with connect(with_database(fresh.ready.app_url, "postgres"), autocommit=True) as conn:
            conn.execute("drop database auth_scratch")


def test_dagster_and_dbt_log_in_with_the_password_file(fresh: Fresh, tmp_path: Path) -> None:
    from dagster import DagsterInstance

    config = yaml.safe_load(fresh.ready.dagster_yaml.read_text())["storage"]["postgres"]["postgres_db"]
    assert config["username"] == server.PLATFORM_ROLE and "password" not in config
    assert config["params"] == {"passfile": str(server.password_file(fresh.settings.pgdata))}
    with DagsterInstance.from_config(str(fresh.ready.dagster_yaml.parent)) as instance:
        assert instance.get_runs() == []
    Dbt({**os.environ, **dbt_env(fresh.ready.app_url)}, tmp_path).run("run", "--select", "stg_supabase__users")
    with connect(fresh.ready.app_url) as conn:
        owner = conn.execute("select viewowner from pg_views where viewname = 'stg_supabase__users'").fetchone()
    assert owner == (server.PLATFORM_ROLE,)


def test_no_password_in_urls_config_or_the_servers_command_line(fresh: Fresh) -> None:
    places = {
        "the app URL": fresh.ready.app_url,
        "the superuser URL": fresh.info.superuser_url(),
        "dagster.yaml": fresh.ready.dagster_yaml.read_text(),
        "dbt's environment": repr(dbt_env(fresh.ready.app_url)),
        "the server's command line": " ".join(psutil.Process(fresh.info.pid).cmdline()),
        "the server's log": (fresh.settings.pgdata / "server.log").read_text(),
    }
    for role, password in passwords(fresh.settings.pgdata).items():
        for place, text in places.items():
            assert password not in text, f"{role}'s password is in {place}"


def start_as_before(pgdata: Path) -> server.ServerInfo:
    """A server as checkouts before password authentication started it: the package's data directory, which
    trusts every local connection, started as it is."""
    pgdata.mkdir()
    handle = server._server_handle(pgdata)
    handle.ensure_pgdata_inited()
    options = f'-h {server.HOST} -p {server._choose_port(pgdata)} -k ""'
    log = str(pgdata / "server.log")
    server._pg_ctl(handle, "-w", "-t", "60", "-o", options, "-l", log, "-D", str(pgdata), "start")
    info = server.status(pgdata)
    assert info is not None and not info.secured
    return info


def test_an_older_data_directory_is_secured_at_its_next_start_and_keeps_working(tmp_path: Path) -> None:
    from dagster import DagsterInstance

    pgdata = tmp_path / "pgdata"
    old = start_as_before(pgdata)
    try:
        # Everything `teamu db start` and a run made back then, as the superuser: databases, schemas, the dbt
        # models, the Dagster instance's tables, a row of data.
        assert "postgres@" in old.url()
        app_url = bootstrap.prepare_server(old.url())
        bootstrap.prepare_app_database(app_url)
        with connect(app_url) as conn:
            conn.execute("insert into raw_supabase.users values (1, 'a', null, null, null, null, now(), now())")
        Dbt({**os.environ, **dbt_env(app_url)}, tmp_path / "dbt-before").run("run")
        dagster_home = tmp_path / "dagster"
        write_dagster_yaml(dagster_home, app_url)
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            assert instance.get_runs() == []
        # Anyone on the machine could log in as the superuser without a password.
        assert psycopg.connect(f"postgresql://postgres:anything@{server.HOST}:{old.port}/postgres").close() is None
    finally:
        server.stop(pgdata)

    info = server.start(pgdata)
    try:
        assert info.secured
        assert_password_required(info)
        for database in (server.APP_DATABASE, server.DAGSTER_DATABASE):
            with connect(info.superuser_url(database)) as conn:
                assert conn.execute(SUPERUSER_OWNED).fetchall() == [], f"the superuser still owns these in {database}"
        # The next `teamu db start`, dbt's full refresh (which replaces the tables it built back then), and the
        # Dagster instance, all as the platform role now; the data is still there.
        app_url = bootstrap.prepare_server(info.url())
        bootstrap.prepare_app_database(app_url)
        Dbt({**os.environ, **dbt_env(app_url)}, tmp_path / "dbt-after").run("run", "--full-refresh")
        with connect(app_url) as conn:
            assert conn.execute("select current_user").fetchone() == (server.PLATFORM_ROLE,)
            assert conn.execute("select user_id from marts.user_features").fetchall() == [(1,)]
        write_dagster_yaml(dagster_home, app_url)
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            assert instance.get_runs() == []
    finally:
        server.stop(pgdata)
