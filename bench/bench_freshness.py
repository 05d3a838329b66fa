"""Freshness: how long until a new interaction shows in that user's ml.recommend_posts, sensor wait included.

Runs against the project's own instance after `make demo` (a promoted model, marts and embeddings must exist).
Starts `dagster-daemon` (which ticks new_interactions_sensor and launches incremental_refresh runs), then for
each trial waits a random offset, inserts an upvote by a user on the post currently ranked first for them, and
polls until (a) that post is gone from the user's ml.recommend_posts (engaged posts are excluded once the
interaction reaches marts.interactions) and (b) the user's embedding has been rewritten after the insert (the
recommendations now come from the user's new history). The figure is (b), which is never earlier than (a).
Each trial also prints where the time went, from the run's records in the Dagster instance: insert to run
created (sensor tick), created to started (queue and launch of the run process), and each step.
Baseline in the same run: the poll loop's own round trip (a recommend_posts call).

With --realtime, `teamu realtime` (the online updater, teamu_assets/realtime) runs beside the daemon, and each
trial measures (a) insert -> the user's embedding rewritten and the post gone from ml.recommend_posts, polled
every 10 ms on one connection, then (b) the sensor path's figure in the same run: insert -> marts.user_features
holds the same features as the updater computed (the incremental_refresh run's dbt step done). The last line is
`realtime p50_s=<x> p95_s=<y>`, for (a). The updater is installed for the run and removed afterwards if it
was not installed before.

    .venv/bin/python bench/bench_freshness.py --trials 10
    .venv/bin/python bench/bench_freshness.py --realtime --trials 20
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psycopg
from dagster import DagsterInstance, RunsFilter

from teamu_assets.db.connection import connect, resolve_url, with_database
from teamu_assets.settings import PROJECT_ROOT, Settings

POLL_SECONDS = 0.25
REALTIME_POLL_SECONDS = 0.01
TRIAL_TIMEOUT_SECONDS = 120
# The updater's first batch waits for TensorFlow's import and the tower's load.
UPDATER_START_TIMEOUT_SECONDS = 300
LIVE_FUNCTION = "marts.user_features_live(bigint[])"


def top_post(url: str, user_id: int) -> int | None:
    with connect(url) as conn:
        row = conn.execute("select post_id from ml.recommend_posts(%s, 20) limit 1", (user_id,)).fetchone()
    return None if row is None else row[0]


def still_recommended(url: str, user_id: int, post_id: int) -> bool:
    with connect(url) as conn:
        rows = conn.execute("select post_id from ml.recommend_posts(%s, 20)", (user_id,)).fetchall()
    return post_id in {row[0] for row in rows}


def insert_upvote(url: str, user_id: int, post_id: int) -> datetime:
    """Inserts the vote and returns the database's clock at the insert."""
    with connect(url) as conn:
        return conn.execute(
            "insert into raw_supabase.votes (vote_id, post_id, user_id, value, created_at) "
            "select coalesce(max(vote_id), 0) + 1, %s, %s, 1, now() from raw_supabase.votes returning created_at",
            (post_id, user_id),
        ).fetchone()[0]


def reembedded_since(url: str, user_id: int, since: datetime) -> bool:
    with connect(url) as conn:
        row = conn.execute("select updated_at from ml.user_embeddings where user_id = %s", (user_id,)).fetchone()
    return row is not None and row[0] >= since


def last_run_breakdown(instance: DagsterInstance, inserted_at: float) -> str:
    """Where the time of the newest incremental_refresh run went, from the instance's run and step records."""
    records = instance.get_run_records(RunsFilter(job_name="incremental_refresh"), limit=1)
    if not records:
        return "no run"
    record = records[0]
    started, ended = record.start_time, record.end_time
    parts = [f"sensor+enqueue {record.create_timestamp.timestamp() - inserted_at:4.1f} s"]
    if started is not None:
        parts.append(f"queue+launch {started - record.create_timestamp.timestamp():4.1f} s")
    for step in instance.get_run_step_stats(record.dagster_run.run_id):
        if step.start_time is not None and step.end_time is not None:
            parts.append(f"{step.step_key} {step.end_time - step.start_time:4.1f} s")
    if started is not None and ended is not None:
        parts.append(f"run {ended - started:4.1f} s")
    return ", ".join(parts)


