"""Benchmark: kills. Postgres and the writing process killed mid-write, then restarted and rerun; serving under
full refreshes. Nothing lost, nothing duplicated, no partial table ever visible to ml.recommend_posts.

Starts a throwaway embedded server of its own (data directory under a temporary folder, its own loopback port;
never the project's server) and builds a small synthetic world in it the way the platform does: raw tables,
Mixpanel export files through the landing-folder loader, `dbt build`, embeddings for every mart row (seeded
random vectors: the same ids get the same vectors on every write, so rankings before and after a rerun must be
equal) and the serving functions. A full refresh here is what the full_refresh job writes that serving reads:
`dbt run --full-refresh --select marts` and a full rewrite of both embedding tables. Then, in order:

  1. Postgres killed during the marts' full refresh (dbt is building a `__dbt_tmp` table), restarted, refresh rerun;
  2. Postgres killed during the embedding table rewrite (the `_staged` table being loaded or indexed), likewise;
  3. the dbt process killed mid-refresh, and 4. the embedding writer process killed mid-write, each rerun;
  5. Postgres killed during a load of new export files (after the first of them committed), restarted, rerun;
  6. the loader process killed mid-load of further files, rerun;
  7. --clients clients calling ml.recommend_posts for --seconds while full refreshes run back to back (at least
     two): every call must return rows.

"Postgres killed" is SIGKILL to the server's whole process group (postmaster and every backend), as an OOM kill
or a power cut leaves it: no shutdown checkpoint. After each restart (and each rerun) the bench compares with the
state before the kill: row count and checksum of the marts (keys and feature_hash), of both embedding tables
(ids and vectors) and of the raw events, the rankings of sampled users, and no dbt `__dbt_tmp`/`__dbt_backup` or
`_staged` relation left behind. After the loads it compares raw_mixpanel.events and the ledger with a control
database that loaded the same files without any kill (rows lost and duplicated: both must be 0), and checks that
every file's rows in raw_mixpanel.events equal its ledger row (no file half in). Prints one line per probe and
a final `crashes: ...` line, or the failures (exit status 1).

    .venv/bin/python bench/bench_crashes.py [--users 1000] [--posts 800] [--days 30] [--clients 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from teamu_assets.db import bootstrap, server
from teamu_assets.db.connection import connect, dbt_env, with_database
from teamu_assets.db.embeddings import KINDS, write_embeddings
from teamu_assets.db.recommend import install_serving_functions
from teamu_assets.ingest import load_landing_folder
from teamu_assets.settings import DBT_EXECUTABLE, DBT_PROJECT_DIR
from teamu_assets.synthetic.config import SyntheticConfig
from teamu_assets.synthetic.generator import generate
from teamu_assets.synthetic.mixpanel_files import write_mixpanel_files
from teamu_assets.synthetic.supabase import write_supabase

DIM = 32
MODEL_VERSION = "crash-probe"
SAMPLED_USERS = 40
COUNT = 20
# The child steps (--step) read the database URL from here: never a connection string on a command line.
URL_ENV = "TEAMU_CRASH_BENCH_URL"
LANDING_ENV = "TEAMU_CRASH_BENCH_LANDING"
# What each fingerprint covers: (relation, the columns whose rows must survive every kill unchanged).
FINGERPRINTS = {
    "marts.interactions": "user_id, post_id, kind, occurred_at",
    "marts.post_features": "post_id, feature_hash",
    "marts.user_features": "user_id, feature_hash",
    "ml.post_embeddings": "post_id, embedding, model_version",
    "ml.user_embeddings": "user_id, embedding, model_version",
    "raw_mixpanel.events": "insert_id, event, distinct_id, event_time, properties, source_file",
    "raw_mixpanel.loaded_files": "source_file, lines_read, loaded, duplicates, quarantined",
}
LEFTOVERS_SQL = """
select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname in ('staging', 'intermediate', 'marts', 'ml')
  and (c.relname like '%\\_\\_dbt\\_tmp%' or c.relname like '%\\_\\_dbt\\_backup%' or c.relname like '%\\_staged')
"""
POLL_SECONDS = 0.01


class Throwaway:
    """An embedded server of the bench's own, under a temporary folder: killed and restarted at will."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.info = server.start(pgdata)
        self.app_url = bootstrap.prepare_server(self.info.url())

    def kill(self) -> None:
        """SIGKILL to the postmaster's process group (it leads its own session): postmaster and backends at once."""
        pid = self.info.pid
        try:
            postmaster = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        os.killpg(pid, signal.SIGKILL)
        psutil.wait_procs([postmaster], timeout=30)

    def restart(self) -> str:
        self.info = server.start(self.pgdata)
        self.app_url = with_database(self.info.url(), server.APP_DATABASE)
        return self.app_url

    def stop(self) -> None:
        server.stop(self.pgdata)


