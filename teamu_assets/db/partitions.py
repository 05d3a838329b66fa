"""The embedding refresh split into partitions by a hash of the id, keeping the atomic swap.

A full re-embed of millions of users is N independent pieces of work: partition p holds the ids whose hash
falls in p (partition_of), each partition is embedded and written by a step of its own (a pod of its own on
Kubernetes), and a failed partition is retried alone. Readers must still never see a mix of two refreshes or an
empty table, so the partitions never write to the live table:

1. stage_partition writes partition p's rows into ml.<kind>_embeddings_part<N>_<p>, an unindexed table only
   the refresh reads, in one transaction: a retried partition replaces its own staged rows, nothing else.
2. publish_partitions, once every one of the N partitions is staged with the promoted model, builds the
   staged table of teamu_assets.db.embeddings (the union of the N, its primary key, the HNSW index for posts)
   and swaps it in with that module's swap, all in one transaction: readers see the old table until the commit
   and the complete new one after it (the swap's DROP waits for running readers and makes new ones wait for the
   commit). Then the partition tables are dropped in the same transaction. Missing partitions, partitions of
   another model version, or a model that is no longer the promoted one change nothing: the live table stays.

Writers of a kind take embeddings.lock_writes, as every other writer does: the publish can't interleave with an
upsert of the online updater or the incremental refresh. A new model is promoted by the embedding store's
publish (both kinds and ml.model_versions in one transaction); a staged table of it waiting for its other kind
makes publish_partitions refuse, rather than replace it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from teamu_assets.db import embeddings, registry
from teamu_assets.db.connection import connect
from teamu_assets.db.embeddings import SPECS, EmbeddingKind, EmbeddingWriteError

# Partitions of the refresh in the Dagster code location (static partitions "0".."N-1"): enough for the
# 10M-user full re-embed to fan out over pods (docs/SCALING.md), few enough that each partition's fixed costs
# (a pod start, loading the towers) stay small beside its rows.
DEFAULT_PARTITIONS = 16
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def partition_of(ids: np.ndarray, partitions: int) -> np.ndarray:
    """Each id's partition in [0, partitions): splitmix64's finalizer of the id, modulo partitions. Stable
    across processes and machines (unlike Python's hash of a str), and it spreads consecutive ids, which
    arrive together (sign-up order), over every partition."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX_1
        x = (x ^ (x >> np.uint64(27))) * _MIX_2
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(partitions)).astype(np.int64)


def partition_table(kind: EmbeddingKind, partition: int, partitions: int) -> str:
    """Partition p of an N-way refresh; N is in the name, so a refresh with another N never mixes with it."""
    return f"{SPECS[kind].table}_part{partitions}_{partition}"


def _check_partition(partition: int, partitions: int) -> None:
    if not 0 <= partition < partitions:
        raise EmbeddingWriteError(f"partition must be in [0, {partitions}), got {partition}")


@dataclass(frozen=True)
class PublishResult:
    published: bool
    # Why nothing was published (empty when it was): the partitions missing, or of other versions.
    reason: str
    rows: int
    seconds: float


def stage_partition(
    url: str,
    kind: EmbeddingKind,
    partition: int,
    partitions: int,
    ids: np.ndarray,
    vectors: np.ndarray,
    model_version: str,
) -> int:
    """Write one partition's vectors to its staging table (replacing what an earlier try staged there); every
    id must belong to the partition. Readers never read it. Returns the rows written."""
    _check_partition(partition, partitions)
    # A partition may be empty (a small table, many partitions): it is staged all the same, so the publish
    # knows it is done. The publish refuses a union with no rows at all.
    mode = "upsert" if len(ids) == 0 else "staged"
    ids, vectors = embeddings._validated(kind, ids, vectors, model_version, mode)
    outside = partition_of(ids, partitions) != partition
    if outside.any():
        raise EmbeddingWriteError(f"{int(outside.sum())} ids are not in partition {partition} of {partitions}")
    table = partition_table(kind, partition, partitions)
    with connect(url) as conn:
        register_vector(conn)
        conn.execute("create schema if not exists ml")
        conn.execute(sql.SQL("drop table if exists ml.{}").format(sql.Identifier(table)))
        conn.execute(embeddings._table_ddl(kind, table, vectors.shape[1]))
        target = sql.SQL("ml.{} ({}, embedding, model_version, feature_hash)").format(
            sql.Identifier(table), sql.Identifier(SPECS[kind].id_column)
        )
        hashes = embeddings._mart_feature_hashes(conn, kind, ids)
        embeddings._copy_rows(conn, target, ids, vectors, model_version, hashes)
    return len(ids)


