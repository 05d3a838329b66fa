"""The online updater (teamu_assets/realtime) on a real Postgres, a small synthetic world built by dbt and a tiny
trained model: triggers queue the touched users without failing the writer; marts.user_features_live is the
next incremental refresh of marts.user_features (every column); an online vector equals the batch path's to 1e-5;
a vote reaches the user's vector and leaves their recommendations; the batch path never overwrites a newer online
vector; a batch that fails and an updater killed mid-burst lose nothing and apply nothing twice; rows queued while
no updater runs are applied when one starts; a full refresh with a new model is followed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from teamu_assets.db import bootstrap, features, registry
from teamu_assets.db.connection import connect, database_of, dbt_env
from teamu_assets.db.embeddings import write_embeddings
from teamu_assets.db.recommend import install_serving_functions
from teamu_assets.ingest.loader import load_landing_folder
from teamu_assets.realtime import updater
from teamu_assets.realtime.http import EndpointConfig, serve
from teamu_assets.settings import DBT_EXECUTABLE, DBT_PROJECT_DIR
from teamu_assets.synthetic import SyntheticConfig, generate, write_mixpanel_files, write_supabase

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
VERSION = "tt-realtime-test"
TOLERANCE = 1e-5
# marts.user_features' columns that are features (refreshed_at says when dbt computed the row).
NOT_FEATURES = {"refreshed_at"}


@dataclass(frozen=True)
class World:
    url: str
    home: Path
    model_dir: Path

    def dbt(self, *args: str) -> None:
        command = [
            DBT_EXECUTABLE,
            *args,
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(self.home / "dbt" / "target"),
            "--log-path",
            str(self.home / "dbt" / "logs"),
        ]
        result = subprocess.run(
            command, cwd=DBT_PROJECT_DIR, env={**os.environ, **dbt_env(self.url)}, capture_output=True, text=True
        )
        assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"

    def refresh_marts(self) -> None:
        """The incremental models, as the sensor's incremental_refresh runs them."""
        self.dbt("run", "--select", "config.materialized:incremental")


def _train_and_serve(url: str, home: Path) -> Path:
    """A tiny model (1 epoch, 8 dimensions), registered, promoted and served as a full refresh would."""
    from teamu_assets.model.dataset import build_training_examples, write_dataset
    from teamu_assets.model.params import TrainParams
    from teamu_assets.model.train import embed_posts, embed_users, train

    interactions = features.read_interactions(url)
    users, posts = features.read_user_features(url), features.read_post_features(url)
    start, end = interactions["occurred_at"].min(), interactions["occurred_at"].max()
    write_dataset(build_training_examples(interactions, users, posts, end - (end - start) * 0.2), home / "dataset")
    params = TrainParams(epochs=1, embedding_dim=8, feature_dim=8, hidden_units=16, batch_size=128, max_text_tokens=500)
    model_dir = home / "model"
    train(home / "dataset", users, posts, params, model_dir, log=lambda _: None)
    registry.register_model_version(url, VERSION, {}, str(model_dir))
    with connect(url) as conn:
        conn.execute("update ml.model_versions set promoted = (model_version = %s)", (VERSION,))
    clock = features.data_clock(url)
    write_embeddings(url, "post", *embed_posts(model_dir, posts, as_of=clock), VERSION, mode="full")
    write_embeddings(url, "user", *embed_users(model_dir, users), VERSION, mode="full")
    install_serving_functions(url)
    return model_dir


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("realtime")
    bootstrap.prepare_app_database(module_db_url)
    dataset = generate(SyntheticConfig(users=120, posts=80, days=20, seed=3))
    write_supabase(module_db_url, dataset)
    write_mixpanel_files(dataset, home / "landing", seed=3)
    load_landing_folder(module_db_url, home / "landing")
    world = World(module_db_url, home, home / "model")
    world.dbt("build")
    _train_and_serve(module_db_url, home)
    updater.install(module_db_url)
    return world


