"""User and post embeddings in pgvector tables: creation, full refresh with an atomic swap, upsert, checks.

The tables' vector dimension is a setting (TEAMU_EMBEDDING_DIM), so their DDL lives here, not in ml.sql.
Only ml.post_embeddings carries an HNSW index: the serving functions search posts by a user's or a post's
vector; users are only looked up by id, and an unused HNSW index on users would add minutes to every refresh.

Each embedding row records the feature_hash its mart row had when the vector was written: a row needs
re-embedding exactly when the two differ (teamu_assets.db.features.changed_since_embedding).

A new model reaches serving in two steps: each kind's vectors are staged (ml.<kind>_embeddings_staged, loaded and
indexed, invisible to readers), then publish swaps every staged table in and marks the model promoted in one
transaction. A crash anywhere before that commit leaves the promoted model and its vectors as they were.
The functions here take an open connection inside a transaction; teamu_assets.db.store.EmbeddingStore owns one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from teamu_assets.db import registry
from teamu_assets.db.connection import connect

EmbeddingKind = Literal["user", "post"]
WriteMode = Literal["full", "upsert", "staged"]


@dataclass(frozen=True)
class EmbeddingSpec:
    """Where one kind's embeddings live and what they are computed from: the one kind -> table/column mapping."""

    kind: EmbeddingKind
    id_column: str
    # The dbt mart the vectors are computed from (schema.table); its feature_hash is recorded with every vector.
    feature_mart: str
    # Only posts are searched by vector (the serving functions); users are only looked up by id.
    indexed: bool

    @property
    def table(self) -> str:
        return f"{self.kind}_embeddings"

    @property
    def staged_table(self) -> str:
        return f"{self.kind}_embeddings_staged"


SPECS: dict[str, EmbeddingSpec] = {
    "user": EmbeddingSpec("user", "user_id", "marts.user_features", indexed=False),
    "post": EmbeddingSpec("post", "post_id", "marts.post_features", indexed=True),
}
KINDS: tuple[EmbeddingKind, ...] = ("user", "post")
# Chosen with bench/bench_serving.py (100k posts x 512 dims): with ef_search 200 (serving_functions.sql)
# recall@10 ~0.95; ef_construction 128 adds ~0.02 recall for twice the build time.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# The full refresh waits at most this long for readers to let go of the live table at each swap attempt, so a
# long analyst query can't make every new reader queue behind the refresh's ACCESS EXCLUSIVE lock.
SWAP_LOCK_TIMEOUT = "2s"
SWAP_ATTEMPTS = 5
# Each kind's writers (full refreshes and upserts) take this advisory lock so they run one after another.
_ADVISORY_LOCK_BASE = 7_326_400


class EmbeddingWriteError(ValueError):
    """The embeddings can't be written as given; nothing was written."""


@dataclass(frozen=True)
class WriteResult:
    kind: EmbeddingKind
    mode: WriteMode
    rows: int
    model_version: str
    copy_seconds: float  # the binary COPY alone
    index_seconds: float  # primary key and HNSW index builds after the load (full and staged modes)
    total_seconds: float  # everything, validation and the swap included