@dataclass
class Probe:
    name: str
    failures: list[str] = field(default_factory=list)
    detail: str = ""

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)


def fingerprint(url: str, relations: tuple[str, ...] = tuple(FINGERPRINTS)) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the sorted rows of each relation (FINGERPRINTS names their columns)."""
    result = {}
    with connect(url) as conn:
        for relation in relations:
            columns = FINGERPRINTS[relation]
            row = conn.execute(
                f"select count(*), coalesce(md5(string_agg(t::text, '|' order by t::text)), '')"
                f" from (select {columns} from {relation}) t"
            ).fetchone()
            result[relation] = (row[0], row[1])
    return result


def rankings(url: str, users: list[int]) -> dict[int, list[int]]:
    with connect(url) as conn:
        return {
            user: [row[0] for row in conn.execute("select post_id from ml.recommend_posts(%s, %s)", (user, COUNT))]
            for user in users
        }


def leftovers(url: str) -> list[str]:
    with connect(url) as conn:
        return [row[0] for row in conn.execute(LEFTOVERS_SQL)]


def dbt_command(work_dir: Path, *args: str) -> list[str]:
    return [
        DBT_EXECUTABLE,
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(work_dir / "target"),
        "--log-path",
        str(work_dir / "logs"),
    ]


def start_dbt(url: str, work_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **dbt_env(url)}
    return subprocess.Popen(
        dbt_command(work_dir, *args), cwd=DBT_PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def run_dbt(url: str, work_dir: Path, *args: str) -> None:
    process = start_dbt(url, work_dir, *args)
    output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{output.decode(errors='replace')[-4000:]}")


def embed_every_mart_row(url: str) -> None:
    """A full rewrite of both embedding tables: each id's vector is seeded by the id, so it never changes."""
    with connect(url) as conn:
        ids = {kind: [row[0] for row in conn.execute(f"select {kind}_id from marts.{kind}_features")] for kind in KINDS}
    for kind, kind_ids in ids.items():
        vectors = np.stack([np.random.default_rng(i).standard_normal(DIM) for i in kind_ids]).astype(np.float32)
        write_embeddings(url, kind, np.array(kind_ids), vectors, MODEL_VERSION, mode="full")


def full_refresh(url: str, work_dir: Path) -> None:
    run_dbt(url, work_dir, "run", "--full-refresh", "--select", "marts")
    embed_every_mart_row(url)


