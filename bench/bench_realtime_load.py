"""Sustained load on the online updater: --rate interactions/s for --seconds from --users users.

Builds, in a scratch database of its own on the running server and a temporary TEAMU_HOME: the synthetic world
(teamu_assets.synthetic, the demo's defaults), its Mixpanel files ingested, a full `dbt build`, the project's
promoted model (a copy; nothing is trained) registered, promoted and written as full user and post embeddings.
Then starts `teamu realtime` on it (its own process, as deployed) and, after a warm-up vote, writes the load:
each interaction its own transaction, as the app writes them, alternately an upvote (raw_supabase.votes) and a
Mixpanel view (raw_mixpanel.events), each by the next of the users on a random post by someone else, paced to
the rate. Meanwhile a poller reads the users' ml.user_embeddings.updated_at every 20 ms, and the updater's RSS
(/proc/<pid>/status) is sampled every second.

Reported:
* freshness of every interaction: from just before its insert to the first poll that sees its user's vector
  written by a batch that began after the insert had committed (so the batch's features hold it), p50/p95/max;
* every interaction reflected: once the queue is empty, each user's upvoted/viewed counts in
  marts.user_features_live equal the mart's before the load plus what was written, the updater's applied_rows
  grew by exactly the statements written, and each stored vector equals embed_users over the live features;
* the updater's RSS at the load's start, middle and end, and its peak.
The scratch database is dropped at the end unless --keep.

    .venv/bin/python bench/bench_realtime_load.py [--rate 200 --seconds 60 --users 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from teamu_assets.db import bootstrap, features, registry
from teamu_assets.db.connection import connect, dbt_env, resolve_url, scratch_database
from teamu_assets.db.embeddings import write_embeddings
from teamu_assets.db.recommend import install_serving_functions
from teamu_assets.ingest import load_landing_folder
from teamu_assets.settings import DBT_PROJECT_DIR, PROJECT_ROOT, Settings
from teamu_assets.synthetic import SyntheticConfig, generate, write_mixpanel_files, write_supabase

BIN = Path(sys.executable).parent
POLL_SECONDS = 0.02
READY_TIMEOUT_SECONDS = 300
DRAIN_TIMEOUT_SECONDS = 300


def build_world(url: str, home: Path, main_url: str, args: argparse.Namespace) -> Path:
    """The world, dbt's marts and the project's promoted model serving it; returns the model's copy."""
    from teamu_assets.model.train import embed_posts, embed_users, read_model_config

    promoted = registry.promoted_model(main_url)
    if promoted is None:
        raise SystemExit("no promoted model in the project's database: run `make demo` first")
    bootstrap.prepare_app_database(url)
    dataset = generate(SyntheticConfig(users=args.world_users, posts=args.world_posts, days=args.days, seed=7))
    write_supabase(url, dataset)
    write_mixpanel_files(dataset, home / "landing", seed=7)
    load_landing_folder(url, home / "landing")
    subprocess.run(
        [
            str(BIN / "dbt"),
            "build",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(home / "dbt"),
            "--log-path",
            str(home / "dbt"),
        ],
        env={**os.environ, **dbt_env(url)},
        check=True,
    )
    model_dir = home / "model"
    shutil.copytree(promoted.artifact_path, model_dir)
    registry.register_model_version(
        url, promoted.model_version, dict(read_model_config(model_dir)["params"]), str(model_dir)
    )
    with connect(url) as conn:
        conn.execute("update ml.model_versions set promoted = true")
    version = promoted.model_version
    clock = features.data_clock(url)
    write_embeddings(
        url, "post", *embed_posts(model_dir, features.read_post_features(url), as_of=clock), version, mode="full"
    )
    write_embeddings(url, "user", *embed_users(model_dir, features.read_user_features(url)), version, mode="full")
    install_serving_functions(url)
    return model_dir


@dataclass
class Written:
    """What the load wrote: per interaction (user, monotonic time before the insert, wall time after its commit)."""

    interactions: list[tuple[int, float, float]] = field(default_factory=list)
    upvotes: Counter[int] = field(default_factory=Counter)
    views: Counter[int] = field(default_factory=Counter)


