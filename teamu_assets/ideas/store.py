"""ml.post_ideas: each team's ranked ideas, as the app reads them (DDL in teamu_assets/db/sql/ml.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from psycopg.types.json import Jsonb

from teamu_assets.db import schema
from teamu_assets.db.connection import connect
from teamu_assets.ideas.rank import RankedIdea


@dataclass(frozen=True)
class StoredIdea:
    project_id: int
    rank: int
    title: str
    description: str
    score: float
    reasons: list[dict]
    generator: str
    model_version: str
    generated_at: datetime


def write_post_ideas(
    url: str, teams: Sequence[tuple[int, Sequence[RankedIdea], str]], model_version: str
) -> datetime | None:
    """Replace the rows of every (project_id, ranked ideas, generator) given, all in one transaction: a reader
    sees every team's previous ideas or every team's new ones. Teams not given keep theirs. Writers run one after
    another (the asset and `teamu ideas --save` at once): each replaces what the one before it wrote. Returns the
    generated_at written (the transaction's time), None when nothing was given."""
    if not teams:
        return None
    schema.ensure(url, "ml", "ml.post_ideas")
    with connect(url) as conn:
        # SHARE ROW EXCLUSIVE conflicts with itself and with the ROW EXCLUSIVE lock a writer's delete or insert
        # takes, not with readers' ACCESS SHARE. Without it,
        # two writers of one team both deleted the rows before either inserted, and the second insert failed on
        # the (project_id, rank) key.
        conn.execute("lock table ml.post_ideas in share row exclusive mode")
        generated_at = conn.execute("select now()").fetchone()[0]
        conn.execute(
            "delete from ml.post_ideas where project_id = any(%s)", ([project_id for project_id, _, _ in teams],)
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into ml.post_ideas (project_id, rank, title, description, score, reasons, generator,"
                " model_version, generated_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        project_id,
                        ranked.rank,
                        ranked.idea.title,
                        ranked.idea.description,
                        ranked.score,
                        Jsonb([asdict(reason) for reason in ranked.reasons]),
                        generator,
                        model_version,
                        generated_at,
                    )
                    for project_id, ideas, generator in teams
                    for ranked in ideas
                ],
            )
    return generated_at


def read_post_ideas(url: str, project_id: int) -> list[StoredIdea]:
    with connect(url) as conn:
        rows = conn.execute(
            "select project_id, rank, title, description, score, reasons, generator, model_version, generated_at"
            " from ml.post_ideas where project_id = %s order by rank",
            (project_id,),
        ).fetchall()
    return [StoredIdea(*row) for row in rows]
