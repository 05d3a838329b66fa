"""The model registry (ml.model_versions), evaluation records (ml.model_evaluations) and the popularity
fallback's decay each evaluation chooses (ml.popularity_fallback).

ml.model_versions.promoted marks the model being served: it changes only in the transaction that swaps that
model's embeddings in (teamu_assets.db.embeddings.publish). ml.model_evaluations.promoted records the gate's
decision, which comes earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from teamu_assets.db import schema
from teamu_assets.db.connection import connect


@dataclass(frozen=True)
class ModelVersion:
    model_version: str
    artifact_path: str
    params: dict[str, Any]


@dataclass(frozen=True)
class EvaluationRecord:
    model_version: str
    evaluated_at: Any
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    segments: dict[str, Any]
    promoted: bool
    report_path: str | None
    gate: dict[str, Any]  # the gate's decision: promote, rule, reason, figures


def register_model_version(url: str, model_version: str, params: dict[str, Any], artifact_path: str) -> None:
    with connect(url) as conn:
        conn.execute(
            "insert into ml.model_versions (model_version, params, artifact_path) values (%s, %s, %s) "
            "on conflict (model_version) do update set params = excluded.params, "
            "artifact_path = excluded.artifact_path",
            (model_version, Jsonb(params), artifact_path),
        )


def promoted_model(url: str) -> ModelVersion | None:
    with connect(url) as conn:
        return served_model(conn)


def served_model(conn: psycopg.Connection) -> ModelVersion | None:
    """The promoted model: the one whose vectors ml.user_embeddings and ml.post_embeddings hold."""
    row = conn.execute(
        "select model_version, artifact_path, params from ml.model_versions where promoted "
        "order by trained_at desc limit 1"
    ).fetchone()
    return None if row is None else ModelVersion(*row)


def promote(conn: psycopg.Connection, model_version: str) -> None:
    """Make model_version the one promoted model, in the caller's transaction (the embedding swap's)."""
    updated = conn.execute(
        "update ml.model_versions set promoted = (model_version = %s) where promoted or model_version = %s",
        (model_version, model_version),
    ).rowcount
    if not updated:
        raise LookupError(f"model version {model_version} is not registered in ml.model_versions")


def model_version(url: str, version: str) -> ModelVersion:
    with connect(url) as conn:
        return registered_model(conn, version)


def registered_model(conn: psycopg.Connection, version: str) -> ModelVersion:
    row = conn.execute(
        "select model_version, artifact_path, params from ml.model_versions where model_version = %s", (version,)
    ).fetchone()
    if row is None:
        raise LookupError(f"model version {version} is not registered in ml.model_versions")
    return ModelVersion(*row)


def record_evaluation(
    url: str,
    model_version: str,
    *,
    metrics: dict[str, Any],
    baselines: dict[str, Any],
    segments: dict[str, Any],
    promote: bool,
    report_path: str,
    gate: dict[str, Any] | None = None,
    fallback: dict[str, Any] | None = None,
) -> None:
    """Store the evaluation and the gate's decision (promote, rule, reason, figures), and with `fallback`
    (FallbackChoice.as_json) the popularity fallback's decay chosen with it, in one transaction. A promote
    decision does not promote yet: the embedding assets publish the model's vectors and promote it in one
    transaction; the fallback's decay applies from the commit on."""
    if fallback is not None:
        schema.ensure(url, "ml", "ml.popularity_fallback")
    with connect(url) as conn:
        if fallback is not None:
            conn.execute(
                "insert into ml.popularity_fallback (model_version, decay, validation) values (%s, %s, %s)",
                (model_version, float(fallback["decay"]), Jsonb(fallback)),
            )
        conn.execute(
            "insert into ml.model_evaluations"
            " (model_version, metrics, baselines, segments, promoted, report_path, gate)"
            " values (%s, %s, %s, %s, %s, %s, %s)",
            (
                model_version,
                Jsonb(metrics),
                Jsonb(baselines),
                Jsonb(segments),
                promote,
                report_path,
                Jsonb(gate or {}),
            ),
        )


_EVALUATION_COLUMNS = "model_version, evaluated_at, metrics, baselines, segments, promoted, report_path, gate"


def latest_evaluation(url: str, model_version: str | None = None) -> EvaluationRecord | None:
    with connect(url) as conn:
        return last_evaluation(conn, model_version)


def last_evaluation(conn: psycopg.Connection, model_version: str | None = None) -> EvaluationRecord | None:
    """The latest evaluation of any model, or of model_version."""
    row = conn.execute(
        f"select {_EVALUATION_COLUMNS} from ml.model_evaluations"
        " where %(version)s::text is null or model_version = %(version)s"
        " order by evaluated_at desc, evaluation_id desc limit 1",
        {"version": model_version},
    ).fetchone()
    return None if row is None else EvaluationRecord(*row)


def fallback_decay(url: str) -> float | None:
    """The popularity fallback's decay as ml.recommend_posts reads it: the newest choice, None before any."""
    with connect(url) as conn:
        row = conn.execute(
            "select decay from ml.popularity_fallback order by chosen_at desc, choice_id desc limit 1"
        ).fetchone()
    return None if row is None else float(row[0])
