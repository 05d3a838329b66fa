"""The `teamu` command: database lifecycle, demo data, the demo run, recommendations and reports."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from teamu_assets.settings import Settings

if TYPE_CHECKING:
    from teamu_assets.db.server import ServerInfo

# What `teamu db url --database` takes: plain names (the platform's and its scratch databases are), no URL syntax.
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")


def _settings() -> Settings:
    return Settings.from_env()


def _app_url(settings: Settings) -> str:
    from teamu_assets.db.connection import resolve_url

    return resolve_url(settings.database_url, settings.pgdata)


def _superuser_url(settings: Settings) -> str:
    from teamu_assets.db import server
    from teamu_assets.db.connection import DatabaseError

    info = server.status(settings.pgdata) if settings.uses_embedded_server else None
    if info is None:
        # TEAMU_DATABASE_URL names its own role; a stopped server has no URL.
        raise DatabaseError("--superuser is for the embedded server, and it is not running: `teamu db start`")
    return info.superuser_url()


def db_start(settings: Settings) -> str:
    from teamu_assets.db.bootstrap import bootstrap

    ready = bootstrap(settings)
    if ready.server is not None:
        where = f"127.0.0.1:{ready.server.port}, data in {settings.pgdata}"
        print(f"PostgreSQL running (pid {ready.server.pid}) on {where}")
        print(_authentication(ready.server))
    print(f"pgvector {ready.pgvector_version}; Dagster instance config: {ready.dagster_yaml}")
    return ready.app_url


def _authentication(info: ServerInfo) -> str:
    from teamu_assets.db.server import PLATFORM_ROLE, password_file

    if info.secured:
        return f"password authentication; role {PLATFORM_ROLE}, passwords in {password_file(info.pgdata)}"
    # Started by a checkout from before password authentication; securing it needs the server stopped.
    return (
        "WARNING: this server trusts every local connection (started before password authentication): "
        "`teamu db stop && teamu db start` secures it"
    )


def _db(args: argparse.Namespace) -> int:
    from teamu_assets.db import server
    from teamu_assets.db.connection import describe, with_database

    settings = _settings()
    if args.action == "start":
        db_start(settings)
    elif args.action == "stop":
        if not settings.uses_embedded_server:
            print("TEAMU_DATABASE_URL is set: that server is not ours to stop.", file=sys.stderr)
            return 1
        print("stopped" if server.stop(settings.pgdata) else "not running")
    elif args.action == "status":
        if settings.uses_embedded_server:
            info = server.status(settings.pgdata)
            if info is None:
                print(f"not running (data dir {settings.pgdata})")
                return 1
            print(f"running: pid {info.pid}, 127.0.0.1:{info.port}, data dir {settings.pgdata}")
            print(_authentication(info))
        else:
            print(f"external server: {describe(settings.database_url)}")
    elif args.action == "url":
        url = _superuser_url(settings) if args.superuser else _app_url(settings)
        print(with_database(url, args.database) if args.database else url)
    elif args.action == "psql":
        psql = str(server.psql_path())
        # The password goes to psql in its environment, never on its command line, where `ps` shows it to every
        # user of the machine.
        conninfo, password = without_password(_app_url(settings))
        env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
        os.execve(psql, [psql, conninfo, *args.psql_args], env)
    return 0


def without_password(url: str) -> tuple[str, str | None]:
    """A connection URL as a libpq connection string without its password, and the password (None if none)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(url)
    password = parts.pop("password", None)
    return make_conninfo("", **parts), None if password is None else str(password)


# `teamu seed` flags that shape the synthetic world, each a SyntheticConfig field (its default when omitted):
# name -> (type, help).
WORLD_FLAGS: dict[str, tuple[type, str]] = {
    "popularity_tail": (
        float,
        "spread (log scale) of each post's hidden appeal: the larger, the more views a few posts take",
    ),
    "latent_tastes": (int, "how many hidden tastes users have (a mix each) and posts appeal to"),
    "taste_scale": (float, "spread (log scale) of a post's hidden appeal to each taste; 0: tastes play no part"),
    "prolific_authors": (int, "this many accounts write --prolific-share of all posts (default: none)"),
    "prolific_share": (float, "share of all posts written by the --prolific-authors accounts"),
    "long_thread_share": (float, "share of posts that gather a thread of hundreds to thousands of comments"),
    "active_days": (
        float,
        "mean days a user stays active; users then sign up across the whole span (multi-year --days need it); "
        "default 0: everyone stays to the end",
    ),
}