@pytest.fixture
def online(world: World) -> Iterator[updater.OnlineUpdater]:
    """An updater applying batches in this process; the queue is empty before and after each test."""
    applying = updater.OnlineUpdater(world.url)
    drain(applying)
    yield applying
    drain(applying)
    applying.close()


def drain(applying: updater.OnlineUpdater) -> list[updater.BatchResult]:
    results = []
    while (result := applying.apply_batch()) is not None:
        results.append(result)
    return results


def scalar(url: str, query: str, params: Any = ()) -> Any:
    with connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def insert_vote(url: str, user_id: int, post_id: int, value: int = 1) -> datetime:
    """One vote in its own transaction, as the app writes it; returns the database's time of the insert."""
    with connect(url) as conn:
        return conn.execute(
            "insert into raw_supabase.votes (vote_id, post_id, user_id, value, created_at)"
            " select coalesce(max(vote_id), 0) + 1, %s, %s, %s, now() from raw_supabase.votes returning created_at",
            (post_id, user_id, value),
        ).fetchone()[0]


def insert_view(url: str, distinct_id: str, post_id: int) -> None:
    with connect(url) as conn:
        conn.execute(
            "insert into raw_mixpanel.events (insert_id, event, distinct_id, event_time, properties, source_file)"
            " values (%s, 'Post Viewed', %s, now(), %s, 'test')",
            (uuid.uuid4().hex, distinct_id, Jsonb({"post_id": post_id, "duration_ms": 4000})),
        )


def new_post_for(url: str, user_id: int, skip: int = 0) -> int:
    """A post the user did not write and has not engaged with, in the marts or since."""
    with connect(url) as conn:
        return conn.execute(
            "select p.post_id from marts.post_features p where p.user_id <> %(user)s"
            " and not exists (select 1 from marts.interactions i where i.user_id = %(user)s and i.post_id = p.post_id)"
            " and not exists (select 1 from ml.user_online_state s where s.user_id = %(user)s"
            " and p.post_id = any(s.pending_post_ids))"
            " and not exists (select 1 from raw_supabase.votes v where v.user_id = %(user)s and v.post_id = p.post_id)"
            " order by p.post_id offset %(skip)s limit 1",
            {"user": user_id, "skip": skip},
        ).fetchone()[0]


def vectors(url: str, user_ids: list[int]) -> dict[int, np.ndarray]:
    with connect(url) as conn:
        register_vector(conn)
        rows = conn.execute(
            "select user_id, embedding from ml.user_embeddings where user_id = any(%s)", (user_ids,)
        ).fetchall()
    return {user_id: embedding.to_numpy() for user_id, embedding in rows}


def batch_vectors(world: World, user_ids: list[int]) -> dict[int, np.ndarray]:
    """The batch path's vectors: embed_users over the users' marts.user_features rows."""
    from teamu_assets.model.train import embed_users

    ids, matrix = embed_users(world.model_dir, features.read_user_features(world.url, user_ids))
    return dict(zip(ids.tolist(), matrix, strict=True))


