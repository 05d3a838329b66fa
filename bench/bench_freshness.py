"""Freshness: how long until a new interaction shows in that user's ml.recommend_posts, sensor wait included.

Runs against the project's own instance after `make demo` (a promoted model, marts and embeddings must exist).
Starts `dagster-daemon` (which ticks new_interactions_sensor and launches incremental_refresh runs), then for
each trial waits a random offset, inserts an upvote by a user on the post currently ranked first for them, and
polls ml.recommend_posts until that post is gone (engaged posts are excluded once the interaction reaches
marts.interactions). Baseline in the same run: the same poll loop with no daemon reaction possible (a direct
`select 1` round trip), i.e. the measurement's own floor.

    .venv/bin/python bench/bench_freshness.py --trials 10
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from teamu_assets.db.connection import connect, resolve_url
from teamu_assets.settings import PROJECT_ROOT, Settings

POLL_SECONDS = 0.25
TRIAL_TIMEOUT_SECONDS = 120


def top_post(url: str, user_id: int) -> int | None:
    with connect(url) as conn:
        row = conn.execute("select post_id from ml.recommend_posts(%s, 20) limit 1", (user_id,)).fetchone()
    return None if row is None else row[0]


def still_recommended(url: str, user_id: int, post_id: int) -> bool:
    with connect(url) as conn:
        rows = conn.execute("select post_id from ml.recommend_posts(%s, 20)", (user_id,)).fetchall()
    return post_id in {row[0] for row in rows}


def insert_upvote(url: str, user_id: int, post_id: int) -> None:
    with connect(url) as conn:
        conn.execute(
            "insert into raw_supabase.votes (vote_id, post_id, user_id, value, created_at) "
            "select coalesce(max(vote_id), 0) + 1, %s, %s, 1, now() from raw_supabase.votes",
            (post_id, user_id),
        )


def runs_in_flight(url: str) -> int:
    dagster_url = url.rsplit("/", 1)[0] + "/dagster"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
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
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latencies: list[float] = []
    try:
        time.sleep(15)  # the daemon's first sensor tick records the starting cursor
        wait_until_idle(url)
        for trial in range(args.trials):
            user = rng.choice(users)
            post = top_post(url, user)
            if post is None:
                continue
            time.sleep(rng.uniform(0, 5))  # a random offset to the sensor ticks
            inserted = time.monotonic()
            insert_upvote(url, user, post)
            while still_recommended(url, user, post) and time.monotonic() - inserted < TRIAL_TIMEOUT_SECONDS:
                time.sleep(POLL_SECONDS)
            latency = time.monotonic() - inserted
            latencies.append(latency)
            print(f"trial {trial + 1:>2}: user {user} post {post} gone from recommendations after {latency:5.1f} s")
            wait_until_idle(url)
        floor = poll_floor(url, users[0], 0)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
    if not latencies:
        print("no trials ran")
        return 1
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"freshness over {len(latencies)} trials: p50 {statistics.median(latencies):.1f} s, p95 {p95:.1f} s, "
        f"max {ordered[-1]:.1f} s (target p95 <= 20 s)"
    )
    ratio = statistics.median(latencies) / floor
    print(f"baseline: one recommend_posts poll {floor * 1000:.1f} ms; ratio p50/poll {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