def _seed(args: argparse.Namespace) -> int:
    from teamu_assets.demo import seed

    settings = _settings()
    url = _app_url(settings)
    print(
        seed(
            settings,
            url,
            users=args.users,
            posts=args.posts,
            days=args.days,
            seed=args.seed,
            bad_fraction=args.bad_fraction,
            **{name: getattr(args, name) for name in WORLD_FLAGS if getattr(args, name) is not None},
        )
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from teamu_assets.demo import run_demo

    return run_demo(_settings(), users=args.users, posts=args.posts, days=args.days, seed_value=args.seed)


def _recommend(args: argparse.Namespace) -> int:
    from psycopg import errors

    from teamu_assets.db.recommend import is_known_user, recommend

    url = _app_url(_settings())
    try:
        rows = recommend(url, args.user, args.k)
        known = is_known_user(url, args.user)
    except (errors.UndefinedFunction, errors.UndefinedTable, errors.InvalidColumnReference) as exc:
        # Nothing materialized in this database yet (no marts, no serving functions), or serving functions older
        # than this code (evaluation_report installs them).
        problem = str(exc).splitlines()[0]
        print(
            f"teamu: the serving functions or the marts are missing or out of date ({problem}): run `make demo`, "
            "or materialize evaluation_report",
            file=sys.stderr,
        )
        return 1
    if not known:
        print(
            f"teamu: user {args.user} is not in marts.user_features (unknown, or signed up after the last dbt run): "
            "these are the popularity fallback's posts",
            file=sys.stderr,
        )
    if not rows:
        print(f"no recommendations for user {args.user}")
        return 1
    print(f"{'#':>3}  {'score':>9}  {'source':<19}  {'post':>7}  title")
    for rank, row in enumerate(rows, start=1):
        print(f"{rank:>3}  {row.score:9.3f}  {row.source:<19}  {row.post_id:>7}  {row.title}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from teamu_assets.demo import summary

    print(summary(_app_url(_settings())))
    return 0


def _ideas(args: argparse.Namespace) -> int:
    """A team's post ideas, best first, with scores and reasons; --save writes them to ml.post_ideas."""
    import json
    import textwrap

    from psycopg import errors

    # Before TensorFlow is imported: without a usable GPU its C++ side logs "failed call to cuInit" as an error.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from teamu_assets.ideas import (
        ContextError,
        TeamNotFound,
        generator_from_settings,
        promoted_ranker,
        suggest_ideas,
        write_post_ideas,
    )

    settings = _settings()
    url = _app_url(settings)
    try:
        ranker = promoted_ranker(url)
        result = suggest_ideas(
            url,
            args.team,
            generator=generator_from_settings(settings.language_model),
            ranker=ranker,
            count=args.n,
            audience_size=args.audience,
        )
    except (TeamNotFound, ContextError) as exc:
        print(f"teamu: {exc}", file=sys.stderr)
        return 1
    except (errors.UndefinedTable, errors.UndefinedColumn) as exc:
        problem = str(exc).splitlines()[0]
        print(f"teamu: the marts are missing or out of date ({problem}): run `make demo`", file=sys.stderr)
        return 1
    if result.fallback_reason:
        print(f"teamu: {result.fallback_reason}; these are the offline generator's ideas", file=sys.stderr)
    context = result.context
    team, audience = context.team, context.audience
    where = f"local team, {int(audience.is_local.sum())} of its audience nearby" if team.is_local else "not local"
    print(f"Ideas for {team.label}: {len(team.members)} members, {where}, audience of {len(audience.user_ids)}")
    print(
        f"written by {result.generator}; ranked by {ranker.model_version}'s post tower (each idea a new post), "
        f"data as of {context.as_of:%Y-%m-%d %H:%M} UTC; {len(result.dropped)} repeats dropped"
    )
    print(f"score: {ranker.blend.label} (the tower's: engagements the idea is expected to draw from the audience)")
    if args.context:
        print(json.dumps(context.summary(), indent=2, default=str))
    print(f"{'#':>3}  {'score':>8}  idea")
    for ranked in result.ranked:
        print(f"{ranked.rank:>3}  {ranked.score:8.3f}  {ranked.idea.title}")
        lines = textwrap.wrap(ranked.idea.description, 100)
        lines += textwrap.wrap("because: " + ("; ".join(map(str, ranked.reasons)) or "no successful post nearby"), 100)
        for line in lines:
            print(f"{'':15}{line}")
    if args.save:
        written = write_post_ideas(url, [(team.project_id, result.ranked, result.generator)], ranker.model_version)
        print(f"written to ml.post_ideas (project {team.project_id}, generated_at {written})")
    return 0


def _realtime(args: argparse.Namespace) -> int:
    """The online updater, until SIGTERM or Ctrl-C (it finishes the batch in hand); or, with --uninstall, its
    triggers and tables removed."""
    import logging
    import signal
    import threading

    from teamu_assets.realtime import updater

    settings = _settings()
    url = _app_url(settings)
    if args.uninstall:
        updater.uninstall(url, args.supabase_schema)
        print("online updater removed: its triggers, queue, cursor and state are gone")
        return 0
    # Before TensorFlow is imported: without a usable GPU its C++ side logs "failed call to cuInit" as an error.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s teamu realtime: %(message)s")
    updater.install(url, args.supabase_schema)
    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stop.set())
    endpoint = None
    if args.http_port is not None:
        from teamu_assets.realtime.http import EndpointConfig, serve

        config = EndpointConfig(url, settings.mixpanel_landing_dir, settings.realtime_token)
        try:
            endpoint = serve(config, args.http_host, args.http_port)
        except (ValueError, OSError) as exc:  # no token for a public address; the port taken
            print(f"teamu realtime: {exc}", file=sys.stderr)
            return 2
    try:
        updater.run(url, stop, batch_rows=args.batch_rows, report_seconds=args.report_seconds)
    except updater.AlreadyRunning as exc:
        print(f"teamu: {exc}", file=sys.stderr)
        return 1
    finally:
        if endpoint is not None:
            endpoint.shutdown()
    return 0


