"""The embedding store: one object that owns the connection to the serving tables and the policy of writing them.

Modelled on an online feature store (Feast's Postgres store: `update()` runs the DDL once, the write path only
writes): install() creates the embedding tables and the serving functions, at bootstrap or on a full refresh;
ensure_ready() verifies them with a few catalog lookups and installs only what is missing or stale, so an
incremental run doesn't re-apply DDL or re-create the serving functions. The kind -> table/column mapping is
teamu_assets.db.embeddings.SPECS. No Dagster here: the Dagster resource (teamu_assets.resources.TeamuDatabase)
hands a store out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from teamu_assets.db import embeddings, features, recommend, registry
from teamu_assets.db.connection import connect
from teamu_assets.db.embeddings import SPECS, EmbeddingKind, WriteResult

# What an embedding write does, by the refresh that asks for it:
#   publish      the model the gate just approved: stage this kind, publish (swap both kinds and promote) once both
#                are staged (the full refresh after evaluation_report)
#   incremental  upsert the rows whose features changed since their embedding, with the promoted model (the sensor)
#   rewrite      the whole table again with the promoted model (the daily post-freshness job)
EmbeddingMode = Literal["publish", "incremental", "rewrite"]


@dataclass(frozen=True)
class WritePlan:
    """What one embedding write will do: with which model and which rows (ids None: every row), or why nothing."""

    model: registry.ModelVersion | None
    ids: list[int] | None
    reason: str  # why nothing is written; empty when something is

    @property
    def writes(self) -> bool:
        return self.model is not None and not self.reason


class StagedEmbeddingsRefused(RuntimeError):
    """A kind's staged vectors break the embedding checks' rules: they are not published."""


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any]


def serving_after(promoted: registry.ModelVersion | None) -> str:
    if promoted is None:
        return "serving keeps the popularity fallback (no model is promoted)"
    return f"serving keeps {promoted.model_version}"


class EmbeddingStore:
    """ml.user_embeddings / ml.post_embeddings and the serving functions, through one connection it owns (opened
    on first use, autocommit, each operation one explicit transaction). Not for concurrent use by threads; a
    store per Dagster step (the resource's), closed when the step ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, autocommit=True)
            register_vector(self._conn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # Installation: once, then verified.

    def install(self, dim: int | None = None) -> None:
        """Create or replace the serving functions and, given the model's dimension, the embedding tables."""
        conn = self.connection()
        with conn.transaction():
            recommend.install(conn)
            if dim is not None:
                embeddings.ensure_tables(conn, dim)

    def ensure_ready(self, dim: int | None = None) -> bool:
        """Verify the serving functions (and the tables of `dim`) with catalog lookups; install only when one is
        missing or stale. Returns whether anything was installed."""
        conn = self.connection()
        with conn.transaction():
            functions_ok = recommend.installed_current(conn)
            tables_ok = dim is None or embeddings.tables_ready(conn, dim)
        if functions_ok and tables_ok:
            return False
        with conn.transaction():
            if not functions_ok:
                recommend.install(conn)
            if not tables_ok:
                assert dim is not None  # tables_ok holds whenever dim is None
                embeddings.ensure_tables(conn, dim)
        return True

    # Reads.

    def promoted_model(self) -> registry.ModelVersion | None:
        with self.connection().transaction():
            return registry.served_model(self.connection())

    def plan(self, kind: EmbeddingKind, mode: EmbeddingMode) -> WritePlan:
        """The write-mode policy: which model writes which rows of `kind`, or why nothing is written."""
        conn = self.connection()
        with conn.transaction():
            promoted = registry.served_model(conn)
            if mode == "publish":
                evaluated = registry.last_evaluation(conn)
                if evaluated is None:
                    raise ValueError("no evaluated model yet: materialize evaluation_report first")
                if not evaluated.promoted:
                    # Reached only without the promotion_gate check in the run (it stops the embedding assets).
                    reason = f"{evaluated.model_version} was not promoted; {serving_after(promoted)}"
                    return WritePlan(None, None, reason)
                return WritePlan(registry.registered_model(conn, evaluated.model_version), None, "")
            if promoted is None:
                # The gate has refused every model so far (or none was trained): nothing to embed with, and
                # ml.recommend_posts serves its popularity fallback. Not an error: the refreshes go on.
                return WritePlan(None, None, f"nothing written: {serving_after(None)}")
            if mode == "rewrite":
                return WritePlan(promoted, None, "")
            ids = features.changed_ids(conn, kind)
            return WritePlan(promoted, ids, "" if ids else "no changed rows")

    def row_count(self, kind: EmbeddingKind) -> int:
        """Rows of the live table (what serving reads), 0 before it exists."""
        conn = self.connection()
        table = SPECS[kind].table
        if conn.execute("select to_regclass(%s)", (f"ml.{table}",)).fetchone()[0] is None:
            return 0
        return int(conn.execute(sql.SQL("select count(*) from ml.{}").format(sql.Identifier(table))).fetchone()[0])

    def checks(self, kind: EmbeddingKind) -> CheckOutcome:
        """The rules the embedding asset checks apply to ml.<kind>_embeddings."""
        conn = self.connection()
        with conn.transaction():
            stats = embeddings.checks(conn, kind)
            promoted = registry.served_model(conn)
            mart = SPECS[kind].feature_mart
            feature_rows = None if promoted is None else features.relation_rows(conn, *mart.split("."))
        return check_outcome(stats, promoted, mart, feature_rows)

    def _check_staged(self, conn: psycopg.Connection, kind: EmbeddingKind, model_version: str) -> None:
        """The checks' rules on the staged table, as if model_version were promoted: in a full refresh the first
        kind staged is published by the other kind's step, after its own blocking check ran on the table still
        served, so its new vectors are checked here, before anything is swapped in."""
        mart = SPECS[kind].feature_mart
        outcome = check_outcome(
            embeddings.checks(conn, kind, staged=True),
            registry.ModelVersion(model_version, artifact_path="", params={}),
            mart,
            features.relation_rows(conn, *mart.split(".")),
        )
        if not outcome.passed:
            raise StagedEmbeddingsRefused(
                f"the {kind} embeddings of {model_version} are not published: {outcome.description}"
            )

    # Writes.

    def write(
        self, kind: EmbeddingKind, ids: np.ndarray, vectors: np.ndarray, model_version: str, *, mode: EmbeddingMode
    ) -> tuple[WriteResult, bool]:
        """Write one kind's vectors as `mode` says; returns the write and whether the model is now served
        (publish: False until the other kind's vectors are staged too)."""
        conn = self.connection()
        if mode == "incremental":
            with conn.transaction():
                return embeddings.write(conn, kind, ids, vectors, model_version, mode="upsert"), True
        if mode == "rewrite":
            with conn.transaction():
                return embeddings.write(conn, kind, ids, vectors, model_version, mode="full"), True
        with conn.transaction():
            written = embeddings.write(conn, kind, ids, vectors, model_version, mode="staged")
            self._check_staged(conn, kind, model_version)  # refused: the staging is rolled back too
        return written, self.publish(model_version)

    def publish(self, model_version: str) -> bool:
        """Swap in both kinds' staged tables and promote model_version in one transaction, once both are staged."""
        conn = self.connection()
        with conn.transaction():
            return embeddings.publish(conn, model_version)


def check_outcome(
    stats: dict[str, Any], promoted: registry.ModelVersion | None, mart: str, feature_rows: int | None
) -> CheckOutcome:
    """Nothing promoted: the table must be empty (the fallback serves everyone). Otherwise: one embedding per
    mart row, no NULL, non-finite or zero vector, one model version, the HNSW index where one belongs."""
    if promoted is None:
        empty = stats["row_count"] == 0
        return CheckOutcome(
            passed=empty,
            description=(
                "no model is promoted and no embeddings are served: ml.recommend_posts serves its popularity fallback"
                if empty
                else f"no model is promoted, yet {stats['table']} holds {stats['row_count']} vectors"
            ),
            metadata={"row_count": stats["row_count"], "promoted_model": "none"},
        )
    problems = []
    if stats["row_count"] != feature_rows:
        problems.append(f"{stats['row_count']} embeddings for {feature_rows} rows of {mart}")
    if stats["null_embedding_count"] or stats["non_finite_count"]:
        problems.append(f"{stats['null_embedding_count']} NULL and {stats['non_finite_count']} non-finite vectors")
    if stats["row_count"] and not stats["norm_min"] > 0:
        problems.append("a zero vector (it would score 0 against everything)")
    if len(stats["model_versions"]) > 1:
        problems.append(f"several model versions: {stats['model_versions']}")
    elif stats["model_versions"] and stats["model_versions"] != [promoted.model_version]:
        problems.append(f"vectors of {stats['model_versions'][0]}, but {promoted.model_version} is promoted")
    if stats["hnsw_index_expected"] and not stats["hnsw_index_present"]:
        problems.append("HNSW index missing")
    scalars = {key: value for key, value in stats.items() if isinstance(value, int | float | str | bool)}
    return CheckOutcome(
        passed=not problems,
        description="; ".join(problems)
        or f"one embedding per feature row, one model version; the latest write's {stats['norm_rows']} vectors"
        " finite and non-zero",
        metadata=scalars | {"feature_rows": feature_rows or 0, "model_versions": json.dumps(stats["model_versions"])},
    )
