"""The embedded server's URLs name a libpq password file, never a password: dbt gets it as PGPASSFILE, Dagster's
config as a connection parameter, and the database name is read from the URL, not from its last '/'."""

from __future__ import annotations

from pathlib import Path

import yaml

from teamu_assets.db.connection import database_of, dbt_env, with_database
from teamu_assets.db.server import PLATFORM_ROLE, ServerInfo, password_file
from teamu_assets.instance import dagster_yaml

PGDATA = Path("/srv/a b/.teamu/pgdata")
SECURED = ServerInfo(pid=1, port=27750, pgdata=PGDATA, secured=True)


def test_a_secured_servers_url_names_the_platform_role_and_the_password_file() -> None:
    url = SECURED.url()
    assert url.startswith(f"postgresql://{PLATFORM_ROLE}@127.0.0.1:27750/teamu?passfile=")
    assert database_of(url) == "teamu"
    assert database_of(with_database(url, "dagster")) == "dagster"
    assert dbt_env(url)["PGPASSFILE"] == str(password_file(PGDATA)) == "/srv/a b/.teamu/pgdata.pgpass"
    assert dbt_env(url)["TEAMU_DBT_USER"] == PLATFORM_ROLE
    assert SECURED.superuser_url("postgres").startswith("postgresql://postgres@127.0.0.1:27750/postgres?passfile=")


def test_a_server_from_before_passwords_keeps_its_url() -> None:
    old = ServerInfo(pid=1, port=27750, pgdata=PGDATA, secured=False)
    assert old.url() == "postgresql://postgres@127.0.0.1:27750/teamu"
    assert "PGPASSFILE" not in dbt_env(old.url())


def test_dagster_yaml_holds_the_password_files_path_not_a_password() -> None:
    config = yaml.safe_load(dagster_yaml(SECURED.url()))["storage"]["postgres"]["postgres_db"]
    assert config["username"] == PLATFORM_ROLE and config["db_name"] == "dagster"
    assert config["params"] == {"passfile": "/srv/a b/.teamu/pgdata.pgpass"}
    assert "password" not in config


def test_the_cli_warns_about_a_server_that_still_trusts_local_connections() -> None:
    from teamu_assets.cli import _authentication

    assert _authentication(SECURED).startswith(f"password authentication; role {PLATFORM_ROLE}")
    old = ServerInfo(pid=1, port=27750, pgdata=PGDATA, secured=False)
    assert _authentication(old).startswith("WARNING: this server trusts every local connection")