def lock_writes(conn: psycopg.Connection, kind: EmbeddingKind) -> None:
    """Take the lock every writer of ml.<kind>_embeddings holds to the end of its transaction (full refreshes,
    upserts, the online updater of teamu_assets.realtime): they write one after another, and a writer that
    holds it sees the table, and its model version, as no concurrent swap can change them."""
    conn.execute("select pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_BASE + KINDS.index(kind),))


def spec(kind: str) -> EmbeddingSpec:
    if kind not in SPECS:
        raise EmbeddingWriteError(f"kind must be 'user' or 'post', got {kind!r}")
    return SPECS[kind]


def _table_ddl(kind: EmbeddingKind, table: str, dim: int) -> sql.Composed:
    return sql.SQL(
        "create table if not exists ml.{table} ("
        " {id} bigint not null,"
        " embedding vector({dim}) not null,"
        " model_version text not null,"
        " updated_at timestamptz not null default now(),"
        # NULL for a vector whose id the mart does not hold (or written where there are no marts).
        " feature_hash text)"
    ).format(table=sql.Identifier(table), id=sql.Identifier(SPECS[kind].id_column), dim=sql.Literal(dim))


def _create_indexes(conn: psycopg.Connection, kind: EmbeddingKind, table: str) -> None:
    conn.execute(
        sql.SQL("alter table ml.{table} add constraint {pkey} primary key ({id})").format(
            table=sql.Identifier(table),
            pkey=sql.Identifier(f"{table}_pkey"),
            id=sql.Identifier(SPECS[kind].id_column),
        )
    )
    if SPECS[kind].indexed:
        # Building the graph after the load is several times faster than inserting into an indexed table.
        conn.execute("set local maintenance_work_mem = '1GB'")
        conn.execute(
            sql.SQL(
                "create index {index} on ml.{table} using hnsw (embedding vector_ip_ops)"
                " with (m = {m}, ef_construction = {ef})"
            ).format(
                index=sql.Identifier(f"{table}_embedding_hnsw"),
                table=sql.Identifier(table),
                m=sql.Literal(HNSW_M),
                ef=sql.Literal(HNSW_EF_CONSTRUCTION),
            )
        )


def _table_dimension(conn: psycopg.Connection, table: str) -> int | None:
    """The vector(D) of ml.<table>.embedding, None when the table doesn't exist."""
    row = conn.execute(
        "select a.atttypmod from pg_attribute a"
        " where a.attrelid = to_regclass(%s) and a.attname = 'embedding' and not a.attisdropped",
        (f"ml.{table}",),
    ).fetchone()
    return None if row is None else int(row[0])


def _has_feature_hash(conn: psycopg.Connection, relation: str) -> bool:
    """Whether the relation (schema.name) exists and has a feature_hash column."""
    row = conn.execute(
        "select 1 from pg_attribute where attrelid = to_regclass(%s) and attname = 'feature_hash' and not attisdropped",
        (relation,),
    ).fetchone()
    return row is not None


def has_feature_hash_column(conn: psycopg.Connection, kind: EmbeddingKind) -> bool:
    """Whether ml.<kind>_embeddings exists with its feature_hash column (tables created before it lack it)."""
    return _has_feature_hash(conn, f"ml.{SPECS[kind].table}")


def _ensure_feature_hash_column(conn: psycopg.Connection, kind: EmbeddingKind) -> None:
    """Add feature_hash to a table created before it (its rows get NULL: each is re-embedded once). The catalog
    is read first because ALTER TABLE takes an ACCESS EXCLUSIVE lock even when the column is already there,
    which would queue every serving read behind each incremental refresh."""
    if not has_feature_hash_column(conn, kind):
        conn.execute(
            sql.SQL("alter table ml.{} add column if not exists feature_hash text").format(
                sql.Identifier(SPECS[kind].table)
            )
        )


def _ensure_table(conn: psycopg.Connection, kind: EmbeddingKind, dim: int) -> None:
    table = SPECS[kind].table
    existing = _table_dimension(conn, table)
    if existing is None:
        conn.execute(_table_ddl(kind, table, dim))
        _create_indexes(conn, kind, table)
    elif existing != dim:
        raise EmbeddingWriteError(
            f"ml.{table} holds vector({existing}) but {dim} dimensions were asked for: "
            f"TEAMU_EMBEDDING_DIM and the table disagree (drop ml.{table} to change the dimension)"
        )
    else:
        _ensure_feature_hash_column(conn, kind)


def ensure_tables(conn: psycopg.Connection, dim: int) -> None:
    """Create ml.user_embeddings and ml.post_embeddings (vector(dim)) when missing, add feature_hash to tables
    from before it; refuse another dim. Run inside the caller's transaction."""
    if not 1 <= dim <= 2000:
        raise EmbeddingWriteError(f"the dimension must be between 1 and 2000 (pgvector's limit), got {dim}")
    # The post and user embedding steps run in parallel and both may get here: without the lock, two concurrent
    # `create table` of the same table race on the catalog (a unique violation in pg_type). The lock is held
    # to the end of this transaction, so the second caller sees the tables the first created.
    conn.execute("select pg_advisory_xact_lock(hashtext('teamu.ensure_embedding_tables'))")
    conn.execute("create schema if not exists ml")
    for kind in KINDS:
        _ensure_table(conn, kind, dim)


def tables_ready(conn: psycopg.Connection, dim: int) -> bool:
    """Whether both tables exist with vector(dim) and feature_hash: a few catalog lookups, no lock taken."""
    return all(
        _table_dimension(conn, SPECS[kind].table) == dim and has_feature_hash_column(conn, kind) for kind in KINDS
    )


def ensure_embedding_tables(url: str, dim: int) -> None:
    """ensure_tables in a transaction of its own."""
    with connect(url) as conn:
        ensure_tables(conn, dim)


def _validated(
    kind: str, ids: np.ndarray, vectors: np.ndarray, model_version: str, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    spec(kind)
    if mode not in ("full", "upsert", "staged"):
        raise EmbeddingWriteError(f"mode must be 'full', 'upsert' or 'staged', got {mode!r}")
    if not isinstance(model_version, str) or not model_version.strip():
        raise EmbeddingWriteError("model_version must be a non-empty string (one model version per call)")
    ids = np.asarray(ids)
    vectors = np.asarray(vectors)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise EmbeddingWriteError(f"ids must be a 1-d integer array, got shape {ids.shape} of {ids.dtype}")
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise EmbeddingWriteError(f"vectors must be a 2-d float array [n, D], got shape {vectors.shape}")
    if not 1 <= vectors.shape[1] <= 2000:
        raise EmbeddingWriteError(f"vectors must have 1 to 2000 dimensions, got {vectors.shape[1]}")
    if len(ids) != len(vectors):
        raise EmbeddingWriteError(f"{len(ids)} ids but {len(vectors)} vectors")
    if mode != "upsert" and len(ids) == 0:
        raise EmbeddingWriteError(f"a full refresh with no rows would empty ml.{SPECS[kind].table}; refusing")
    if len(np.unique(ids)) != len(ids):
        raise EmbeddingWriteError(f"ids are not unique: {len(ids) - len(np.unique(ids))} duplicates")
    # float64 values beyond float32's range become inf here and are caught below.
    with np.errstate(over="ignore"):
        vectors32 = np.ascontiguousarray(vectors, dtype=np.float32)
    finite_rows = np.isfinite(vectors32).all(axis=1)
    if not finite_rows.all():
        bad = ids[~finite_rows]
        raise EmbeddingWriteError(
            f"{len(bad)} {kind} vectors hold NaN or inf (as float32), e.g. the one of {kind}_id {bad[0]}"
        )
    return ids.astype(np.int64), vectors32


def _mart_feature_hashes(conn: psycopg.Connection, kind: EmbeddingKind, ids: np.ndarray) -> list[str | None]:
    """Each id's feature_hash in its mart, read in the writing transaction: the hash of the features the vectors
    were computed from, since the refresh jobs never run dbt while they embed (one at a time, by their
    teamu/writes tag). None for an id the mart lacks, and everywhere without a dbt-built mart (embeddings
    written outside the pipeline, over hand-made tables: the serving tests and benchmark)."""
    mart = SPECS[kind].feature_mart
    if not _has_feature_hash(conn, mart):
        return [None] * len(ids)
    id_column = sql.Identifier(SPECS[kind].id_column)
    query = sql.SQL("select {id}, feature_hash from {mart} where {id} = any(%s)").format(
        id=id_column, mart=sql.Identifier(*mart.split("."))
    )
    hashes = dict(conn.execute(query, (ids.tolist(),)).fetchall())
    return [hashes.get(row_id) for row_id in ids.tolist()]


def _copy_rows(
    conn: psycopg.Connection,
    target: sql.Composable,
    ids: np.ndarray,
    vectors: np.ndarray,
    model_version: str,
    feature_hashes: list[str | None],
) -> None:
    copy_statement = sql.SQL("copy {} from stdin (format binary)").format(target)
    with conn.cursor().copy(copy_statement) as copy:
        copy.set_types(["int8", "vector", "text", "text"])
        for row_id, vector, feature_hash in zip(ids.tolist(), vectors, feature_hashes, strict=True):
            copy.write_row((row_id, vector, model_version, feature_hash))


def _live_model_versions(conn: psycopg.Connection, table: str) -> list[str]:
    query = sql.SQL("select distinct model_version from ml.{} order by 1").format(sql.Identifier(table))
    return [row[0] for row in conn.execute(query)]


def _swap_in(conn: psycopg.Connection, kind: EmbeddingKind) -> None:
    """Replace ml.<kind>_embeddings with the staged table atomically (within the caller's transaction).

    DROP TABLE takes ACCESS EXCLUSIVE on the live table until commit: readers that arrive meanwhile wait, then
    (their plans being invalidated by the drop) look the name up again and read the new, complete table.
    """
    table, staged = SPECS[kind].table, SPECS[kind].staged_table
    renames = [
        sql.SQL("drop table if exists ml.{}").format(sql.Identifier(table)),
        sql.SQL("alter table ml.{} rename to {}").format(sql.Identifier(staged), sql.Identifier(table)),
        sql.SQL("alter index ml.{} rename to {}").format(
            sql.Identifier(f"{staged}_pkey"), sql.Identifier(f"{table}_pkey")
        ),
    ]
    if SPECS[kind].indexed:
        renames.append(
            sql.SQL("alter index ml.{} rename to {}").format(
                sql.Identifier(f"{staged}_embedding_hnsw"), sql.Identifier(f"{table}_embedding_hnsw")
            )
        )
    conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT)))
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            with conn.transaction():  # a savepoint: a lock timeout doesn't throw away the built index
                for statement in renames:
                    conn.execute(statement)
            break
        except psycopg.errors.LockNotAvailable:
            if attempt == SWAP_ATTEMPTS:
                raise


