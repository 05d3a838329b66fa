"""Reading the dbt marts and the recommendation events into pandas, in the shapes the model package takes."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import psycopg
from psycopg import sql

from teamu_assets.contract import RECOMMENDATION_CLICKED, RECOMMENDATION_SHOWN
from teamu_assets.db.connection import connect
from teamu_assets.db.embeddings import SPECS, EmbeddingKind, has_feature_hash_column

USER_FEATURES_SQL = """
select user_id, username, bio, passions, latitude, longitude, project_titles, created_post_titles,
       viewed_count, upvoted_count, commented_count, recent_post_ids, created_at, updated_at, feature_hash
from marts.user_features
"""

POST_FEATURES_SQL = """
select post_id, user_id, title, description, post_length, comments, vote_count, view_count,
       coalesce(extract(epoch from avg_time_viewed), 0)::float8 as avg_time_viewed_seconds,
       is_local, latitude, longitude, created_at, updated_at, feature_hash
from marts.post_features
"""

INTERACTIONS_SQL = "select user_id, post_id, kind, occurred_at from marts.interactions"
# The projects whose titles the user mart lists (marts.user_features.project_titles), with when each was created.
PROJECTS_SQL = "select project_id, user_id, title, created_at from staging.stg_supabase__projects"

# marts.post_features' comments and view time as they read at a moment (%(as_of)s): the mart aggregates every
# comment and view without their times, so these come from the rows it aggregates (the staging view of Supabase's
# comments, marts.interactions), in the mart's order and units.
POST_ACTIVITY_BEFORE_SQL = """
select coalesce(c.post_id, v.post_id) as post_id, coalesce(c.comments, '{}') as comments,
       v.avg_time_viewed_seconds
from (
    select post_id, array_agg(body order by created_at desc, comment_id desc) as comments
    from staging.stg_supabase__comments
    where body is not null and created_at < %(as_of)s
    group by post_id
) c
full join (
    select post_id, avg(duration_ms)::float8 / 1000 as avg_time_viewed_seconds
    from marts.interactions
    where kind = 'view' and occurred_at < %(as_of)s
    group by post_id
) v on v.post_id = c.post_id
"""

RECOMMENDATION_EVENTS_SQL = """
select event, distinct_id, event_time as time,
       properties->>'request_id' as request_id,
       properties->'post_ids' as post_ids,
       (properties->>'post_id')::bigint as post_id,
       properties->>'model_version' as model_version
from raw_mixpanel.events
where event = any(%s)
"""


def _frame(url: str, query: str, params: tuple[object, ...] | dict[str, object] = ()) -> pd.DataFrame:
    with connect(url) as conn:
        cursor = conn.execute(query, params)
        columns = [column.name for column in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def _with_utc(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def read_user_features(url: str, user_ids: list[int] | None = None) -> pd.DataFrame:
    query, params = USER_FEATURES_SQL, ()
    if user_ids is not None:
        query, params = query + " where user_id = any(%s)", (user_ids,)
    return _with_utc(_frame(url, query, params), "created_at", "updated_at")


def read_post_features(url: str, post_ids: list[int] | None = None) -> pd.DataFrame:
    query, params = POST_FEATURES_SQL, ()
    if post_ids is not None:
        query, params = query + " where post_id = any(%s)", (post_ids,)
    frame = _with_utc(_frame(url, query, params), "created_at", "updated_at")
    frame["avg_time_viewed_seconds"] = frame["avg_time_viewed_seconds"].astype(float)
    return frame


def read_post_activity_before(url: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """post_id, comments (newest first), avg_time_viewed_seconds (NaN without a timed view): the post mart's
    comments and view time from before `as_of` only, one row per post with either (dataset.post_features_as_of)."""
    frame = _frame(url, POST_ACTIVITY_BEFORE_SQL, {"as_of": pd.Timestamp(as_of).to_pydatetime()})
    frame["avg_time_viewed_seconds"] = frame["avg_time_viewed_seconds"].astype(float)
    return frame


def read_projects(url: str) -> pd.DataFrame:
    """project_id, user_id (the owner), title, created_at: what dataset.profile_as_of trims project_titles with."""
    return _with_utc(_frame(url, PROJECTS_SQL), "created_at")


def read_interactions(url: str) -> pd.DataFrame:
    return _with_utc(_frame(url, INTERACTIONS_SQL), "occurred_at")


def data_clock(url: str) -> pd.Timestamp | None:
    """The newest interaction's time: "now" as far as the data goes (behind the wall clock for replayed or
    synthetic data, equal to it in production). Post ages for serving embeddings are measured at it."""
    with connect(url) as conn:
        newest = conn.execute("select max(occurred_at) from marts.interactions").fetchone()[0]
    return None if newest is None else pd.Timestamp(newest)


def read_recommendation_events(url: str) -> pd.DataFrame:
    """Shown/Clicked events in the columns teamu_assets.evaluation.ctr takes."""
    return _with_utc(_frame(url, RECOMMENDATION_EVENTS_SQL, ([RECOMMENDATION_SHOWN, RECOMMENDATION_CLICKED],)), "time")


def changed_since_embedding(url: str, kind: EmbeddingKind) -> list[int]:
    with connect(url) as conn:
        return changed_ids(conn, kind)


def changed_ids(conn: psycopg.Connection, kind: EmbeddingKind) -> list[int]:
    """Ids whose mart feature_hash differs from the one their embedding was written with, or that have no
    embedding: the incremental set. The hash changes exactly when a row's feature values do, so a dbt full
    refresh (which recomputes every row and its refreshed_at) re-embeds nothing unless a value changed."""
    spec = SPECS[kind]
    id_column, mart = sql.Identifier(spec.id_column), sql.Identifier(*spec.feature_mart.split("."))
    if has_feature_hash_column(conn, kind):
        query = sql.SQL(
            "select f.{id} from {mart} f left join {table} e using ({id})"
            " where f.feature_hash is distinct from e.feature_hash"
        ).format(id=id_column, mart=mart, table=sql.Identifier("ml", spec.table))
    else:
        # A table from before feature_hash (or none yet): no embedding records what it was computed from.
        query = sql.SQL("select {id} from {mart}").format(id=id_column, mart=mart)
    return [row[0] for row in conn.execute(query)]


def row_count(url: str, table: str) -> int:
    """Rows of a mart or ml table named as schema.table (from this package's own constants only)."""
    schema_name, table_name = table.split(".")
    rows = table_row_count(url, schema_name, table_name)
    if rows is None:
        raise ValueError(f"{table} is not a table")
    return rows


def table_row_count(url: str, schema_name: str, table_name: str) -> int | None:
    with connect(url) as conn:
        return relation_rows(conn, schema_name, table_name)


def missing_relations(url: str, relations: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (schema, name) pairs of `relations` that don't exist in the database, in the order given."""
    wanted = list(relations)
    with connect(url) as conn:
        existing = set(
            conn.execute(
                "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where (n.nspname, c.relname) in (select * from unnest(%s::text[], %s::text[]))",
                ([schema for schema, _ in wanted], [name for _, name in wanted]),
            ).fetchall()
        )
    return [relation for relation in wanted if relation not in existing]


def relation_rows(conn: psycopg.Connection, schema_name: str, table_name: str) -> int | None:
    """Rows of a table; None for a view (counting one runs its whole query) or a relation that does not exist."""
    kind = conn.execute(
        "select c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relname = %s",
        (schema_name, table_name),
    ).fetchone()
    if kind is None or kind[0] not in ("r", "p"):
        return None
    query = sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema_name), sql.Identifier(table_name))
    return conn.execute(query).fetchone()[0]