def write_load(url: str, users: list[int], posts: np.ndarray, args: argparse.Namespace) -> Written:
    rng = np.random.default_rng(1)
    written = Written()
    total = args.rate * args.seconds
    with connect(url, autocommit=True) as conn:
        next_vote = conn.execute("select coalesce(max(vote_id), 0) + 1 from raw_supabase.votes").fetchone()[0]
        started = time.monotonic()
        for i in range(total):
            time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            user = users[i % len(users)]
            post = int(posts[rng.integers(len(posts))])
            before = time.monotonic()
            if i % 2 == 0:
                conn.execute(
                    "insert into raw_supabase.votes (vote_id, post_id, user_id, value, created_at)"
                    " values (%s, %s, %s, 1, now())",
                    (next_vote, post, user),
                )
                next_vote += 1
                written.upvotes[user] += 1
            else:
                properties = {"post_id": post, "duration_ms": 1500, "time": time.time(), "distinct_id": str(user)}
                conn.execute(
                    "insert into raw_mixpanel.events (insert_id, event, distinct_id, event_time, properties,"
                    " source_file) values (%s, 'Post Viewed', %s, now(), %s, 'bench_realtime_load')",
                    (uuid.uuid4().hex, str(user), Jsonb(properties)),
                )
                written.views[user] += 1
            written.interactions.append((user, before, time.time()))
    print(f"wrote {total} interactions in {time.monotonic() - started:.1f} s ({args.rate}/s asked)")
    return written


def poll_writes(url: str, users: list[int], stop: threading.Event, seen: dict[int, list[tuple[float, float]]]) -> None:
    """Record, per user, (monotonic time of the poll, epoch of the vector's updated_at) whenever it changes."""
    with connect(url, autocommit=True) as conn:
        last: dict[int, float] = {}
        while not stop.is_set():
            rows = conn.execute(
                "select user_id, extract(epoch from updated_at) from ml.user_embeddings where user_id = any(%s)",
                (users,),
            ).fetchall()
            now = time.monotonic()
            for user, written_at in rows:
                if last.get(user) != written_at:
                    last[user] = written_at
                    seen.setdefault(user, []).append((now, float(written_at)))
            time.sleep(POLL_SECONDS)


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        samples.append((time.monotonic(), kib))
        time.sleep(1)


def freshness(written: Written, seen: dict[int, list[tuple[float, float]]]) -> list[float]:
    """Per interaction: the first poll that saw its user's vector written by a batch begun after its commit."""
    latencies = []
    for user, before, committed_at in written.interactions:
        polls = seen.get(user, [])
        first = next((polled for polled, written_at in polls if written_at >= committed_at), None)
        latencies.append(float("inf") if first is None else first - before)
    return latencies