def _refuse_other_dimension(conn: psycopg.Connection, kind: EmbeddingKind, dim: int) -> bool:
    """Whether the live table exists; raises when it holds another dimension than the vectors'."""
    table = SPECS[kind].table
    existing_dim = _table_dimension(conn, table)
    if existing_dim is not None and dim != existing_dim:
        raise EmbeddingWriteError(f"ml.{table} holds vector({existing_dim}) but the vectors have {dim} dimensions")
    return existing_dim is not None


def _stage(
    conn: psycopg.Connection, kind: EmbeddingKind, ids: np.ndarray, vectors: np.ndarray, model_version: str
) -> tuple[float, float]:
    """Load ml.<kind>_embeddings_staged (replacing an earlier staged table) and build its primary key and HNSW
    index; returns (copy seconds, index seconds). Readers never read the staged table."""
    staged, dim = SPECS[kind].staged_table, vectors.shape[1]
    feature_hashes = _mart_feature_hashes(conn, kind, ids)
    conn.execute("create schema if not exists ml")
    conn.execute(sql.SQL("drop table if exists ml.{}").format(sql.Identifier(staged)))
    conn.execute(_table_ddl(kind, staged, dim))
    copy_started = time.perf_counter()
    target = sql.SQL("ml.{} ({}, embedding, model_version, feature_hash)").format(
        sql.Identifier(staged), sql.Identifier(SPECS[kind].id_column)
    )
    _copy_rows(conn, target, ids, vectors, model_version, feature_hashes)
    copy_seconds = time.perf_counter() - copy_started
    index_started = time.perf_counter()
    _create_indexes(conn, kind, staged)
    return copy_seconds, time.perf_counter() - index_started