def _staged_versions(conn: psycopg.Connection, kind: EmbeddingKind, partitions: int) -> dict[int, list[str]]:
    """partition -> the model versions its table holds, for the partitions that are staged."""
    versions = {}
    for partition in range(partitions):
        table = partition_table(kind, partition, partitions)
        if embeddings._table_dimension(conn, table) is not None:
            versions[partition] = embeddings._live_model_versions(conn, table)
    return versions


def publish_partitions(url: str, kind: EmbeddingKind, partitions: int, model_version: str) -> PublishResult:
    """Swap in the union of the N staged partitions when every one holds model_version and nothing else (see
    the module's docstring); otherwise leave everything as it is and say why."""
    started = time.perf_counter()
    spec = SPECS[kind]
    with connect(url) as conn:
        embeddings.lock_writes(conn, kind)
        versions = _staged_versions(conn, kind, partitions)
        missing = [p for p in range(partitions) if p not in versions]
        # An empty partition holds no version at all.
        other = sorted(p for p, held in versions.items() if held not in ([], [model_version]))
        reason = ""
        served = registry.served_model(conn)
        if served is None or served.model_version != model_version:
            # A new model was promoted (both kinds swapped with it) while the partitions were staged: publishing
            # them would put this kind back on the old model beside the other kind on the new one.
            reason = f"{model_version} is not the promoted model ({served.model_version if served else 'none'})"
        elif missing:
            reason = f"partitions not staged yet: {missing}"
        elif other:
            reason = f"partitions staged with another model version than {model_version}: {other}"
        elif embeddings._table_dimension(conn, spec.staged_table) is not None:
            reason = f"ml.{spec.staged_table} holds a model waiting to be published with its other kind"
        if reason:
            return PublishResult(False, reason, 0, time.perf_counter() - started)
        tables = [partition_table(kind, p, partitions) for p in range(partitions)]
        dims = {embeddings._table_dimension(conn, table) for table in tables}
        if len(dims) != 1:
            raise EmbeddingWriteError(f"the partitions of ml.{spec.table} hold different dimensions: {sorted(dims)}")
        live_dim = embeddings._table_dimension(conn, spec.table)
        if live_dim is not None and live_dim not in dims:
            raise EmbeddingWriteError(f"ml.{spec.table} holds vector({live_dim}), the partitions {dims.pop()}")
        conn.execute(embeddings._table_ddl(kind, spec.staged_table, dims.pop()))
        union = sql.SQL(" union all ").join(
            sql.SQL("select * from ml.{}").format(sql.Identifier(table)) for table in tables
        )
        rows = conn.execute(sql.SQL("insert into ml.{} {}").format(sql.Identifier(spec.staged_table), union)).rowcount
        if rows == 0:
            raise EmbeddingWriteError(f"every partition of ml.{spec.table} is empty: refusing to empty it")
        # The primary key refuses an id staged twice (a partition written with another N's hash, say).
        embeddings._create_indexes(conn, kind, spec.staged_table)
        embeddings._swap_in(conn, kind)
        for table in tables:
            conn.execute(sql.SQL("drop table ml.{}").format(sql.Identifier(table)))
    return PublishResult(True, "", rows, time.perf_counter() - started)


def partition_ids(url: str, kind: EmbeddingKind, partition: int, partitions: int) -> list[int]:
    """The ids of the kind's feature mart that fall in the partition: what its step embeds."""
    _check_partition(partition, partitions)
    spec = SPECS[kind]
    query = sql.SQL("select {} from {}").format(
        sql.Identifier(spec.id_column), sql.Identifier(*spec.feature_mart.split("."))
    )
    with connect(url) as conn:
        ids = np.array([row[0] for row in conn.execute(query)], dtype=np.int64)
    return ids[partition_of(ids, partitions) == partition].tolist()
