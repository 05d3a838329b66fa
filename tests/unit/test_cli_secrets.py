"""`teamu db psql` keeps the password off psql's command line (ps shows every process's arguments to every
user); `teamu db url --database` takes a database name, not URL syntax."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

from teamu_assets import cli
from teamu_assets.cli import main, without_password

URL = "postgresql://app:s3cret-pw@db.example:6543/teamu?sslmode=require"


class Exec(Exception):
    """Raised instead of replacing the test process with psql."""


def test_without_password_keeps_everything_else() -> None:
    conninfo, password = without_password(URL)
    assert password == "s3cret-pw"
    assert "s3cret" not in conninfo
    assert {"host=db.example", "port=6543", "dbname=teamu", "user=app", "sslmode=require"} <= set(conninfo.split())
    assert without_password("postgresql://postgres@127.0.0.1:5432/teamu")[1] is None


def test_psql_gets_the_password_in_its_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def record(*args: Any) -> NoReturn:
        calls.append(args)
        raise Exec

    monkeypatch.setenv("TEAMU_DATABASE_URL", URL)
    monkeypatch.setattr(os, "execv", record)
    monkeypatch.setattr(os, "execve", record)
    monkeypatch.setattr(cli, "_app_url", lambda settings: URL)
    with pytest.raises(Exec):
        main(["db", "psql", "-Atc", "select 1"])
    ((_, argv, *rest),) = calls
    assert not any("s3cret" in argument for argument in argv)
    assert argv[-2:] == ["-Atc", "select 1"]
    assert rest and rest[0]["PGPASSWORD"] == "s3cret-pw"


@pytest.mark.parametrize("name", ["x?host=elsewhere", "teamu&user=postgres", "a/b", "#x", "", "1abc", "a" * 64])
def test_db_url_refuses_a_database_name_with_url_syntax(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["db", "url", "--database", name])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --database: not a plain database name" in err


def test_db_url_takes_a_plain_database_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_app_url", lambda settings: "postgresql://postgres@127.0.0.1:5432/teamu")
    assert main(["db", "url", "--database", "teamu_test-1"]) == 0
    assert capsys.readouterr().out == "postgresql://postgres@127.0.0.1:5432/teamu_test-1\n"


@pytest.mark.parametrize(
    ("dbt_args", "with_project"),
    [(["build", "--select", "marts"], True), (["docs", "generate"], True), (["--debug", "build"], True), ([], False)],
)
def test_teamu_dbt_gives_the_project_to_dbt_commands_only(
    monkeypatch: pytest.MonkeyPatch, dbt_args: list[str], with_project: bool
) -> None:
    """The project options go to every dbt command, global options first or not; bare `dbt` (its usage) takes
    none: dbt refuses them there."""
    calls: list[tuple[Any, ...]] = []

    def record(*args: Any) -> NoReturn:
        calls.append(args)
        raise Exec

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(os, "chdir", lambda path: None)
    monkeypatch.setattr(os, "execv", record)
    monkeypatch.setattr(cli, "_app_url", lambda settings: URL)
    with pytest.raises(Exec):
        main(["dbt", *dbt_args])
    ((_, argv),) = calls
    assert argv[1 : 1 + len(dbt_args)] == dbt_args
    assert ("--project-dir" in argv) == with_project


@pytest.mark.parametrize("option", ["--version", "-V", "-v"])
def test_teamu_dbt_version_answers_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """dbt answers --version after asking PyPI for the latest release; teamu answers from the installed packages
    and never starts dbt (no network at run time)."""
    from importlib import metadata

    def refuse(*args: Any) -> NoReturn:
        raise AssertionError(f"dbt was started: {args}")

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(os, "chdir", lambda path: None)
    monkeypatch.setattr(os, "execv", refuse)
    monkeypatch.setattr(cli, "_app_url", lambda settings: URL)
    assert main(["dbt", option]) == 0
    out = capsys.readouterr().out
    assert f"installed: {metadata.version('dbt-core')}" in out
    assert f"postgres: {metadata.version('dbt-postgres')}" in out
