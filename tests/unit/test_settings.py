"""Settings from the environment, and the CLI's handling of arguments meant for psql."""

from pathlib import Path

import pytest

from teamu_assets.cli import build_parser, main
from teamu_assets.instance import dagster_yaml
from teamu_assets.settings import Settings, SettingsError


def test_defaults_live_under_teamu_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"TEAMU_HOME": str(tmp_path)})
    assert settings.pgdata == tmp_path / "pgdata"
    assert settings.dagster_home == tmp_path / "dagster"
    assert settings.mixpanel_landing_dir == tmp_path / "landing" / "mixpanel"
    assert settings.embedding_dim == 512
    assert settings.retrain_min_interactions == 5000
    assert settings.uses_embedded_server and settings.mixpanel is None


def test_the_retrain_threshold_is_read_from_the_environment() -> None:
    assert Settings.from_env({"TEAMU_RETRAIN_MIN_INTERACTIONS": "12"}).retrain_min_interactions == 12


@pytest.mark.parametrize("dim", ["0", "2001", "abc"])
def test_embedding_dim_out_of_range_is_refused(dim: str) -> None:
    with pytest.raises(SettingsError, match="TEAMU_EMBEDDING_DIM"):
        Settings.from_env({"TEAMU_EMBEDDING_DIM": dim})


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"TEAMU_EMBEDDING_DIM": "4096"}, ["db", "status"], "TEAMU_EMBEDDING_DIM must be between 1 and 2000, got 4096"),
        ({"TEAMU_RETRAIN_MIN_INTERACTIONS": "lots"}, ["db", "url"], "TEAMU_RETRAIN_MIN_INTERACTIONS must be a whole"),
        ({"TEAMU_LLM_URL": "http://127.0.0.1:9", "TEAMU_LLM_TIMEOUT_SECONDS": "1m"}, ["report"], "must be a number"),
        ({}, ["seed", "--bad-fraction", "2"], "SyntheticConfig.bad_fraction must be within [0, 1], got 2.0"),
        ({}, ["seed", "--prolific-authors", "3"], "prolific_authors and prolific_share go together"),
    ],
)
def test_bad_settings_and_seed_flags_are_one_line_errors_with_exit_code_2(
    env: dict[str, str],
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A database URL nothing listens on: the error must come before any connection.
    monkeypatch.setenv("TEAMU_HOME", str(tmp_path))
    monkeypatch.setenv("TEAMU_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("teamu: ") and message in err, err


def test_mixpanel_secret_stays_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "svc",
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": "top-secret-value",
            "MIXPANEL_PROJECT_ID": "42",
        }
    )
    assert settings.mixpanel is not None
    assert "top-secret-value" not in repr(settings)


def test_dagster_yaml_never_holds_the_password() -> None:
    text = dagster_yaml("postgresql://app:hunter2@db.example:6543/postgres")
    assert "hunter2" not in text
    assert "env: TEAMU_DATABASE_PASSWORD" in text
    assert 'scheme: "postgresql+psycopg2"' in text and "port: 6543" in text and 'db_name: "dagster"' in text


def test_db_url_takes_a_database_and_psql_keeps_its_own_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["db", "url", "--database", "dagster"])
    assert (args.action, args.database) == ("url", "dagster")
    args, extra = parser.parse_known_args(["db", "psql", "-At", "-c", "select 1"])
    assert args.action == "psql" and extra == ["-At", "-c", "select 1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["recommend", "--user", "1", "-k", "0"], "argument -k: must be between 1 and 1000, got 0"),
        (["recommend", "--user", "1", "-k", "1001"], "argument -k: must be between 1 and 1000, got 1001"),
        (["recommend", "--user", "99999999999999999999"], "argument --user: must be between 1 and 9223372036854775807"),
        (["recommend", "--user", "0"], "argument --user: must be between 1 and"),
        (["recommend", "--user", "abc"], "argument --user: expected an integer, got 'abc'"),
        (["recommend"], "the following arguments are required: --user"),
    ],
)
def test_bad_recommend_arguments_are_one_line_errors_with_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("teamu recommend: ") and message in err
    assert "see `teamu recommend --help`" in err
