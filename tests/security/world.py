"""The security tests' world: a database prepared as `teamu db start` prepares one, after a deployment that
followed the old advice, and how PostgREST acts as a role.

Earlier docs (DATA_CONTRACT.md section 6) told Supabase deployments to grant the API roles usage on ml and marts,
select on their tables (also through default privileges) and to wrap ml.recommend_posts in public, taking any user
id. `build_world` applies those grants and that wrapper, then prepares the database again, as the next
`teamu db start` does: the tests check what the shim and the migrations leave behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect
from teamu_assets.db.embeddings import write_embeddings
from teamu_assets.db.recommend import install_serving_functions

DIM = 8
POST_IDS = list(range(1_000_001, 1_000_061))
SIGNED_IN = 42
OTHER_USER = 463
USER_IDS = [1, 2, 3, SIGNED_IN, OTHER_USER]
API_ROLES = ("anon", "authenticated")
# A table or view of every platform schema; none may be readable by the API roles.
PLATFORM_TABLES = (
    "marts.interactions",
    "marts.post_features",
    "marts.user_features",
    "marts.rebuilt_after_migration",
    "ml.user_embeddings",
    "ml.post_embeddings",
    "ml.model_versions",
    "ml.model_evaluations",
    "raw_supabase.users",
    "raw_supabase.votes",
    "raw_mixpanel.events",
    "raw_mixpanel.loaded_files",
    "staging.stg_events",
    "intermediate.int_interactions",
)
# The state a deployment that followed the old docs is in before the migration.
OLD_ADVICE_SQL = """
grant usage on schema ml, marts, raw_mixpanel to anon, authenticated;
grant select on all tables in schema ml, marts to authenticated;
grant select on all tables in schema raw_mixpanel to anon;
grant execute on all functions in schema ml to anon, authenticated;
alter default privileges in schema marts grant select on tables to authenticated;
alter default privileges in schema ml grant select on tables to authenticated;
create or replace function public.recommend_posts(
    p_user_id bigint, p_count integer default 20, p_local_radius_km double precision default 50
) returns table (post_id bigint, score real)
language sql security invoker
as $$ select r.post_id, r.score from ml.recommend_posts(p_user_id, p_count, p_local_radius_km) r $$;
grant execute on function public.recommend_posts(bigint, integer, double precision) to anon, authenticated;
"""


@dataclass(frozen=True)
class ApiWorld:
    url: str
    # ml.recommend_posts(user, 10) as the platform computes it, per user.
    expected: dict[int, list[tuple[int, float]]]


def _create_marts_and_friends(url: str, rng: np.random.Generator) -> None:
    """The marts columns the serving functions read, and a table or view in each dbt schema."""
    with connect(url) as conn:
        conn.execute(
            "create table marts.interactions (user_id bigint, post_id bigint, kind text, occurred_at timestamptz);"
            "create table marts.post_features (post_id bigint primary key, user_id bigint, title text,"
            " is_local boolean, latitude float8, longitude float8, engaged_user_count bigint, created_at timestamptz);"
            "create table marts.user_features (user_id bigint primary key, latitude float8, longitude float8,"
            " bio text, passions text[], project_titles text[], created_post_titles text[], recent_post_ids bigint[],"
            " viewed_count bigint, upvoted_count bigint, commented_count bigint);"
            "create schema staging; create view staging.stg_events as select * from raw_mixpanel.events;"
            "create schema intermediate; create table intermediate.int_interactions as table marts.interactions;"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "insert into marts.post_features values (%s, %s, %s, false, null, null, %s, now())",
                [(p, int(rng.choice([1, 2, 3])), f"Post {p}", int(rng.integers(0, 100))) for p in POST_IDS],
            )
            # Each user has seen other posts, so two users' lists differ even where their vectors are close; that
            # history is what the model serves them by (without one, nor a profile, they'd get the fallback).
            seen = {u: rng.choice(POST_IDS, 10, replace=False).tolist() for u in USER_IDS}
            cur.executemany(
                "insert into marts.user_features (user_id, recent_post_ids, viewed_count) values (%s, %s, %s)",
                [(u, posts, len(posts)) for u, posts in seen.items()],
            )
            cur.executemany(
                "insert into marts.interactions values (%s, %s, 'view', now())",
                [(u, p) for u, posts in seen.items() for p in posts],
            )
        conn.execute("insert into intermediate.int_interactions select * from marts.interactions")


def build_world(url: str) -> ApiWorld:
    rng = np.random.default_rng(13)
    bootstrap.prepare_app_database(url)
    install_serving_functions(url)
    _create_marts_and_friends(url, rng)
    post_vectors = rng.standard_normal((len(POST_IDS), DIM)).astype(np.float32)
    user_vectors = rng.standard_normal((len(USER_IDS), DIM)).astype(np.float32)
    write_embeddings(url, "post", np.array(POST_IDS), post_vectors, "m1", mode="full")
    write_embeddings(url, "user", np.array(USER_IDS), user_vectors, "m1", mode="full")
    with connect(url) as conn:
        conn.execute(OLD_ADVICE_SQL)
    bootstrap.prepare_app_database(url)  # the next `teamu db start`
    # Tables created after the migration, as a full embedding refresh and a dbt full refresh create them: the
    # default privileges the old advice set must not open them.
    write_embeddings(url, "post", np.array(POST_IDS), post_vectors, "m1", mode="full")
    with connect(url) as conn:
        conn.execute("create table marts.rebuilt_after_migration as table marts.user_features")
        expected = {
            user: conn.execute("select post_id, score from ml.recommend_posts(%s, 10)", (user,)).fetchall()
            for user in USER_IDS
        }
    return ApiWorld(url, expected)


@contextmanager
def acting_as(url: str, role: str, claims: dict[str, object] | None = None) -> Iterator[psycopg.Connection]:
    """A transaction as PostgREST runs a request: `set local role`, request.jwt.claims; rolled back after."""
    with connect(url) as conn:
        try:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims or {"role": role}),))
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
            yield conn
        finally:
            conn.rollback()


def signed_in(url: str, sub: object) -> AbstractContextManager[psycopg.Connection]:
    """As PostgREST runs a request with a signed-in user's JWT whose `sub` is `sub`."""
    return acting_as(url, "authenticated", {"sub": sub, "role": "authenticated"})