def _upsert(
    conn: psycopg.Connection, kind: EmbeddingKind, ids: np.ndarray, vectors: np.ndarray, model_version: str
) -> float:
    """INSERT ... ON CONFLICT DO UPDATE through a temporary table; returns the COPY's seconds."""
    table, id_column, dim = SPECS[kind].table, SPECS[kind].id_column, vectors.shape[1]
    other_version = conn.execute(
        sql.SQL("select model_version from ml.{} where model_version <> %s limit 1").format(sql.Identifier(table)),
        (model_version,),
    ).fetchone()
    if other_version is not None:
        raise EmbeddingWriteError(
            f"ml.{table} holds model version {other_version[0]!r}; upserting {model_version!r} "
            "would mix vectors of different models (do a full refresh instead)"
        )
    feature_hashes = _mart_feature_hashes(conn, kind, ids)
    conn.execute(
        sql.SQL(
            "create temporary table embeddings_upsert ({id} bigint not null, embedding vector({dim}) not null,"
            " model_version text not null, feature_hash text) on commit drop"
        ).format(id=sql.Identifier(id_column), dim=sql.Literal(dim))
    )
    copy_started = time.perf_counter()
    _copy_rows(conn, sql.Identifier("embeddings_upsert"), ids, vectors, model_version, feature_hashes)
    copy_seconds = time.perf_counter() - copy_started
    conn.execute(
        sql.SQL(
            "insert into ml.{table} ({id}, embedding, model_version, updated_at, feature_hash)"
            " select {id}, embedding, model_version, now(), feature_hash from embeddings_upsert"
            " on conflict ({id}) do update set embedding = excluded.embedding,"
            " model_version = excluded.model_version, updated_at = excluded.updated_at,"
            " feature_hash = excluded.feature_hash"
        ).format(table=sql.Identifier(table), id=sql.Identifier(id_column))
    )
    return copy_seconds