def live_rows(url: str, user_ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    with connect(url) as conn:
        ids = user_ids or [row[0] for row in conn.execute("select user_id from marts.user_features")]
        cursor = conn.execute("select * from marts.user_features_live(%s)", (ids,))
        names = [column.name for column in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def mart_rows(url: str) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """(marts.user_features' feature columns, each user's row)."""
    with connect(url) as conn:
        cursor = conn.execute("select * from marts.user_features")
        names = [column.name for column in cursor.description]
        rows = {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
    return [name for name in names if name not in NOT_FEATURES], rows


def active_users(url: str, count: int) -> list[int]:
    with connect(url) as conn:
        return [
            row[0]
            for row in conn.execute(
                "select user_id from marts.user_features where viewed_count > 0 order by user_id limit %s", (count,)
            )
        ]


def test_triggers_queue_the_touched_users_and_never_fail_the_writer(
    world: World, online: updater.OnlineUpdater
) -> None:
    user, other = active_users(world.url, 2)
    insert_vote(world.url, user, new_post_for(world.url, user))
    insert_view(world.url, str(other), new_post_for(world.url, other))
    insert_view(world.url, "$device:abc", new_post_for(world.url, other))  # anonymous: nobody to update
    with connect(world.url) as conn:
        queued = conn.execute("select user_id, source from ml.online_queue order by seq").fetchall()
    assert queued == [(user, "votes"), (other, "events")]
    # A queue that can't be written (here: gone) costs the writer nothing; the row is in, the batch path sees it.
    with connect(world.url) as conn:
        conn.execute("alter table ml.online_queue rename to online_queue_away")
    try:
        insert_vote(world.url, user, new_post_for(world.url, user))
    finally:
        with connect(world.url) as conn:
            conn.execute("alter table ml.online_queue_away rename to online_queue")
    assert scalar(world.url, "select count(*) from ml.online_queue") == 2


def test_live_features_are_the_next_refresh_of_the_mart(world: World, online: updater.OnlineUpdater) -> None:
    """Every kind of input marts.user_features reads, then marts.user_features_live before the refresh against
    the mart after it: equal on every column, for every user."""
    voter, commenter, viewer, editor, author = active_users(world.url, 5)
    upvoted, downvoted = new_post_for(world.url, voter), new_post_for(world.url, voter, skip=1)
    insert_vote(world.url, voter, upvoted)
    insert_vote(world.url, voter, downvoted, value=-1)  # a downvote: no interaction
    insert_view(world.url, str(viewer), new_post_for(world.url, viewer))
    with connect(world.url) as conn:
        conn.execute(
            "insert into raw_supabase.comments select max(comment_id) + 1, %s, %s, ' Nice! ', now()"
            " from raw_supabase.comments",
            (new_post_for(world.url, commenter), commenter),
        )
        conn.execute("update raw_supabase.users set bio = 'New bio', updated_at = now() where user_id = %s", (editor,))
        conn.execute(
            "insert into raw_supabase.projects select max(project_id) + 1, %s, 'Robot arm', now()"
            " from raw_supabase.projects",
            (editor,),
        )
        conn.execute(
            "insert into raw_supabase.posts (post_id, user_id, title, description, created_at, updated_at)"
            " select max(post_id) + 1, %s, 'Sourdough', 'Day one', now(), now() from raw_supabase.posts",
            (author,),
        )
    before_refresh = live_rows(world.url)
    _, mart_before = mart_rows(world.url)
    changed = {
        user for user in before_refresh if before_refresh[user]["feature_hash"] != mart_before[user]["feature_hash"]
    }
    assert changed == {voter, commenter, viewer, editor, author}
    assert upvoted in before_refresh[voter]["pending_post_ids"]
    assert downvoted not in before_refresh[voter]["pending_post_ids"]
    assert before_refresh[editor]["pending_post_ids"] == []

    world.refresh_marts()
    columns, mart_after = mart_rows(world.url)
    assert [name for name in next(iter(before_refresh.values())) if name != "pending_post_ids"] == columns
    assert before_refresh.keys() == mart_after.keys()
    differing = {
        user: [name for name in columns if before_refresh[user][name] != mart_after[user][name]] for user in mart_after
    }
    assert {user: names for user, names in differing.items() if names} == {}
    assert all(row["pending_post_ids"] == [] for row in live_rows(world.url).values())


def test_the_online_vector_equals_the_batch_paths(world: World, online: updater.OnlineUpdater) -> None:
    users = active_users(world.url, 8)[5:]
    for user in users:
        insert_vote(world.url, user, new_post_for(world.url, user))
        insert_view(world.url, str(user), new_post_for(world.url, user, skip=1))
    [result] = drain(online)
    assert (result.queue_rows, result.users, result.embedded) == (2 * len(users), len(users), len(users))
    assert result.model_version == VERSION
    online_vectors = vectors(world.url, users)
    world.refresh_marts()
    batch = batch_vectors(world, users)
    for user in users:
        assert np.abs(online_vectors[user] - batch[user]).max() <= TOLERANCE
    # The online rows carry the features' hash, which the refreshed mart now has: the batch path has nothing to do.
    assert not set(users) & set(features.changed_since_embedding(world.url, "user"))


def test_a_vote_reaches_the_vector_and_leaves_the_recommendations(world: World, online: updater.OnlineUpdater) -> None:
    stop = threading.Event()
    running = threading.Thread(target=updater.run, args=(world.url, stop), kwargs={"idle_wait_seconds": 0.2})
    running.start()
    try:
        # Two users: the first call loads the tower, the second runs on the loaded one. How fast is the bench's
        # business (bench_freshness.py --realtime), not a test's: no timing assertion here.
        for user in active_users(world.url, 11)[9:]:
            with connect(world.url) as conn:
                post = conn.execute("select post_id from ml.recommend_posts(%s, 1)", (user,)).fetchone()[0]
            started = time.monotonic()
            voted_at = insert_vote(world.url, user, post)
            while time.monotonic() - started < 60:
                with connect(world.url) as conn:
                    recommended = {
                        row[0] for row in conn.execute("select post_id from ml.recommend_posts(%s)", (user,))
                    }
                    written = conn.execute(
                        "select updated_at from ml.user_embeddings where user_id = %s", (user,)
                    ).fetchone()[0]
                if post not in recommended and written >= voted_at:
                    break
                time.sleep(0.01)
            assert post not in recommended and written >= voted_at
    finally:
        stop.set()
        running.join()


def test_the_batch_path_never_overwrites_a_newer_online_vector(world: World, online: updater.OnlineUpdater) -> None:
    [user] = active_users(world.url, 12)[11:]
    insert_vote(world.url, user, new_post_for(world.url, user))
    drain(online)
    online_vector, written_at = _vector_and_time(world.url, user)
    stale = batch_vectors(world, [user])[user]  # from the mart, which lacks the vote
    assert np.abs(stale - online_vector).max() > TOLERANCE, "the vote must change the vector for this to test much"
    write_embeddings(world.url, "user", np.array([user]), stale[np.newaxis], VERSION, mode="upsert")
    kept, kept_at = _vector_and_time(world.url, user)
    assert kept_at == written_at and np.array_equal(kept, online_vector)
    # Once the marts hold the vote, the batch path's write goes through (and is the same vector).
    world.refresh_marts()
    fresh = batch_vectors(world, [user])[user]
    write_embeddings(world.url, "user", np.array([user]), fresh[np.newaxis], VERSION, mode="upsert")
    vector, rewritten_at = _vector_and_time(world.url, user)
    assert rewritten_at > written_at and np.abs(vector - online_vector).max() <= TOLERANCE


def _vector_and_time(url: str, user_id: int) -> tuple[np.ndarray, datetime]:
    with connect(url) as conn:
        register_vector(conn)
        embedding, updated_at = conn.execute(
            "select embedding, updated_at from ml.user_embeddings where user_id = %s", (user_id,)
        ).fetchone()
    return embedding.to_numpy(), updated_at


def test_rows_queued_while_no_updater_runs_are_applied_when_one_starts(
    world: World, online: updater.OnlineUpdater
) -> None:
    users = active_users(world.url, 15)[12:]
    for user in users:
        insert_vote(world.url, user, new_post_for(world.url, user))
    assert scalar(world.url, "select count(*) from ml.online_queue") == len(users)
    started = updater.OnlineUpdater(world.url)  # no NOTIFY reaches it: it reads the queue
    try:
        assert sum(result.queue_rows for result in drain(started)) == len(users)
    finally:
        started.close()
    live = live_rows(world.url, users)
    with connect(world.url) as conn:
        states = dict(
            conn.execute("select user_id, feature_hash from ml.user_online_state where user_id = any(%s)", (users,))
        )
    assert states == {user: live[user]["feature_hash"] for user in users}


def test_a_batch_that_fails_is_applied_once_later(
    world: World, online: updater.OnlineUpdater, monkeypatch: pytest.MonkeyPatch
) -> None:
    [user] = active_users(world.url, 16)[15:]
    insert_vote(world.url, user, new_post_for(world.url, user))
    applied = scalar(world.url, "select applied_rows from ml.online_cursor")

    def crash(*_: Any) -> None:
        raise RuntimeError("the updater dies mid-batch")

    monkeypatch.setattr(updater, "lock_writes", crash)
    with pytest.raises(RuntimeError, match="mid-batch"):
        online.apply_batch()
    monkeypatch.undo()
    assert scalar(world.url, "select count(*) from ml.online_queue") == 1, "rolled back: the row is queued again"
    assert [result.queue_rows for result in drain(online)] == [1]
    assert scalar(world.url, "select applied_rows from ml.online_cursor") == applied + 1


def test_an_updater_killed_mid_burst_loses_nothing_and_applies_nothing_twice(
    world: World, online: updater.OnlineUpdater
) -> None:
    users = active_users(world.url, 26)[16:]
    applied_before = scalar(world.url, "select applied_rows from ml.online_cursor")
    env = {**os.environ, "TEAMU_DATABASE_URL": world.url}
    log_path = world.home / "realtime.log"

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [str(BIN / "teamu"), "realtime", "--report-seconds", "1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    process = start()
    try:
        insert_vote(world.url, users[0], new_post_for(world.url, users[0]))
        _wait_until(lambda: scalar(world.url, "select count(*) from ml.online_queue") == 0, 120, process, log_path)
        inserted = 1
        for step in range(120):
            user = users[step % len(users)]
            if step % 2:
                insert_view(world.url, str(user), new_post_for(world.url, user, skip=step % 7))
            else:
                insert_vote(world.url, user, new_post_for(world.url, user, skip=step % 5))
            inserted += 1
            if step == 60:
                os.kill(process.pid, signal.SIGKILL)  # its own pid: mid-burst, perhaps mid-transaction
                process.wait()
            if step == 90:
                process = start()  # catches up on the rows queued while it was down, then follows
            time.sleep(0.01)
        _wait_until(lambda: scalar(world.url, "select count(*) from ml.online_queue") == 0, 120, process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert scalar(world.url, "select applied_rows from ml.online_cursor") - applied_before == inserted
    live = live_rows(world.url, users)
    with connect(world.url) as conn:
        states = dict(
            conn.execute("select user_id, feature_hash from ml.user_online_state where user_id = any(%s)", (users,))
        )
    assert states == {user: live[user]["feature_hash"] for user in users}, "every interaction is in the state"
    world.refresh_marts()
    stored, batch = vectors(world.url, users), batch_vectors(world, users)
    assert max(np.abs(stored[user] - batch[user]).max() for user in users) <= TOLERANCE


def _wait_until(condition: Any, seconds: float, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"teamu realtime exited:\n{log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.05)


def test_a_full_refresh_with_a_new_model_is_followed(world: World, online: updater.OnlineUpdater) -> None:
    """A vote applied online, then a full refresh writes a new version's table from the marts (which lack the
    vote): the updater attaches its guard to the new table and writes that user again with the new model."""
    from teamu_assets.model.train import embed_users

    [user] = active_users(world.url, 27)[26:]
    insert_vote(world.url, user, new_post_for(world.url, user))
    drain(online)
    version = f"{VERSION}-2"
    registry.register_model_version(world.url, version, {}, str(world.model_dir))
    with connect(world.url) as conn:
        conn.execute("update ml.model_versions set promoted = (model_version = %s)", (version,))
    write_embeddings(
        world.url, "user", *embed_users(world.model_dir, features.read_user_features(world.url)), version, mode="full"
    )
    drain(online)
    with connect(world.url) as conn:
        guarded = conn.execute(
            "select count(*) from pg_trigger where tgrelid = 'ml.user_embeddings'::regclass"
            " and tgname = 'teamu_online_keep_newer'"
        ).fetchone()[0]
        state = conn.execute("select model_version from ml.user_online_state where user_id = %s", (user,)).fetchone()
    assert guarded == 1 and state == (version,)
    with connect(world.url) as conn:
        live = updater.read_live_user_features(conn, [user]).frame.drop(columns=["member"])
    _, expected = embed_users(world.model_dir, live)
    assert np.abs(vectors(world.url, [user])[user] - expected[0]).max() <= TOLERANCE


def test_a_users_events_are_read_through_their_index(world: World) -> None:
    """raw_mixpanel.events_user_id_idx repeats dbt's text_to_bigint: should the two drift apart, the live
    function would read every event of the incremental lookback window for each user."""
    [user] = active_users(world.url, 1)
    with connect(world.url) as conn:
        body = conn.execute("select prosrc from pg_proc where proname = 'user_features_live'").fetchone()[0]
        query = body.replace("p_user_ids", f"array[{user}]::bigint[]")
        plan = "\n".join(row[0] for row in conn.execute(f"explain (costs off) {query}"))
    assert "events_user_id_idx" in plan
    # The stored text names no database: it works in a database restored under another name.
    assert f'"{database_of(world.url)}"' not in body


TOKEN = "t0ken"
EDGE_HANDLER = Path(__file__).resolve().parents[2] / "supabase" / "functions" / "teamu-realtime" / "handler.mjs"


@pytest.fixture
def endpoint(world: World) -> Iterator[str]:
    server = serve(EndpointConfig(world.url, world.home / "landing", TOKEN), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(base: str, path: str, body: bytes | None = None, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        base + path, data=body, method="GET" if body is None else "POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def view_event(user_id: int, post_id: int) -> dict[str, Any]:
    properties = {"time": int(time.time()), "distinct_id": str(user_id), "$insert_id": uuid.uuid4().hex}
    return {"event": "Post Viewed", "properties": {**properties, "post_id": post_id, "duration_ms": 1200}}


def test_http_events_are_loaded_as_an_export_file_is(
    world: World, online: updater.OnlineUpdater, endpoint: str
) -> None:
    [user] = active_users(world.url, 28)[27:]
    post = new_post_for(world.url, user)
    event = view_event(user, post)
    anonymous = {"event": "Post Viewed", "properties": {"time": int(time.time()), "$insert_id": "x", "post_id": post}}
    status, counts = call(endpoint, "/v1/events", json.dumps([event, event, anonymous]).encode())
    assert status == 200
    source_file = counts.pop("source_file")
    assert counts == {"lines_read": 3, "loaded": 1, "duplicates": 1, "quarantined": 1}
    with connect(world.url) as conn:
        ledger = conn.execute(
            "select lines_read, loaded, duplicates, quarantined from raw_mixpanel.loaded_files where source_file = %s",
            (source_file,),
        ).fetchone()
        reasons = conn.execute(
            "select reason from raw_mixpanel.events_quarantine where source_file = %s", (source_file,)
        ).fetchall()
        queued = conn.execute("select user_id, source from ml.online_queue").fetchall()
    assert ledger == (3, 1, 1, 1) and reasons == [("missing properties.distinct_id",)]
    assert queued == [(user, "events")]
    drain(online)
    with connect(world.url) as conn:
        recommended = {row[0] for row in conn.execute("select post_id from ml.recommend_posts(%s, 1000)", (user,))}
    assert post not in recommended
    # One event as an object, and JSON lines with a broken one: validated line by line, as a file's lines.
    status, counts = call(endpoint, "/v1/events", json.dumps(view_event(user, post)).encode())
    assert (status, counts["loaded"]) == (200, 1)
    lines = json.dumps(view_event(user, post)).encode() + b"\n{not json\n"
    status, counts = call(endpoint, "/v1/events", lines)
    assert (status, counts["loaded"], counts["quarantined"]) == (200, 1, 1)
    assert call(endpoint, "/v1/events", b"[]", token="wrong")[0] == 401
    status, healthy = call(endpoint, "/healthz")
    assert status == 200 and healthy["queued"] == 2 and healthy["applied_rows"] > 0


def test_a_supabase_webhook_queues_the_rows_user(world: World, online: updater.OnlineUpdater, endpoint: str) -> None:
    [user] = active_users(world.url, 29)[28:]
    vote = {"type": "INSERT", "table": "votes", "schema": "public", "record": {"user_id": user, "post_id": 1}}
    assert call(endpoint, "/v1/supabase-webhook", json.dumps(vote).encode()) == (202, {"queued": 1, "user_id": user})
    status, ignored = call(endpoint, "/v1/supabase-webhook", json.dumps({**vote, "type": "UPDATE"}).encode())
    assert status == 202 and ignored["queued"] == 0
    for record in ({"user_id": "1"}, {"user_id": True}, {"user_id": -1}, {}):
        refused = json.dumps({**vote, "record": record}).encode()
        assert call(endpoint, "/v1/supabase-webhook", refused)[0] == 400
    assert call(endpoint, "/v1/supabase-webhook", b"{not json")[0] == 400
    with connect(world.url) as conn:
        assert conn.execute("select user_id, source from ml.online_queue").fetchall() == [(user, "webhook:votes")]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_edge_function_reaches_the_endpoint(world: World, online: updater.OnlineUpdater, endpoint: str) -> None:
    """The Edge Function's handler, run by Node with the real fetch, against the real endpoint."""
    [user] = active_users(world.url, 30)[29:]
    script = (
        f"import {{ handleWebhook }} from {json.dumps(EDGE_HANDLER.as_uri())};"
        "const record = {user_id: Number(process.argv[2])};"
        "const payload = {type: 'INSERT', table: 'comments', schema: 'public', record};"
        "const request = new Request('http://edge/', {method: 'POST', headers: {'x-teamu-webhook-secret': 's'},"
        " body: JSON.stringify(payload)});"
        "const config = {updaterUrl: process.argv[1], updaterToken: process.argv[3], webhookSecret: 's'};"
        "const answer = await handleWebhook(request, config);"
        "console.log(JSON.stringify({status: answer.status, body: await answer.json()}));"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, endpoint, str(user), TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == 202 and answer["body"]["updater"] == {"queued": 1, "user_id": user}
    with connect(world.url) as conn:
        assert conn.execute("select user_id, source from ml.online_queue").fetchall() == [(user, "webhook:comments")]


def _raw_exchange(base: str, request: bytes) -> bytes:
    """Send raw bytes to the endpoint and read until it closes the connection (or 5 s pass)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_the_endpoint_refuses_odd_requests_cleanly(endpoint: str) -> None:
    # A refused token with a body on a kept-alive connection: the body is never read as the next request.
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: "
        + str(len(smuggled)).encode()
        + b"\r\n\r\n"
        + smuggled
    )
    answers = _raw_exchange(endpoint, request)
    assert answers.count(b"HTTP/1.1 ") == 1 and answers.startswith(b"HTTP/1.1 401")
    # A Content-Length of digits Python reads as digits but int() doesn't ("\u00b2"): 411, not a 500.
    odd_length = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
    answers = _raw_exchange(endpoint, odd_length + b"\r\nContent-Length: \xb2\r\n\r\n")
    assert answers.startswith(b"HTTP/1.1 411")
    # JSON nested past the parser's recursion limit: a 400, not a 500 with a traceback in the log.
    status, answer = call(endpoint, "/v1/supabase-webhook", b"[" * 100_000)
    assert status == 400 and "not JSON" in answer["error"]


def test_a_failing_batch_is_retried_not_the_end_of_the_updater(
    world: World, online: updater.OnlineUpdater, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_batch = updater.OnlineUpdater.apply_batch
    failures = []

    def fails_once(self: updater.OnlineUpdater) -> updater.BatchResult | None:
        if not failures:
            failures.append(1)
            raise RuntimeError("the server closed the connection")
        return apply_batch(self)

    monkeypatch.setattr(updater.OnlineUpdater, "apply_batch", fails_once)
    [user] = active_users(world.url, 13)[12:]
    insert_vote(world.url, user, new_post_for(world.url, user))
    stop = threading.Event()
    running = threading.Thread(target=updater.run, args=(world.url, stop), kwargs={"idle_wait_seconds": 0.2})
    running.start()
    try:
        started = time.monotonic()
        while scalar(world.url, "select count(*) from ml.online_queue") and time.monotonic() - started < 60:
            time.sleep(0.1)
        assert running.is_alive(), "the updater went on after the failure"
        assert failures and scalar(world.url, "select count(*) from ml.online_queue") == 0
    finally:
        stop.set()
        running.join()


def test_the_sensor_shows_the_updaters_progress_on_user_embeddings(world: World, online: updater.OnlineUpdater) -> None:
    from dagster import AssetKey, SensorResult, SkipReason, build_sensor_context

    from teamu_assets.resources import TeamuDatabase
    from teamu_assets.sensors import online_updater_sensor

    database = TeamuDatabase(teamu_home=str(world.home), database_url=world.url)
    [user] = active_users(world.url, 31)[30:]
    insert_vote(world.url, user, new_post_for(world.url, user))
    drain(online)
    first = online_updater_sensor(build_sensor_context(resources={"database": database}))
    assert isinstance(first, SensorResult)
    [observation] = first.asset_events
    assert observation.asset_key == AssetKey(["ml", "user_embeddings"])
    metadata = {name: value.value for name, value in observation.metadata.items()}
    assert metadata["online_applied_rows_total"] == scalar(world.url, "select applied_rows from ml.online_cursor")
    assert metadata["online_queued"] == 0 and metadata["online_last_lag_seconds"] > 0
    # Nothing applied since: no observation.
    again = online_updater_sensor(build_sensor_context(resources={"database": database}, cursor=first.cursor))
    assert isinstance(again, SkipReason)
    insert_vote(world.url, user, new_post_for(world.url, user))
    drain(online)
    later = online_updater_sensor(build_sensor_context(resources={"database": database}, cursor=first.cursor))
    [observation] = later.asset_events
    assert observation.metadata["online_applied_rows"].value == 1 and "online_rows_per_second" in observation.metadata
    # A cursor from before a reinstall (the updater counts from 0 again) holds more than the updater has applied:
    # what it applied since counts from 0, never a negative number of rows.
    total = scalar(world.url, "select applied_rows from ml.online_cursor")
    stale = json.dumps({"applied_rows": total + 1000, "at": None})
    reinstalled = online_updater_sensor(build_sensor_context(resources={"database": database}, cursor=stale))
    [observation] = reinstalled.asset_events
    assert observation.metadata["online_applied_rows"].value == total


def test_uninstall_leaves_the_batch_path_as_it_was(world: World) -> None:
    """Last in the module: without the updater's objects, writes and serving work as before; install again."""
    [user] = active_users(world.url, 1)
    post = new_post_for(world.url, user)
    updater.uninstall(world.url)
    try:
        with connect(world.url) as conn:
            left = conn.execute(
                "select count(*) from pg_trigger where tgname like 'teamu_online%%'"
                " union all select count(*) from pg_proc where proname like 'online_enqueue%%'"
                " union all select count(*) from pg_class where relname in"
                " ('online_queue', 'online_cursor', 'user_online_state')"
            ).fetchall()
        assert left == [(0,), (0,), (0,)]
        insert_vote(world.url, user, post)
        with connect(world.url) as conn:
            assert len(conn.execute("select * from ml.recommend_posts(%s, 5)", (user,)).fetchall()) == 5
        served = scalar(world.url, "select model_version from ml.user_embeddings limit 1")
        assert write_embeddings(world.url, "user", *_one_batch_vector(world, user), served, mode="upsert").rows == 1
    finally:
        updater.install(world.url)


def _one_batch_vector(world: World, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    vector = batch_vectors(world, [user_id])[user_id]
    return np.array([user_id]), vector[np.newaxis]