def runs_in_flight(url: str) -> int:
    dagster_url = with_database(url, "dagster")
    with connect(dagster_url) as conn:
        return conn.execute("select count(*) from runs where status in ('QUEUED', 'STARTING', 'STARTED')").fetchone()[0]


def wait_until_idle(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while runs_in_flight(url) and time.monotonic() < deadline:
        time.sleep(1)


def poll_floor(url: str, user_id: int, post_id: int, samples: int = 20) -> float:
    started = time.monotonic()
    for _ in range(samples):
        still_recommended(url, user_id, post_id)
    return (time.monotonic() - started) / samples


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def online_done(conn: psycopg.Connection, user_id: int, post_id: int, inserted_at: datetime) -> bool:
    """Whether the user's vector was rewritten after the insert and the post is out of their recommendations."""
    return conn.execute(
        "select coalesce((select updated_at >= %s from ml.user_embeddings where user_id = %s), false)"
        " and not exists (select 1 from ml.recommend_posts(%s, 20) r where r.post_id = %s)",
        (inserted_at, user_id, user_id, post_id),
    ).fetchone()[0]


def mart_caught_up(conn: psycopg.Connection, user_id: int) -> bool:
    """Whether marts.user_features holds the features the updater computed for the user (the batch path's dbt)."""
    row = conn.execute(
        "select m.feature_hash = s.feature_hash from marts.user_features m"
        " join ml.user_online_state s on s.user_id = m.user_id where m.user_id = %s",
        (user_id,),
    ).fetchone()
    return bool(row and row[0])


def start_updater(log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "teamu"), "realtime"],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def realtime_trials(
    url: str, users: list[int], trials: int, rng: random.Random, updater: subprocess.Popen[bytes], log_path: Path
) -> tuple[list[float], list[float]]:
    """(online latencies, batch path latencies) of the trials; see the module docstring."""
    online: list[float] = []
    batch: list[float] = []
    with connect(url, autocommit=True) as conn:
        # Votes before the updater's triggers exist would reach the user through the sensor path only.
        while not conn.execute("select count(*) from pg_trigger where tgname = 'teamu_online_insert'").fetchone()[0]:
            if updater.poll() is not None:
                raise RuntimeError(f"the updater exited; its log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        for trial in range(-1, trials):  # trial -1 warms up: the updater loads its tower first
            user = rng.choice(users)
            post = top_post(url, user)
            if post is None:
                continue
            time.sleep(rng.uniform(0, 1))
            inserted = time.monotonic()
            inserted_at = insert_upvote(url, user, post)
            timeout = UPDATER_START_TIMEOUT_SECONDS if trial < 0 else TRIAL_TIMEOUT_SECONDS
            while not online_done(conn, user, post, inserted_at):
                if updater.poll() is not None or time.monotonic() - inserted > timeout:
                    raise RuntimeError(f"the updater did not apply the vote; its log:\n{log_path.read_text()[-3000:]}")
                time.sleep(REALTIME_POLL_SECONDS)
            online_after = time.monotonic() - inserted
            while not mart_caught_up(conn, user) and time.monotonic() - inserted < TRIAL_TIMEOUT_SECONDS:
                time.sleep(POLL_SECONDS)
            batch_after = time.monotonic() - inserted
            wait_until_idle(url)
            if trial < 0:
                print(f"warm-up: user {user} post {post}: online after {online_after:.3f} s")
                continue
            online.append(online_after)
            batch.append(batch_after)
            print(
                f"trial {trial + 1:>2}: user {user} post {post}: re-embedded and excluded online after "
                f"{online_after:.3f} s; marts.user_features caught up after {batch_after:5.1f} s"
            )
    return online, batch


def ensure_live_function(url: str) -> None:
    """Marts built before the updater lack marts.user_features_live (the mart's post-hook creates it)."""
    with connect(url) as conn:
        exists = conn.execute("select to_regprocedure(%s) is not null", (LIVE_FUNCTION,)).fetchone()[0]
    if not exists:
        print(f"{LIVE_FUNCTION} missing: dbt run --select user_features")
        teamu = str(Path(sys.executable).parent / "teamu")
        subprocess.run([teamu, "dbt", "run", "--select", "user_features", "--quiet"], check=True)


def updater_installed(url: str) -> bool:
    with connect(url) as conn:
        return conn.execute("select to_regclass('ml.online_queue') is not null").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--realtime", action="store_true", help="measure the online updater beside the daemon")
    args = parser.parse_args()

    settings = Settings.from_env()
    url = resolve_url(settings.database_url, settings.pgdata)
    rng = random.Random(args.seed)
    with connect(url) as conn:
        users = [row[0] for row in conn.execute("select user_id from ml.user_embeddings order by user_id")]
    env = {
        **os.environ,
        "DAGSTER_HOME": str(settings.dagster_home),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    # A SIGTERM (e.g. from `timeout`) must still run the finally below, or the daemon outlives the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    excluded: list[float] = []
    latencies: list[float] = []
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    updater = None
    was_installed = updater_installed(url)
    try:
        time.sleep(15)  # the daemon's first sensor tick records the starting cursor
        wait_until_idle(url)
        if args.realtime:
            ensure_live_function(url)
            log_path = settings.home / "logs" / "bench_freshness_realtime.log"
            updater = start_updater(log_path)
            online, batch = realtime_trials(url, users, args.trials, rng, updater, log_path)
            report_realtime(online, batch)
            return 0
        with DagsterInstance.get() as instance:
            for trial in range(args.trials):
                user = rng.choice(users)
                post = top_post(url, user)
                if post is None:
                    continue
                time.sleep(rng.uniform(0, 5))  # a random offset to the sensor ticks
                inserted, inserted_wall = time.monotonic(), time.time()
                inserted_at = insert_upvote(url, user, post)
                gone_after = None
                while time.monotonic() - inserted < TRIAL_TIMEOUT_SECONDS:
                    if gone_after is None and not still_recommended(url, user, post):
                        gone_after = time.monotonic() - inserted
                    if gone_after is not None and reembedded_since(url, user, inserted_at):
                        break
                    time.sleep(POLL_SECONDS)
                latency = time.monotonic() - inserted
                if gone_after is None:
                    print(f"trial {trial + 1:>2}: user {user} post {post}: still recommended after {latency:.0f} s")
                    continue
                excluded.append(gone_after)
                latencies.append(latency)
                wait_until_idle(url)
                print(
                    f"trial {trial + 1:>2}: user {user} post {post}: excluded after {gone_after:5.1f} s, "
                    f"re-embedded after {latency:5.1f} s ({last_run_breakdown(instance, inserted_wall)})"
                )
        floor = poll_floor(url, users[0], 0)
    finally:
        if updater is not None:
            updater.send_signal(signal.SIGTERM)  # it finishes the batch in hand
            updater.wait(timeout=60)
            if not was_installed:
                # Quietly: the figure's line must stay the last one the bench prints.
                teamu = str(Path(sys.executable).parent / "teamu")
                subprocess.run([teamu, "realtime", "--uninstall"], check=True, stdout=subprocess.DEVNULL)
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
    if not latencies:
        print("no trials ran")
        return 1
    for name, values in (("post excluded", excluded), ("user re-embedded", latencies)):
        print(
            f"{name} over {len(values)} trials: p50 {statistics.median(values):.1f} s, "
            f"p95 {percentile(values, 0.95):.1f} s, max {max(values):.1f} s (target p95 <= 20 s)"
        )
    ratio = statistics.median(latencies) / floor
    print(f"baseline: one recommend_posts poll {floor * 1000:.1f} ms; ratio p50/poll {ratio:.0f}x")
    return 0


def report_realtime(online: list[float], batch: list[float]) -> None:
    if not online:
        raise RuntimeError("no trials ran")
    print(
        f"sensor path (marts.user_features caught up) over {len(batch)} trials: p50 {statistics.median(batch):.1f} s, "
        f"p95 {percentile(batch, 0.95):.1f} s, max {max(batch):.1f} s"
    )
    print(
        f"online (re-embedded and excluded) over {len(online)} trials: p50 {statistics.median(online):.3f} s, "
        f"p95 {percentile(online, 0.95):.3f} s, max {max(online):.3f} s (target p95 <= 2 s)"
    )
    print(f"realtime p50_s={statistics.median(online):.3f} p95_s={percentile(online, 0.95):.3f}")


if __name__ == "__main__":
    sys.exit(main())
