"""Apply ml.online_queue: each touched user's features, embedding and pending engagements, in one transaction.

One batch: delete up to `batch_rows` queue rows (the oldest first), read the distinct users' features from
marts.user_features_live, embed the ones marts.user_features holds with the query tower of the model whose
vectors ml.user_embeddings serves, upsert those vectors, every user's ml.user_online_state (what
ml.recommend_posts excludes) and the cursor, commit. Users queued many times by a burst are computed once. The
queue rows go with the commit: a crash rolls the batch back and the rows are applied by the next run.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from teamu_assets.db import registry
from teamu_assets.db.connection import connect
from teamu_assets.db.embeddings import has_feature_hash_column, lock_writes

log = logging.getLogger("teamu.realtime")

CHANNEL = "teamu_online"
CONSUMER = "teamu realtime"
ONLINE_SQL = Path(__file__).with_name("online.sql")
SUPABASE_SCHEMA_TOKEN = "__SUPABASE_SCHEMA__"
LIVE_FUNCTION = "marts.user_features_live(bigint[])"
# One process per database: two would compute the same users from different snapshots for nothing.
_SINGLETON_LOCK = "teamu.realtime.updater"

_DEQUEUE_SQL = """
delete from ml.online_queue
where seq in (select seq from ml.online_queue order by seq limit %s for update skip locked)
returning seq, user_id, extract(epoch from clock_timestamp() - queued_at)::float8
"""
# marts.user_features' columns as read_user_features reads them, from the function with the mart's own SQL;
# member: whether the mart holds the user (only those get a vector: the embedding checks count one per mart row).
_LIVE_SQL = """
select f.*, exists (select 1 from marts.user_features m where m.user_id = f.user_id) as member,
       statement_timestamp() as read_at
from marts.user_features_live(%s::bigint[]) f
"""
_STATE_SQL = """
insert into ml.user_online_state (user_id, pending_post_ids, features_as_of, feature_hash, model_version, updated_at)
values (%s, %s, %s, %s, %s, now())
on conflict (user_id) do update set
    pending_post_ids = excluded.pending_post_ids,
    features_as_of = excluded.features_as_of,
    feature_hash = excluded.feature_hash,
    model_version = excluded.model_version,
    updated_at = excluded.updated_at
"""
_CURSOR_SQL = """
insert into ml.online_cursor as c
    (consumer, last_seq, applied_rows, applied_batches, embedded_users, last_applied_at, last_lag_seconds)
values (%s, %s, %s, 1, %s, now(), %s)
on conflict (consumer) do update set
    last_seq = greatest(c.last_seq, excluded.last_seq),
    applied_rows = c.applied_rows + excluded.applied_rows,
    applied_batches = c.applied_batches + 1,
    embedded_users = c.embedded_users + excluded.embedded_users,
    last_applied_at = excluded.last_applied_at,
    last_lag_seconds = excluded.last_lag_seconds
"""
# Users whose online features are ahead of their mart row but whose vector is not of the served model: a full
# refresh swapped in a new model's table, computed from the marts, after the updater had written them.
_RESYNC_SQL = """
insert into ml.online_queue (user_id, source)
select s.user_id, 'resync'
from ml.user_online_state s
join marts.user_features m on m.user_id = s.user_id
where s.model_version is distinct from %s and s.feature_hash is distinct from m.feature_hash
"""


def install(url: str, supabase_schema: str = "raw_supabase") -> None:
    """Create or update the queue, cursor, state, triggers and the batch guard (online.sql); idempotent.
    supabase_schema: where the app's tables are (dbt's var supabase_schema: `public` on Supabase)."""
    with connect(url) as conn:
        schema = sql.Identifier(supabase_schema).as_string(conn)
        conn.execute(ONLINE_SQL.read_text().replace(SUPABASE_SCHEMA_TOKEN, schema))


def uninstall(url: str, supabase_schema: str = "raw_supabase") -> None:
    """Remove the triggers, functions and tables install() created: the app's writes then queue nothing."""
    statements = [
        sql.SQL("drop trigger if exists {} on {}.{}").format(sql.Identifier(trigger), *map(sql.Identifier, table))
        for table in [(supabase_schema, t) for t in ("votes", "comments", "users", "projects", "posts")]
        + [("raw_mixpanel", "events")]
        for trigger in ("teamu_online_insert", "teamu_online_update")
    ]
    with connect(url) as conn:
        for statement in statements:
            conn.execute(statement)
        if conn.execute("select to_regclass('ml.user_embeddings')").fetchone()[0] is not None:
            conn.execute("drop trigger if exists teamu_online_keep_newer on ml.user_embeddings")
        conn.execute(
            "drop function if exists ml.attach_online_guard(), ml.keep_newer_online_user_embedding(),"
            " ml.online_enqueue_users(), ml.online_enqueue_event_users()"
        )
        conn.execute("drop table if exists ml.online_queue, ml.online_cursor, ml.user_online_state")