def start_step(step: str, url: str, landing: Path | None = None) -> subprocess.Popen[bytes]:
    """This script as a child process running one write step (killed mid-write by the probes)."""
    env = {**os.environ, URL_ENV: url, LANDING_ENV: str(landing or "")}
    return subprocess.Popen(
        [sys.executable, __file__, "--step", step], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait_for(url: str, condition: str, process: subprocess.Popen[bytes]) -> bool:
    """Poll `condition` (a boolean SQL expression) until it holds; False when the process ended first."""
    with connect(url, autocommit=True) as conn:
        while process.poll() is None:
            if conn.execute(f"select {condition}").fetchone()[0]:
                return True
            time.sleep(POLL_SECONDS)
    return False


def active_query_like(pattern: str) -> str:
    return (
        "exists (select from pg_stat_activity where state = 'active' and pid <> pg_backend_pid()"
        f" and query like '{pattern}')"
    )


def files_in_ledger_over(count: int) -> str:
    return f"(select count(*) from raw_mixpanel.loaded_files) > {count}"


def ledger_count(url: str) -> int:
    with connect(url) as conn:
        return conn.execute("select count(*) from raw_mixpanel.loaded_files").fetchone()[0]


def files_half_in(url: str) -> list[str]:
    """Files whose rows in raw_mixpanel.events differ from the ledger's `loaded` (a file half in)."""
    with connect(url) as conn:
        return [
            row[0]
            for row in conn.execute(
                "select coalesce(l.source_file, e.source_file) from raw_mixpanel.loaded_files l"
                " full join (select source_file, count(*) n from raw_mixpanel.events group by 1) e"
                " on e.source_file = l.source_file where coalesce(l.loaded, -1) <> coalesce(e.n, -1)"
            )
        ]


def kill_during(
    probe: Probe,
    process: subprocess.Popen[bytes],
    url: str,
    condition: str,
    kill: Callable[[], None],
) -> bool:
    """Kill (the server or the process) once `condition` holds while the process runs; wait for the process."""
    reached = wait_for(url, condition, process)
    if reached:
        kill()
    process.communicate()
    probe.expect(reached, f"the kill point ({condition}) was not reached before the step ended")
    probe.expect(not reached or process.returncode != 0, "the killed step reported success")
    return reached


def compare(probe: Probe, url: str, before: dict, users: list[int], ranked: dict[int, list[int]], when: str) -> None:
    after = fingerprint(url)
    for relation, value in before.items():
        count, _ = after[relation]
        probe.expect(after[relation] == value, f"{when}: {relation} changed ({value[0]} rows before, {count} after)")
    probe.expect(rankings(url, users) == ranked, f"{when}: rankings of the sampled users changed")
    left = leftovers(url)
    probe.expect(not left, f"{when}: relations left behind: {left}")


def serve_under_refreshes(url: str, work_dir: Path, users: list[int], clients: int, seconds: float) -> Probe:
    """`clients` threads call ml.recommend_posts while full refreshes run back to back for `seconds` (at least 2)."""
    probe = Probe(f"{clients} clients x {seconds:.0f} s across full refreshes")
    stop = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    empty = 0

    def client(seed: int) -> None:
        nonlocal empty
        rng = np.random.default_rng(seed)
        with connect(url, autocommit=True) as conn:
            while not stop.is_set():
                user = int(rng.choice(users))
                started = time.perf_counter()
                try:
                    rows = conn.execute("select post_id from ml.recommend_posts(%s, %s)", (user, COUNT)).fetchall()
                except Exception as error:  # every error counts, whatever its kind
                    with lock:
                        errors.append(" ".join(str(error).split())[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    empty += not rows

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    refreshes = 0
    try:
        while refreshes < 2 or time.perf_counter() - started < seconds:
            full_refresh(url, work_dir)
            refreshes += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - started
    calls = len(latencies) + len(errors)
    p50, p95 = (np.percentile(latencies, [50, 95]) * 1000) if latencies else (float("nan"),) * 2
    probe.detail = (
        f"{refreshes} full refreshes in {wall:.0f} s; {calls:,} calls, {len(errors)} errors, {empty} empty;"
        f" p50 {p50:.0f} ms, p95 {p95:.0f} ms"
    )
    probe.expect(calls > 0, "no call completed")
    probe.expect(not errors, f"{len(errors)} errors, first: {errors[:1]}")
    probe.expect(empty == 0, f"{empty} calls returned no rows")
    return probe


def child_step(step: str) -> None:
    url = os.environ[URL_ENV]
    if step == "embed":
        embed_every_mart_row(url)
    elif step == "load":
        load_landing_folder(url, Path(os.environ[LANDING_ENV]))


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--posts", type=int, default=800)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step", choices=["embed", "load"], help=argparse.SUPPRESS)  # a child process's step
    args = parser.parse_args()
    if args.step:
        child_step(args.step)
        return

    scratch = Path(tempfile.mkdtemp(prefix="teamu-crash-"))
    db = Throwaway(scratch / "pgdata")
    print(f"throwaway server: port {db.info.port}, data directory {db.pgdata}")
    try:
        probes, kills, server_kills = run_probes(db, scratch, args)
    finally:
        db.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    failures = [f"{probe.name}: {failure}" for probe in probes for failure in probe.failures]
    if failures:
        print(f"crashes: {len(failures)} failures:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(
        f"crashes: {kills} kills survived ({server_kills} of Postgres, {kills - server_kills} of the writing process),"
        " rows lost 0, duplicated 0;"
    )
    print(f"  {probes[-1].detail}")


def run_probes(db: Throwaway, scratch: Path, args: argparse.Namespace) -> tuple[list[Probe], int, int]:
    started = time.perf_counter()
    url = db.app_url
    bootstrap.prepare_app_database(url)
    dataset = generate(SyntheticConfig(users=args.users, posts=args.posts, days=args.days))
    write_supabase(url, dataset)
    exported = scratch / "exported"
    write_mixpanel_files(dataset, exported)
    # The first two thirds of the days land before the world is built; the rest arrive during the probes, in two
    # batches (Postgres killed during the first's load, the loader process during the second's).
    names = sorted(path.name for path in exported.glob("*.jsonl"))
    first_batch, second_batch = names[len(names) * 2 // 3 :][::2], names[len(names) * 2 // 3 :][1::2]
    landing = scratch / "landing"
    landing.mkdir()
    for name in names[: len(names) * 2 // 3]:
        shutil.copy2(exported / name, landing / name)
    # The control: the same files, loaded once without any kill, in a database of their own.
    control_url = with_database(url, "crash_control")
    bootstrap.prepare_server(url, "crash_control")
    bootstrap.prepare_app_database(control_url)
    load_landing_folder(control_url, exported)
    load_landing_folder(url, landing)
    work_dir = scratch / "dbt"
    run_dbt(url, work_dir, "build")
    install_serving_functions(url)
    embed_every_mart_row(url)
    with connect(url) as conn:
        candidates = [row[0] for row in conn.execute("select user_id from marts.user_features order by user_id")]
    users = [int(u) for u in np.random.default_rng(0).choice(candidates, SAMPLED_USERS, replace=False)]
    before, ranked = fingerprint(url), rankings(url, users)
    print(
        f"world: {before['marts.user_features'][0]:,} users, {before['marts.post_features'][0]:,} posts, "
        f"{before['marts.interactions'][0]:,} interactions, {before['raw_mixpanel.events'][0]:,} events "
        f"({time.perf_counter() - started:.0f} s to build)"
    )
    empty = [user for user, posts in ranked.items() if not posts]
    setup = Probe("setup")
    setup.expect(not empty, f"sampled users with no recommendations before any kill: {empty}")
    probes = [setup]
    kills = server_kills = 0

    def done(probe: Probe) -> None:
        probes.append(probe)
        status = "ok" if not probe.failures else "FAILED"
        print(f"{probe.name:<44} {status:<7} {probe.detail}", flush=True)

    def server_kill_probe(
        name: str, process: subprocess.Popen[bytes], condition: str, rerun: Callable[[], None]
    ) -> Probe:
        nonlocal url, kills, server_kills
        probe = Probe(name)
        if kill_during(probe, process, url, condition, db.kill):
            kills += 1
            server_kills += 1
            url = db.restart()
            compare(probe, url, before, users, ranked, "after the restart")
            rerun()
            compare(probe, url, before, users, ranked, "after the rerun")
        return probe

    # 1-2. Postgres killed during the full refresh: in the marts' rebuild, then in the embedding tables' rewrite.
    done(
        server_kill_probe(
            "Postgres killed: marts full refresh",
            start_dbt(url, work_dir, "run", "--full-refresh", "--select", "marts"),
            active_query_like("%__dbt_tmp%"),
            lambda: full_refresh(url, work_dir),
        )
    )
    done(
        server_kill_probe(
            "Postgres killed: embedding rewrite",
            start_step("embed", url),
            active_query_like("%_embeddings_staged%"),
            lambda: embed_every_mart_row(url),
        )
    )
    # 3-4. The writing process killed mid-write; Postgres stays up and rolls its transaction back.
    for name, start, condition, rerun in (
        (
            "dbt process killed: marts full refresh",
            lambda: start_dbt(url, work_dir, "run", "--full-refresh", "--select", "marts"),
            active_query_like("%__dbt_tmp%"),
            lambda: full_refresh(url, work_dir),
        ),
        (
            "writer process killed: embeddings",
            lambda: start_step("embed", url),
            active_query_like("%_embeddings_staged%"),
            lambda: embed_every_mart_row(url),
        ),
    ):
        probe = Probe(name)
        process = start()
        if kill_during(probe, process, url, condition, process.kill):
            kills += 1
            compare(probe, url, before, users, ranked, "after the kill")
            rerun()
            compare(probe, url, before, users, ranked, "after the rerun")
        done(probe)

    # 5-6. Loads: Postgres killed once the first new file committed, then the loader process likewise.
    for batch, killer in ((first_batch, "Postgres"), (second_batch, "loader process")):
        probe = Probe(f"{killer} killed: load of {len(batch)} files")
        for name in batch:
            shutil.copy2(exported / name, landing / name)
        in_ledger = ledger_count(url)
        process = start_step("load", url, landing)
        kill = db.kill if killer == "Postgres" else process.kill
        if kill_during(probe, process, url, files_in_ledger_over(in_ledger), kill):
            kills += 1
            if killer == "Postgres":
                server_kills += 1
                url = db.restart()
            half_in = files_half_in(url)
            probe.expect(not half_in, f"after the kill: files whose rows differ from their ledger: {half_in}")
            probe.detail = f"{ledger_count(url) - in_ledger} of {len(batch)} files in when killed"
            folder = load_landing_folder(url, landing)
            probe.expect(not folder.failed and not folder.refused, f"rerun: {folder.failed} {folder.refused}")
        done(probe)
    loads = Probe("events and ledger against the control load")
    control_url = with_database(url, "crash_control")  # the port may have changed with a restart
    raw = ("raw_mixpanel.events", "raw_mixpanel.loaded_files")
    ours, control = fingerprint(url, raw), fingerprint(control_url, raw)
    for relation in raw:
        loads.expect(
            ours[relation] == control[relation],
            f"{relation}: {ours[relation][0]} rows, the control load {control[relation][0]} (or their rows differ)",
        )
    loads.detail = f"{ours['raw_mixpanel.events'][0]:,} events, as the control load"
    loads.expect(not files_half_in(url), "a file's rows differ from its ledger")
    done(loads)

    # 7. Serving under full refreshes (of the marts with the new events in them).
    done(serve_under_refreshes(url, work_dir, users, args.clients, args.seconds))
    return probes, kills, server_kills


if __name__ == "__main__":
    main()