def write(
    conn: psycopg.Connection,
    kind: EmbeddingKind,
    ids: np.ndarray,
    vectors: np.ndarray,
    model_version: str,
    *,
    mode: WriteMode,
) -> WriteResult:
    """Write one model version's embeddings of one kind, inside the caller's transaction (which it commits).

    full: stage a new table (binary COPY, primary key, HNSW index) and swap it in within the same transaction;
    readers see the old table or the new one, never a partial or empty one. For a rewrite with the model
    already served: a new model goes through staged + publish, so that both kinds and the promotion change
    together.
    staged: load and index ml.<kind>_embeddings_staged only; publish swaps it in.
    upsert: COPY into a temporary table, then INSERT ... ON CONFLICT DO UPDATE; the model version must be the
    one the table already holds, since vectors of different models don't share a space.
    Every row records its mart row's feature_hash as of the write (_mart_feature_hashes).
    Raises EmbeddingWriteError before writing anything on a bad kind/mode, NaN/inf, duplicate ids or a
    dimension other than the table's.
    """
    started = time.perf_counter()
    ids, vectors = _validated(kind, ids, vectors, model_version, mode)
    copy_seconds = index_seconds = 0.0
    lock_writes(conn, kind)
    exists = _refuse_other_dimension(conn, kind, vectors.shape[1])
    if mode == "upsert":
        if not exists:
            conn.execute("create schema if not exists ml")
            _ensure_table(conn, kind, vectors.shape[1])
        else:
            # Only here: a full refresh swaps in a new table with the column, and altering the live one first
            # would hold its ACCESS EXCLUSIVE lock, and block readers, through the whole index build.
            _ensure_feature_hash_column(conn, kind)
        if len(ids):
            copy_seconds = _upsert(conn, kind, ids, vectors, model_version)
    else:
        copy_seconds, index_seconds = _stage(conn, kind, ids, vectors, model_version)
        if mode == "full":
            _swap_in(conn, kind)
    return WriteResult(
        kind=kind,
        mode=mode,
        rows=len(ids),
        model_version=model_version,
        copy_seconds=copy_seconds,
        index_seconds=index_seconds,
        total_seconds=time.perf_counter() - started,
    )


def write_embeddings(
    url: str,
    kind: EmbeddingKind,
    ids: np.ndarray,
    vectors: np.ndarray,
    model_version: str,
    *,
    mode: WriteMode,
) -> WriteResult:
    """write() in a connection and transaction of its own (tests, benchmarks, the online updater)."""
    with connect(url) as conn:
        register_vector(conn)
        return write(conn, kind, ids, vectors, model_version, mode=mode)


def staged_versions(conn: psycopg.Connection) -> dict[str, list[str]]:
    """kind -> the model versions its staged table holds (absent: nothing staged)."""
    return {
        kind: _live_model_versions(conn, SPECS[kind].staged_table)
        for kind in KINDS
        if _table_dimension(conn, SPECS[kind].staged_table) is not None
    }


