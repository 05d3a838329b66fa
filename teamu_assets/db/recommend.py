"""The serving path from Python: install the SQL functions, ask them for a user's recommendations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from teamu_assets.db.connection import connect

SERVING_FUNCTIONS_SQL = Path(__file__).parent / "sql" / "serving_functions.sql"


@dataclass(frozen=True)
class Recommendation:
    post_id: int
    score: float
    title: str | None


def install_serving_functions(url: str) -> None:
    """Create or replace ml.recommend_posts, ml.similar_posts and their helpers (idempotent).

    Run after ml.sql and dbt's marts: the functions read marts.interactions, marts.post_features and
    marts.user_features when called (PL/pgSQL resolves tables at call time: creating them doesn't need them).
    """
    with connect(url) as conn:
        conn.execute("create schema if not exists ml")
        conn.execute(SERVING_FUNCTIONS_SQL.read_text())


def recommend(url: str, user_id: int, count: int = 20) -> list[Recommendation]:
    """ml.recommend_posts(user_id, count) with each post's title, best first."""
    with connect(url) as conn:
        rows = conn.execute(
            "select r.post_id, r.score, pf.title"
            " from ml.recommend_posts(%s, %s) with ordinality as r(post_id, score, rank)"
            " left join marts.post_features pf on pf.post_id = r.post_id"
            " order by r.rank",
            (user_id, count),
        ).fetchall()
    return [Recommendation(post_id=post_id, score=float(score), title=title) for post_id, score, title in rows]