def check_everything_reflected(
    url: str, model_dir: Path, users: list[int], baseline: dict[int, tuple[int, int]], written: Written
) -> list[str]:
    from teamu_assets.model.train import embed_users
    from teamu_assets.realtime.updater import read_live_user_features

    problems = []
    with connect(url) as conn:
        register_vector(conn)
        live = read_live_user_features(conn, users).frame.drop(columns=["member"])
        stored = dict(
            conn.execute("select user_id, embedding from ml.user_embeddings where user_id = any(%s)", (users,))
        )
    for row in live.itertuples():
        expected = (
            baseline[row.user_id][0] + written.upvotes[row.user_id],
            baseline[row.user_id][1] + written.views[row.user_id],
        )
        if (row.upvoted_count, row.viewed_count) != expected:
            problems.append(
                f"user {row.user_id}: (upvotes, views) {(row.upvoted_count, row.viewed_count)}, expected {expected}"
            )
    ids, vectors = embed_users(model_dir, live)
    worst = max(
        float(np.abs(stored[user].to_numpy() - vector).max())
        for user, vector in zip(ids.tolist(), vectors, strict=True)
    )
    if worst > 1e-5:
        problems.append(f"a stored vector differs from the live features' by {worst:.2e}")
    print(
        f"every interaction reflected: counts checked for {len(live)} users; stored vs recomputed vectors,"
        f" max |diff| {worst:.1e}"
    )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200, help="interactions per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--users", type=int, default=50, help="users the load comes from")
    parser.add_argument("--world-users", type=int, default=2000)
    parser.add_argument("--world-posts", type=int, default=1500)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: no cuInit noise
    settings = Settings.from_env()
    main_url = resolve_url(settings.database_url, settings.pgdata)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop the updater, drop the database
    with (
        tempfile.TemporaryDirectory(prefix="teamu-realtime-load-") as tmp,
        scratch_database(main_url, "teamu_bench_realtime", keep=args.keep) as url,
    ):
        home = Path(tmp)
        started = time.perf_counter()
        model_dir = build_world(url, home, main_url, args)
        print(f"world built in {time.perf_counter() - started:.0f} s: {url.rsplit('/', 1)[1]}")
        with connect(url) as conn:
            chosen = conn.execute(
                "select user_id from ml.user_embeddings order by random() limit %s", (args.users + 1,)
            )
            # The last one only warms the updater up, so the load's users' counts start from the mart's.
            *users, warm_up_user = [row[0] for row in chosen]
            posts = np.array(
                [
                    row[0]
                    for row in conn.execute("select post_id from raw_supabase.posts where user_id <> all(%s)", (users,))
                ]
            )
            baseline = {
                user: (upvoted, viewed)
                for user, upvoted, viewed in conn.execute(
                    "select user_id, upvoted_count, viewed_count from marts.user_features where user_id = any(%s)",
                    (users,),
                )
            }
        log_path = home / "realtime.log"
        with log_path.open("wb") as log:
            updater = subprocess.Popen(
                [str(BIN / "teamu"), "realtime", "--report-seconds", "10"],
                env={**os.environ, "TEAMU_DATABASE_URL": url, "TEAMU_HOME": str(home)},
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stop = threading.Event()
        try:
            wait_until_applied(url, updater, log_path, READY_TIMEOUT_SECONDS, warm_up=(warm_up_user, int(posts[0])))
            applied_before = scalar(url, "select applied_rows from ml.online_cursor")
            seen: dict[int, list[tuple[float, float]]] = {}
            rss: list[tuple[float, int]] = []
            threads = [
                threading.Thread(target=poll_writes, args=(url, users, stop, seen)),
                threading.Thread(target=sample_rss, args=(updater.pid, stop, rss)),
            ]
            for thread in threads:
                thread.start()
            load_started = time.monotonic()
            written = write_load(url, users, posts, args)
            wait_until_applied(url, updater, log_path, DRAIN_TIMEOUT_SECONDS)
            drained = time.monotonic() - load_started
            time.sleep(0.2)  # the poller's last look
            stop.set()
            for thread in threads:
                thread.join()
            applied = scalar(url, "select applied_rows from ml.online_cursor") - applied_before
        finally:
            stop.set()
            updater.send_signal(signal.SIGTERM)
            updater.wait(timeout=60)
        reports = [line for line in log_path.read_text().splitlines() if "applied" in line]
        print("\n".join(["the updater's log:", *reports]))
        latencies = freshness(written, seen)
        problems = check_everything_reflected(url, model_dir, users, baseline, written)
        statements = len(written.interactions)
        if applied != statements:
            problems.append(f"the updater applied {applied} queue rows for {statements} statements")
        print(
            f"queue drained {drained:.1f} s after the load began;"
            f" applied {applied} queue rows for {statements} statements"
        )
        during = [kib for at, kib in rss if at >= load_started]
        middle = during[len(during) // 2]
        print(
            f"updater RSS: {during[0] / 1024:.0f} MiB at the load's start, {middle / 1024:.0f} MiB in the middle, "
            f"{during[-1] / 1024:.0f} MiB at the end, peak {max(during) / 1024:.0f} MiB"
        )
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(
            f"freshness over {len(latencies)} interactions"
            f" ({args.rate}/s for {args.seconds} s from {len(users)} users):"
            f" p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s, max {ordered[-1]:.3f} s"
        )
        for problem in problems:
            print(f"PROBLEM: {problem}")
        return 1 if problems else 0


def scalar(url: str, query: str) -> int:
    with connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def wait_until_applied(
    url: str, updater: subprocess.Popen[bytes], log_path: Path, timeout: float, warm_up: tuple[int, int] | None = None
) -> None:
    """Until the queue is empty; with warm_up (user, post), first until the updater has installed its tables, then
    until it has applied that vote (its tower is loaded then)."""
    deadline = time.monotonic() + timeout

    def waiting() -> None:
        if updater.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the updater did not empty its queue; its log:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)

    if warm_up is not None:
        while not scalar(url, "select count(*) from pg_trigger where tgname = 'teamu_online_insert'"):
            waiting()
        with connect(url) as conn:
            conn.execute(
                "insert into raw_supabase.votes (vote_id, post_id, user_id, value, created_at)"
                " select max(vote_id) + 1, %s, %s, 1, now() from raw_supabase.votes",
                (warm_up[1], warm_up[0]),
            )
        while not scalar(url, "select count(*) from ml.online_cursor"):
            waiting()
    while scalar(url, "select count(*) from ml.online_queue"):
        waiting()


if __name__ == "__main__":
    sys.exit(main())