def publish(conn: psycopg.Connection, model_version: str) -> bool:
    """Swap in every kind's staged table and mark model_version the one promoted model, in the caller's
    transaction, when every kind has staged that version; otherwise change nothing (the kind staged last
    publishes). Returns whether model_version is served with nothing of it left staged. The swaps and the
    promotion commit together or not at all: users and posts are never on two models, and ml.model_versions
    never names a model the tables don't hold."""
    for kind in KINDS:  # always in this order, so two publishers can't deadlock
        lock_writes(conn, kind)
    staged = staged_versions(conn)
    if any(staged.get(kind) != [model_version] for kind in KINDS):
        # Not both staged: either the other kind's step is still running, or it has published already.
        served = registry.served_model(conn)
        return served is not None and served.model_version == model_version and not staged
    for kind in KINDS:
        _swap_in(conn, kind)
    registry.promote(conn, model_version)
    return True


def embedding_checks(url: str, kind: EmbeddingKind) -> dict[str, Any]:
    """checks() on a connection of its own."""
    with connect(url) as conn:
        return checks(conn, kind)


def checks(conn: psycopg.Connection, kind: EmbeddingKind, *, staged: bool = False) -> dict[str, Any]:
    """What the Dagster asset checks assert about ml.<kind>_embeddings (staged: its staged table, before it is
    published).

    Keys: table, exists, dimension, row_count, null_embedding_count, non_finite_count, norm_min, norm_max,
    norm_mean, norm_rows, model_versions (sorted), hnsw_index_expected, hnsw_index_present.
    The norm figures cover the rows of the latest write (one write stamps all its rows with its transaction's
    time): a full refresh writes every row, an incremental upsert only the changed ones. The checks run after
    every write, so every vector is checked once, and an incremental refresh does not read every vector of a
    large table (~1.2 s at 100k x 512 on two cores). pgvector refuses NaN/inf on input, so non_finite_count (a
    NaN or infinite norm) guards against a future storage change rather than against the writer.
    """
    table = SPECS[kind].staged_table if staged else spec(kind).table
    result: dict[str, Any] = {"table": f"ml.{table}", "hnsw_index_expected": SPECS[kind].indexed}
    dimension = _table_dimension(conn, table)
    result["exists"] = dimension is not None
    result["dimension"] = dimension
    if dimension is None:
        return result | {
            "row_count": 0,
            "null_embedding_count": 0,
            "non_finite_count": 0,
            "norm_min": None,
            "norm_max": None,
            "norm_mean": None,
            "norm_rows": 0,
            "model_versions": [],
            "hnsw_index_present": False,
        }
    stats = conn.execute(
        sql.SQL(
            "with latest as (select max(updated_at) as written_at from ml.{table}),"
            " norms as (select embedding is null as missing, updated_at = latest.written_at as in_latest,"
            # Only the latest write's vectors are read (a CASE evaluates its branch only when it holds).
            " case when updated_at = latest.written_at then vector_norm(embedding) end as norm"
            " from ml.{table}, latest)"
            " select count(*), count(*) filter (where missing),"
            " count(*) filter (where norm = 'NaN'::float8 or norm in ('Infinity', '-Infinity')),"
            " min(norm) filter (where norm < 'Infinity'), max(norm) filter (where norm < 'Infinity'),"
            " avg(norm) filter (where norm < 'Infinity'), count(*) filter (where in_latest) from norms"
        ).format(table=sql.Identifier(table))
    ).fetchone()
    hnsw = conn.execute(
        "select count(*) from pg_indexes where schemaname = 'ml' and tablename = %s"
        " and indexdef ilike '%%using hnsw%%vector_ip_ops%%'",
        (table,),
    ).fetchone()[0]
    versions = _live_model_versions(conn, table)
    row_count, nulls, non_finite, norm_min, norm_max, norm_mean, norm_rows = stats
    return result | {
        "row_count": row_count,
        "null_embedding_count": nulls,
        "non_finite_count": non_finite,
        "norm_min": norm_min,
        "norm_max": norm_max,
        "norm_mean": norm_mean,
        "norm_rows": norm_rows,
        "model_versions": versions,
        "hnsw_index_present": hnsw > 0,
    }
