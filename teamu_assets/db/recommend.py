"""The serving path from Python: install the SQL functions, ask them for a user's recommendations."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from teamu_assets.db.connection import connect

SERVING_FUNCTIONS_SQL = Path(__file__).parent / "sql" / "serving_functions.sql"
# The bounds ml.recommend_posts enforces on p_count and p_user_id (a bigint).
MAX_COUNT = 1000
MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True)
class Recommendation:
    post_id: int
    score: float
    title: str | None
    source: str  # 'model' or 'popularity fallback' (ml.recommend_posts decides per call)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def install_serving_functions(url: str) -> None:
    with connect(url) as conn:
        install(conn)


def install(conn: psycopg.Connection) -> None:
    """Create or replace ml.recommend_posts, ml.similar_posts and their helpers (idempotent), and record the
    digest of the file installed (ml.installed_sql, created by the file itself).

    Run at bootstrap: the functions read marts.interactions, marts.post_features and marts.user_features and
    the embedding tables when called (PL/pgSQL resolves tables at call time: creating them doesn't need them).
    """
    text = SERVING_FUNCTIONS_SQL.read_text()
    conn.execute("create schema if not exists ml")
    conn.execute(text)
    conn.execute(
        "insert into ml.installed_sql (name, digest) values ('serving_functions', %s)"
        " on conflict (name) do update set digest = excluded.digest, installed_at = now()",
        (_digest(text),),
    )


def installed_current(conn: psycopg.Connection) -> bool:
    """Whether the installed serving functions are this checkout's file: one catalog lookup and one row read,
    so a run can verify them instead of re-creating 200 lines of functions (and their locks) every time."""
    if conn.execute("select to_regclass('ml.installed_sql')").fetchone()[0] is None:
        return False
    row = conn.execute("select digest from ml.installed_sql where name = 'serving_functions'").fetchone()
    return row is not None and row[0] == _digest(SERVING_FUNCTIONS_SQL.read_text())


def recommend(url: str, user_id: int, count: int = 20) -> list[Recommendation]:
    """ml.recommend_posts(user_id, count) with each post's title, best first."""
    # psycopg binds a Python int past the bigint range as numeric, for which no ml.recommend_posts exists: with
    # the casts such a value fails as 'bigint out of range' instead.
    with connect(url) as conn:
        rows = conn.execute(
            "select r.post_id, r.score, pf.title, r.source"
            " from ml.recommend_posts(%s::bigint, %s::integer) with ordinality as r(post_id, score, source, rank)"
            " left join marts.post_features pf on pf.post_id = r.post_id"
            " order by r.rank",
            (user_id, count),
        ).fetchall()
    return [
        Recommendation(post_id=post_id, score=float(score), title=title, source=source)
        for post_id, score, title, source in rows
    ]


def is_known_user(url: str, user_id: int) -> bool:
    """Whether the user has a row in marts.user_features: an unknown id (or a sign-up the marts haven't seen yet)
    gets the popularity fallback, the same as a known user without an embedding."""
    with connect(url) as conn:
        row = conn.execute("select exists (select from marts.user_features where user_id = %s::bigint)", (user_id,))
        return bool(row.fetchone()[0])