# dbt's own version options: dbt answers them after asking PyPI for the latest release, a network call at run time.
_DBT_VERSION_OPTIONS = frozenset({"--version", "-V", "-v"})


def _dbt(args: argparse.Namespace) -> int:
    """dbt on this project and database, e.g. `teamu dbt docs generate` or `teamu dbt build --select marts`."""
    from teamu_assets.db.connection import dbt_env
    from teamu_assets.settings import DBT_EXECUTABLE, DBT_PROJECT_DIR

    if args.psql_args and args.psql_args[0] in _DBT_VERSION_OPTIONS:
        print(_dbt_versions())
        return 0
    os.environ.update(dbt_env(_app_url(_settings())))
    os.chdir(DBT_PROJECT_DIR)
    project = str(DBT_PROJECT_DIR)
    # Bare `dbt` prints its usage, and refuses the project options there.
    project_options = ["--project-dir", project, "--profiles-dir", project] if args.psql_args else []
    os.execv(DBT_EXECUTABLE, [DBT_EXECUTABLE, *args.psql_args, *project_options])


def _dbt_versions() -> str:
    """What `dbt --version` prints of the installed dbt-core and the project's adapter, without the latest
    releases (those come from PyPI)."""
    from importlib import metadata

    core, postgres = metadata.version("dbt-core"), metadata.version("dbt-postgres")
    return f"Core:\n  - installed: {core}\n\nPlugins:\n  - postgres: {postgres}"


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, with where the help is, and argparse's exit code 2. Subcommands' parsers are of
    this class too (add_subparsers makes them of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], or a message that says which integers are allowed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _database_name(text: str) -> str:
    """An argparse type: a plain database name. Anything else could carry URL syntax (`x?host=elsewhere`) into
    the URL printed."""
    if not DATABASE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a plain database name (letters, digits, _ and -, at most 63, not starting with a digit): {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    from teamu_assets.db.recommend import MAX_COUNT, MAX_USER_ID
    from teamu_assets.db.server import SUPERUSER

    parser = _Parser(prog="teamu", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the Postgres server: start|stop|status|url|psql")
    actions = db.add_subparsers(dest="action", required=True)
    actions.add_parser("start", help="start (or reuse) the server; create databases, schemas and dagster.yaml")
    actions.add_parser("stop", help="stop the embedded server")
    actions.add_parser("status", help="is the embedded server running, and where")
    url = actions.add_parser("url", help="print the app database's URL")
    url.add_argument("--database", type=_database_name, help="the URL of another database on the same server")
    url.add_argument(
        "--superuser", action="store_true", help=f"the embedded server's superuser ({SUPERUSER}), e.g. to add roles"
    )
    actions.add_parser("psql", help="psql (bundled with the server) on the app database; other arguments go to psql")
    db.set_defaults(func=_db)

    for name, func, help_text in (
        ("seed", _seed, "generate synthetic Teamu data into raw_supabase and the Mixpanel landing folder"),
        ("demo", _demo, "start the database, seed, materialize every asset, print the results"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--users", type=int, default=2000)
        sub.add_argument("--posts", type=int, default=1500)
        sub.add_argument("--days", type=int, default=60)
        sub.add_argument("--seed", type=int, default=7)
        if name == "seed":
            sub.add_argument("--bad-fraction", type=float, default=0.0, help="share of bad Mixpanel lines")
            for flag, (flag_type, flag_help) in WORLD_FLAGS.items():
                sub.add_argument(f"--{flag.replace('_', '-')}", type=flag_type, help=flag_help)
        sub.set_defaults(func=func)

    rec = commands.add_parser(
        "recommend",
        help="print a user's recommendations from ml.recommend_posts, with each one's score and source",
        description="A user's recommendations from ml.recommend_posts, best first. source: 'model' (score: the "
        "model's inner product of the user's and the post's vectors) or 'popularity fallback' (score: engaged users "
        "over (1 + age in days)^decay, the decay chosen on validation), for users the model has no vector for. "
        "Higher is better; the two scales don't compare.",
    )
    rec.add_argument("--user", type=_int_between(1, MAX_USER_ID), required=True, help="the user's id")
    rec.add_argument("-k", type=_int_between(1, MAX_COUNT), default=20, help="how many posts (default 20)")
    rec.set_defaults(func=_recommend)

    realtime = commands.add_parser(
        "realtime",
        help="the online updater: a user's embedding rewritten within a second of their interaction",
        description="Installs (idempotently) the triggers that queue touched users, then applies the queue until "
        "SIGTERM or Ctrl-C: each user's features from marts.user_features_live, their vector from the served "
        "model's query tower, and the posts ml.recommend_posts must exclude. Logs lag and throughput.",
    )
    realtime.add_argument(
        "--supabase-schema",
        default="raw_supabase",
        help="schema of the app's tables, as dbt's var supabase_schema (`public` on Supabase; default raw_supabase)",
    )
    realtime.add_argument(
        "--batch-rows", type=_int_between(1, 100_000), default=5000, help="queue rows per transaction at most"
    )
    realtime.add_argument(
        "--report-seconds", type=float, default=10.0, help="how often lag and throughput are logged (default 10)"
    )
    realtime.add_argument(
        "--http-port",
        type=_int_between(0, 65535),
        help="also serve the HTTP endpoint (POST /v1/events, POST /v1/supabase-webhook, GET /healthz) on this port",
    )
    realtime.add_argument(
        "--http-host",
        default="127.0.0.1",
        help="the endpoint's address (default 127.0.0.1; any other needs TEAMU_REALTIME_TOKEN)",
    )
    realtime.add_argument("--uninstall", action="store_true", help="remove the triggers, queue, cursor and state")
    realtime.set_defaults(func=_realtime)

    dbt = commands.add_parser("dbt", help="run dbt on this project and database; arguments go to dbt")
    dbt.set_defaults(func=_dbt)

    ideas = commands.add_parser(
        "ideas",
        help="post ideas for a team (a project's members), ranked by the engagement the model predicts",
        description="Chooses the team's audience and context with the served embeddings, writes ideas (with the "
        "chat-completions endpoint of TEAMU_LLM_URL, else offline) and ranks them with the promoted model's post "
        "tower, each idea embedded as a new post. Offline unless TEAMU_LLM_URL is set.",
    )
    ideas.add_argument("--team", type=_int_between(1, MAX_USER_ID), required=True, help="the team's project id")
    ideas.add_argument("-n", type=_int_between(1, 100), default=10, help="how many ideas (default 10)")
    ideas.add_argument(
        "--audience", type=_int_between(1, 100_000), default=200, help="users in the team's audience (default 200)"
    )
    ideas.add_argument("--context", action="store_true", help="also print the chosen context (JSON)")
    ideas.add_argument("--save", action="store_true", help="write the ideas to ml.post_ideas (replacing the team's)")
    ideas.set_defaults(func=_ideas)

    report = commands.add_parser("report", help="print the latest evaluation summary")
    report.set_defaults(func=_report)

    from teamu_assets.vertex_cli import add_vertex_parser

    add_vertex_parser(commands)
    return parser


def _input_error_types() -> tuple[type[Exception], ...]:
    """The errors that mean an unusable database, environment variable or seed flag: a line, not a traceback.
    Imported when an error is raised, so a command that needs no synthetic world never imports it."""
    from teamu_assets.db.connection import DatabaseError
    from teamu_assets.settings import SettingsError
    from teamu_assets.synthetic.config import SyntheticConfigError

    return (DatabaseError, SettingsError, SyntheticConfigError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # psql's own options (-c, -At, ...) pass through untouched.
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "action", None) != "psql" and args.command != "dbt":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.psql_args = extra
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, _input_error_types()):
            raise
        print(f"teamu: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