@dataclass(frozen=True)
class Progress:
    """What ml.online_cursor and ml.online_queue say: the updater's progress, for its endpoint and Dagster."""

    queued: int
    applied_rows: int
    applied_batches: int
    embedded_users: int
    last_applied_at: datetime | None
    last_lag_seconds: float | None


def progress(url: str) -> Progress | None:
    """None where the updater was never installed."""
    with connect(url) as conn:
        if conn.execute("select to_regclass('ml.online_cursor')").fetchone()[0] is None:
            return None
        queued = conn.execute("select count(*) from ml.online_queue").fetchone()[0]
        row = conn.execute(
            "select applied_rows, applied_batches, embedded_users, last_applied_at, last_lag_seconds"
            " from ml.online_cursor where consumer = %s",
            (CONSUMER,),
        ).fetchone()
    return Progress(queued, *(row or (0, 0, 0, None, None)))


@dataclass(frozen=True)
class LiveFeatures:
    frame: pd.DataFrame  # marts.user_features' columns (refreshed_at aside) for the users found, plus member
    pending: dict[int, list[int]]  # user -> posts engaged with that marts.interactions doesn't hold yet
    as_of: datetime  # when they were read: everything committed before it is in them


def read_live_user_features(conn: psycopg.Connection, user_ids: list[int]) -> LiveFeatures:
    cursor = conn.execute(_LIVE_SQL, (user_ids,))
    frame = pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])
    as_of = frame["read_at"].iloc[0] if len(frame) else conn.execute("select statement_timestamp()").fetchone()[0]
    for column in ("created_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    pending = dict(zip(frame["user_id"].tolist(), frame["pending_post_ids"].tolist(), strict=True))
    return LiveFeatures(frame.drop(columns=["pending_post_ids", "read_at"]), pending, as_of)


@dataclass(frozen=True)
class BatchResult:
    queue_rows: int
    users: int
    embedded: int  # vectors written
    model_version: str | None  # of the vectors; None when no model is served
    lags: list[float] = field(repr=False)  # seconds from each queue row's write to this batch's commit
    seconds: float


class AlreadyRunning(RuntimeError):
    """Another updater holds this database's queue."""


class _ServedModelChanged(Exception):
    """A full refresh swapped ml.user_embeddings while the batch was computed: it is rolled back and redone."""


@dataclass
class _Window:
    """What the updater did since its last report."""

    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    queue_rows: int = 0
    users: int = 0
    embedded: int = 0
    lags: list[float] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.queue_rows += result.queue_rows
        self.users += result.users
        self.embedded += result.embedded
        self.lags += result.lags


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class OnlineUpdater:
    """Applies ml.online_queue to ml.user_embeddings and ml.user_online_state; see the module docstring."""

    def __init__(self, url: str, *, batch_rows: int = 5000) -> None:
        self.url = url
        self.batch_rows = batch_rows
        self.conn = connect(url)
        register_vector(self.conn)
        self._model_dirs: dict[str, Path] = {}
        self._table_oid: int | None = None
        self._served: str | None = None
        self._served_known = False
        self._with_feature_hash = False
        self._waiting_for: str | None = None

    def close(self) -> None:
        self.conn.close()

    # --- the model -------------------------------------------------------------------------------------------

    def _model_dir(self, version: str) -> Path:
        """The version's artifact folder, its query tower loaded and run once (the first call traces it)."""
        if version not in self._model_dirs:
            from teamu_assets.model.train import embed_users

            started = time.perf_counter()
            model_dir = Path(registry.model_version(self.url, version).artifact_path)
            warm_up = read_live_user_features(self.conn, self._any_member())
            embed_users(model_dir, warm_up.frame.drop(columns=["member"]))
            self._model_dirs = {version: model_dir}  # the previous model's tower is not used again
            log.info("query tower of %s loaded in %.1f s", version, time.perf_counter() - started)
        return self._model_dirs[version]

    def _any_member(self) -> list[int]:
        row = self.conn.execute("select user_id from marts.user_features limit 1").fetchone()
        return [] if row is None else [row[0]]

    def _served_version(self) -> tuple[int | None, str | None]:
        """(OID of ml.user_embeddings, the model version it holds); None where there is no table or no row."""
        oid = self.conn.execute("select to_regclass('ml.user_embeddings')::oid").fetchone()[0]
        if oid is None:
            return None, None
        row = self.conn.execute("select model_version from ml.user_embeddings limit 1").fetchone()
        return oid, None if row is None else row[0]

    def check_served_model(self) -> None:
        """Follow full refreshes: a new ml.user_embeddings table gets the batch guard again, and a new model
        version has its tower loaded and queues again the users the updater had computed ahead of the marts
        (the full refresh embedded them from their mart rows)."""
        oid, served = self._served_version()
        if oid is not None and oid != self._table_oid:
            self.conn.execute("select ml.attach_online_guard()")
        # A table from before feature_hash gains it with the batch path's next write.
        self._with_feature_hash = oid is not None and has_feature_hash_column(self.conn, "user")
        if self._served_known and served == self._served:
            self.conn.commit()
            self._table_oid = oid
            return
        if served is not None:
            self._model_dir(served)
        resynced = self.conn.execute(_RESYNC_SQL, (served,)).rowcount
        self.conn.commit()
        if self._served_known:
            log.info("served model now %s: %d users queued again", served or "none", resynced)
        self._table_oid, self._served, self._served_known = oid, served, True

    # --- one batch -------------------------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether dbt has built marts.user_features (whose post-hook creates the live function)."""
        exists = self.conn.execute("select to_regprocedure(%s) is not null", (LIVE_FUNCTION,)).fetchone()[0]
        self.conn.commit()
        waiting = None if exists else f"waiting for {LIVE_FUNCTION}: build marts.user_features with dbt"
        if waiting != self._waiting_for and waiting is not None:
            log.warning(waiting)
        self._waiting_for = waiting
        return exists

    def apply_batch(self) -> BatchResult | None:
        """Apply up to batch_rows queue rows in one transaction; None when the queue is empty (or the marts are
        not built yet)."""
        if not self._ready():
            return None
        self.check_served_model()
        started = time.perf_counter()
        try:
            with self.conn.transaction():
                applied = self._apply()
        except _ServedModelChanged:
            log.info("ml.user_embeddings was swapped during a batch: redone with the served model")
            return self.apply_batch()
        if applied is None:
            return None
        committed = time.perf_counter()
        result, dequeued, queued_lags = applied
        # Each row's lag: queued -> dequeued, measured by the server, then dequeued -> committed, here.
        return replace(result, lags=[lag + committed - dequeued for lag in queued_lags], seconds=committed - started)

    def _apply(self) -> tuple[BatchResult, float, list[float]] | None:
        """The batch's work inside its transaction: (its result without lags and time, when its rows were
        dequeued, each row's lag until then); None when the queue is empty."""
        conn = self.conn
        rows = conn.execute(_DEQUEUE_SQL, (self.batch_rows,)).fetchall()
        if not rows:
            return None
        dequeued = time.perf_counter()
        user_ids = sorted({user_id for _, user_id, _ in rows})
        live = read_live_user_features(conn, user_ids)
        served = self._served
        members = live.frame.loc[live.frame["member"].astype(bool)].drop(columns=["member"])
        vectors: dict[int, np.ndarray] = {}
        if served is not None and len(members):
            from teamu_assets.model.train import embed_users

            ids, matrix = embed_users(self._model_dir(served), members)
            vectors = dict(zip(ids.tolist(), matrix, strict=True))
        lock_writes(conn, "user")
        if self._served_version() != (self._table_oid, served):
            raise _ServedModelChanged
        # The batch guard on ml.user_embeddings lets this transaction's writes through.
        conn.execute("select set_config('teamu.online_write', 'on', true)")
        hashes = dict(zip(live.frame["user_id"].tolist(), live.frame["feature_hash"].tolist(), strict=True))
        if vectors:
            self._upsert_vectors(vectors, hashes, served)
        conn.cursor().executemany(
            _STATE_SQL,
            [
                (user_id, live.pending[user_id], live.as_of, hashes[user_id], served if user_id in vectors else None)
                for user_id in live.pending
            ],
        )
        queued_lags = [lag for _, _, lag in rows]
        conn.execute(
            _CURSOR_SQL,
            (CONSUMER, max(seq for seq, _, _ in rows), len(rows), len(vectors), max(queued_lags)),
        )
        result = BatchResult(
            queue_rows=len(rows),
            users=len(user_ids),
            embedded=len(vectors),
            model_version=served if vectors else None,
            lags=[],
            seconds=0.0,
        )
        return result, dequeued, queued_lags

    def _upsert_vectors(self, vectors: dict[int, np.ndarray], hashes: dict[int, str], version: str) -> None:
        # The features' hash, as the batch path records the mart's: once the mart holds the same features, the
        # batch path (which re-embeds the rows whose mart hash differs from theirs) leaves these rows alone.
        with_hash = self._with_feature_hash
        columns = ["user_id", "embedding", "model_version", "updated_at"] + (["feature_hash"] if with_hash else [])
        updates = sql.SQL(", ").join(
            sql.SQL("{} = excluded.{}").format(sql.Identifier(name), sql.Identifier(name)) for name in columns[1:]
        )
        values = sql.SQL("%s, %s, %s, now()") + (sql.SQL(", %s") if with_hash else sql.SQL(""))
        statement = sql.SQL(
            "insert into ml.user_embeddings ({columns}) values ({values}) on conflict (user_id) do update set {updates}"
        ).format(columns=sql.SQL(", ").join(map(sql.Identifier, columns)), values=values, updates=updates)
        self.conn.cursor().executemany(
            statement,
            [
                (user_id, vector, version, hashes[user_id])[: 4 if with_hash else 3]
                for user_id, vector in vectors.items()
            ],
        )

    # --- the loop --------------------------------------------------------------------------------------------

    def queue_depth(self) -> int:
        depth = self.conn.execute("select count(*) from ml.online_queue").fetchone()[0]
        self.conn.commit()
        return depth

    def report(self, window: _Window) -> None:
        seconds = time.monotonic() - window.started
        lags = window.lags or [0.0]
        log.info(
            "applied %d queue rows (%d users, %d vectors) in %d batches over %.0f s: %.1f rows/s, %.1f users/s;"
            " lag p50 %.3f s, p95 %.3f s, max %.3f s; %d rows queued",
            window.queue_rows,
            window.users,
            window.embedded,
            window.batches,
            seconds,
            window.queue_rows / seconds,
            window.users / seconds,
            statistics.median(lags),
            _percentile(lags, 0.95),
            max(lags),
            self.queue_depth(),
        )


# The longest pause between two tries after a batch failed: the pause doubles from 1 s up to this.
MAX_FAILURE_PAUSE_SECONDS = 60.0


def run(
    url: str,
    stop: threading.Event,
    *,
    batch_rows: int = 5000,
    idle_wait_seconds: float = 1.0,
    report_seconds: float = 10.0,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> None:
    """Apply the queue until `stop` is set: catch up first, then batch after batch while rows are queued, and
    wait for a NOTIFY (or idle_wait_seconds, which covers a notification lost with a connection) when none are.
    Lag and throughput are logged every report_seconds while there is work. A batch that fails (a dropped
    connection, a model artifact missing, a user the tower can't embed) is logged and rolled back, its rows
    still queued: the updater starts over on a new connection after a pause that doubles up to
    MAX_FAILURE_PAUSE_SECONDS, instead of exiting (the Docker image stops when one of its processes does). The
    listening connection holds the one-updater lock: losing it (the server restarted) still ends the run."""
    listener = connect(url, autocommit=True)
    try:
        if not listener.execute("select pg_try_advisory_lock(hashtext(%s))", (_SINGLETON_LOCK,)).fetchone()[0]:
            raise AlreadyRunning("another `teamu realtime` is already applying this database's queue")
        listener.execute(sql.SQL("listen {}").format(sql.Identifier(CHANNEL)))
        updater: OnlineUpdater | None = OnlineUpdater(url, batch_rows=batch_rows)
        try:
            log.info("catching up: %d rows queued", updater.queue_depth())
            window: _Window | None = None  # opened by the first batch after a report
            pause = 0.0
            while not stop.is_set():
                try:
                    updater = updater or OnlineUpdater(url, batch_rows=batch_rows)
                    result = updater.apply_batch()
                except Exception:
                    pause = min(max(2 * pause, 1.0), MAX_FAILURE_PAUSE_SECONDS)
                    log.exception("a batch failed (its rows stay queued); starting over in %.0f s", pause)
                    if updater is not None:
                        updater.close()
                    updater = None
                    if stop.wait(pause):
                        break
                    continue
                pause = 0.0
                if result is not None:
                    window = window or _Window(started=time.monotonic() - result.seconds)
                    window.add(result)
                    if on_batch is not None:
                        on_batch(result)
                if window is not None and time.monotonic() - window.started >= report_seconds:
                    updater.report(window)
                    window = None
                if result is None:
                    # Woken by a notification, or after idle_wait_seconds: the queue, not the notifications
                    # (one per writing transaction), says what is left.
                    for _ in listener.notifies(timeout=idle_wait_seconds, stop_after=1):
                        pass
        finally:
            if updater is not None:
                updater.close()
    finally:
        listener.close()
