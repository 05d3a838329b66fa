"""The pgvector serving path: embedding writes (full swap, upsert, checks), ml.recommend_posts, similar_posts.

The module uses a database of its own, not the session's db_url: it creates minimal marts tables (only the
columns the serving functions read), which would clash with the real ones dbt builds in db_url.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import pytest
from pgvector.psycopg import register_vector

from teamu_assets.db import schema
from teamu_assets.db.connection import connect, scratch_database
from teamu_assets.db.embeddings import (
    EmbeddingWriteError,
    embedding_checks,
    ensure_embedding_tables,
    write_embeddings,
)
from teamu_assets.db.recommend import install_serving_functions, is_known_user, recommend
from teamu_assets.db.registry import fallback_decay
from teamu_assets.model.features import blank_user_ids

pytestmark = pytest.mark.integration

DIM = 16
N_POSTS = 400
N_USERS = 30
BERLIN = (52.52, 13.405)
POTSDAM = (52.39, 13.065)  # ~27 km from Berlin: inside the default 50 km radius
SYDNEY = (-33.87, 151.21)
USER_NEAR_EVERYTHING = 1  # the one whose nearest posts are made own, seen, near-local and far-local below
USER_WITHOUT_LOCATION = 2
USER_WHO_SAW_ALMOST_ALL = 3
USER_WITHOUT_EMBEDDING = N_USERS


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass
class World:
    url: str
    post_ids: np.ndarray
    post_vectors: np.ndarray
    user_ids: np.ndarray
    user_vectors: np.ndarray
    author: dict[int, int]
    far_local: set[int]
    near_local: set[int]
    seen: dict[int, set[int]]
    top_post_for_fallback: int


@pytest.fixture(scope="module")
def serving_url(server_url: str) -> Iterator[str]:
    # scratch_database's drop outwaits an autovacuum worker in the database, which the platform role can't end.
    with scratch_database(server_url, "teamu_serving") as url:
        schema.apply(url, "ml")
        install_serving_functions(url)
        yield url


@pytest.fixture
def world(serving_url: str) -> World:
    """Fresh embeddings and marts rows, rebuilt for every test (tiny, so this takes milliseconds)."""
    rng = np.random.default_rng(7)
    post_ids = np.arange(1, N_POSTS + 1, dtype=np.int64)
    user_ids = np.arange(1, N_USERS + 1, dtype=np.int64)
    post_vectors = unit_vectors(rng, N_POSTS)
    user_vectors = unit_vectors(rng, N_USERS)

    # User 1's 40 nearest posts by inner product: the first ten become own, the next ten seen, then ten local
    # posts in Sydney and ten local posts in Potsdam. Unfiltered, they'd fill the top of user 1's list.
    nearest = [int(post_ids[i]) for i in np.argsort(-(post_vectors @ user_vectors[0]))[:40]]
    own, seen_by_1, far_local, near_local = (set(nearest[i : i + 10]) for i in range(0, 40, 10))
    author = {int(p): int(rng.integers(4, N_USERS)) for p in post_ids}
    author.update(dict.fromkeys(own, USER_NEAR_EVERYTHING))
    rest = [int(p) for p in post_ids if int(p) not in set(nearest)]
    far_local |= set(rest[:30])
    near_local |= set(rest[30:60])
    seen = {int(u): {int(p) for p in rng.choice(post_ids, 15, replace=False)} for u in user_ids}
    seen[USER_NEAR_EVERYTHING] = seen_by_1
    seen[USER_WHO_SAW_ALMOST_ALL] = {int(p) for p in post_ids[:-25]}
    fallback_top = next(p for p in rest[60:] if p not in seen[USER_WITHOUT_EMBEDDING] and author[p] != N_USERS)
    decoy = next(iter(seen[USER_WITHOUT_EMBEDDING]))  # the most viewed post of all, but user 30 has seen it

    with connect(serving_url) as conn:
        conn.execute("drop schema if exists marts cascade")
        conn.execute(
            "create schema marts;"
            "create table marts.interactions"
            " (user_id bigint, post_id bigint, kind text, occurred_at timestamptz);"
            "create table marts.post_features (post_id bigint primary key, user_id bigint, title text,"
            " is_local boolean, latitude float8, longitude float8, engaged_user_count bigint,"
            " created_at timestamptz);"
            # The columns ml.recommend_posts reads to tell a blank user (nothing for the query tower to read).
            "create table marts.user_features"
            " (user_id bigint primary key, latitude float8, longitude float8, bio text, passions text[],"
            " project_titles text[], created_post_titles text[], recent_post_ids bigint[], viewed_count bigint,"
            " upvoted_count bigint, commented_count bigint);"
            # The app's votes (the columns the serving function reads): empty unless a test votes.
            "drop schema if exists raw_supabase cascade;"
            "create schema raw_supabase;"
            "create table raw_supabase.votes"
            " (vote_id bigint primary key, post_id bigint, user_id bigint, value smallint, created_at timestamptz);"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "insert into marts.post_features values (%s, %s, %s, %s, %s, %s, %s,"
                " now() - make_interval(days => %s))",
                [
                    (
                        p,
                        author[p],
                        f"Post {p}",
                        p in far_local or p in near_local,
                        *(SYDNEY if p in far_local else POTSDAM),
                        # Engaged users: most in the fallback's top post and the decoy.
                        {fallback_top: 5000, decoy: 90000}.get(p, int(rng.integers(0, 200)))
                        + max(int(rng.integers(-3, 20)), 0),
                        1 if p in (fallback_top, decoy) else int(rng.integers(1, 60)),
                    )
                    for p in map(int, post_ids)
                ],
            )
            # Every user has a history: the posts they have seen, newest first as the mart has them.
            cur.executemany(
                "insert into marts.user_features (user_id, latitude, longitude, recent_post_ids, viewed_count)"
                " values (%s, %s, %s, %s, %s)",
                [
                    (
                        int(u),
                        *((None, None) if u == USER_WITHOUT_LOCATION else BERLIN),
                        sorted(seen[int(u)])[:10],
                        len(seen[int(u)]),
                    )
                    for u in user_ids
                ],
            )
            cur.executemany(
                "insert into marts.interactions values (%s, %s, 'view', now())",
                [(u, p) for u, posts in seen.items() for p in posts],
            )
    write_embeddings(serving_url, "post", post_ids, post_vectors, "m1", mode="full")
    embedded_users = user_ids != USER_WITHOUT_EMBEDDING
    write_embeddings(serving_url, "user", user_ids[embedded_users], user_vectors[embedded_users], "m1", mode="full")
    return World(
        serving_url,
        post_ids,
        post_vectors,
        user_ids,
        user_vectors,
        author,
        far_local,
        near_local,
        seen,
        fallback_top,
    )


def recommend_rows(url: str, user_id: int | None, count: int | None = 20, **extra: float) -> list[tuple[int, float]]:
    args = ", ".join(["p_user_id => %s, p_count => %s", *[f"{name} => %s" for name in extra]])
    with connect(url) as conn:
        return conn.execute(
            f"select post_id, score from ml.recommend_posts({args})", (user_id, count, *extra.values())
        ).fetchall()


def sources(url: str, user_id: int) -> set[str]:
    with connect(url) as conn:
        return {row[0] for row in conn.execute("select source from ml.recommend_posts(%s, 50)", (user_id,))}


def eligible(world: World, user_id: int, *, has_location: bool = True) -> set[int]:
    return {
        int(p)
        for p in world.post_ids
        if int(p) not in world.seen[user_id]
        and world.author[int(p)] != user_id
        and int(p) not in world.far_local
        and (has_location or int(p) not in world.near_local)
    }


def test_full_write_round_trips_ids_vectors_and_model_version(world: World) -> None:
    with connect(world.url) as conn:
        register_vector(conn)
        rows = conn.execute("select post_id, embedding, model_version from ml.post_embeddings order by 1").fetchall()
    assert [r[0] for r in rows] == world.post_ids.tolist()
    assert {r[2] for r in rows} == {"m1"}
    np.testing.assert_array_equal(np.stack([r[1].to_numpy() for r in rows]), world.post_vectors)

    checks = embedding_checks(world.url, "post")
    assert checks["row_count"] == N_POSTS and checks["dimension"] == DIM
    assert checks["null_embedding_count"] == 0 and checks["non_finite_count"] == 0
    assert checks["norm_min"] == pytest.approx(1, abs=1e-5) and checks["norm_max"] == pytest.approx(1, abs=1e-5)
    assert checks["model_versions"] == ["m1"] and checks["norm_rows"] == N_POSTS
    assert checks["hnsw_index_expected"] and checks["hnsw_index_present"]
    user_checks = embedding_checks(world.url, "user")
    assert user_checks["row_count"] == N_USERS - 1 and not user_checks["hnsw_index_expected"]


def test_full_refresh_replaces_every_row_and_keeps_the_indexes(world: World) -> None:
    kept = world.post_ids[:100]
    vectors = unit_vectors(np.random.default_rng(1), len(kept))
    result = write_embeddings(world.url, "post", kept, vectors, "m2", mode="full")
    assert result.rows == 100 and result.copy_seconds > 0 and result.index_seconds > 0
    with connect(world.url) as conn:
        assert conn.execute(
            "select count(*), min(model_version), max(model_version) from ml.post_embeddings"
        ).fetchone() == (
            100,
            "m2",
            "m2",
        )
        indexes = {
            row[0] for row in conn.execute("select indexname from pg_indexes where tablename = 'post_embeddings'")
        }
        leftovers = conn.execute("select count(*) from pg_class where relname like 'post_embeddings_new%'").fetchone()
    assert indexes == {"post_embeddings_pkey", "post_embeddings_embedding_hnsw"}
    assert leftovers == (0,)


def test_upsert_updates_existing_rows_and_adds_new_ones(world: World) -> None:
    rng = np.random.default_rng(2)
    ids = np.array([5, 6, N_POSTS + 1], dtype=np.int64)
    vectors = unit_vectors(rng, 3)
    result = write_embeddings(world.url, "post", ids, vectors, "m1", mode="upsert")
    assert result.rows == 3
    with connect(world.url) as conn:
        register_vector(conn)
        rows = dict(
            conn.execute("select post_id, embedding from ml.post_embeddings where post_id = any(%s)", (ids.tolist(),))
        )
        count = conn.execute("select count(*) from ml.post_embeddings").fetchone()[0]
    assert count == N_POSTS + 1
    for post_id, vector in zip(ids.tolist(), vectors, strict=True):
        np.testing.assert_array_equal(rows[post_id].to_numpy(), vector)
    # The checks count every row but read the vectors of the latest write only (the upsert's three).
    checks = embedding_checks(world.url, "post")
    assert checks["row_count"] == N_POSTS + 1 and checks["norm_rows"] == 3
    assert checks["norm_min"] == pytest.approx(1, abs=1e-5) and checks["norm_max"] == pytest.approx(1, abs=1e-5)


def test_upsert_of_another_model_version_is_refused(world: World) -> None:
    with pytest.raises(EmbeddingWriteError, match="mix vectors of different models"):
        write_embeddings(
            world.url, "post", np.array([1]), unit_vectors(np.random.default_rng(3), 1), "m2", mode="upsert"
        )


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (np.array([1, 2]), np.array([[np.nan] + [0.0] * (DIM - 1), [1.0] + [0.0] * (DIM - 1)]), "NaN or inf"),
        (np.array([1]), np.array([[np.inf] + [0.0] * (DIM - 1)]), "NaN or inf"),
        (np.array([1]), np.array([[1e39] + [0.0] * (DIM - 1)]), "NaN or inf"),  # overflows float32
        (np.array([1]), np.ones((1, DIM + 1)) / np.sqrt(DIM + 1), "vector\\(16\\) but the vectors have 17"),
        (np.array([1, 1]), np.ones((2, DIM)) / 4, "not unique"),
        (np.array([1, 2]), np.ones((1, DIM)) / 4, "2 ids but 1 vectors"),
    ],
)
@pytest.mark.parametrize("mode", ["full", "upsert"])
def test_bad_embeddings_are_refused_before_anything_is_written(
    world: World, ids: np.ndarray, vectors: np.ndarray, message: str, mode: str
) -> None:
    with pytest.raises(EmbeddingWriteError, match=message):
        write_embeddings(world.url, "post", ids, vectors, "m1", mode=mode)
    assert embedding_checks(world.url, "post")["row_count"] == N_POSTS


def test_an_empty_full_refresh_and_another_dimension_are_refused(world: World) -> None:
    with pytest.raises(EmbeddingWriteError, match="empty"):
        write_embeddings(world.url, "post", np.array([], dtype=np.int64), np.zeros((0, DIM)), "m1", mode="full")
    with pytest.raises(EmbeddingWriteError, match="vector\\(16\\) but 8"):
        ensure_embedding_tables(world.url, 8)


def test_recommendations_skip_own_seen_and_far_local_posts(world: World) -> None:
    rows = recommend_rows(world.url, USER_NEAR_EVERYTHING, 20)
    post_ids = [post_id for post_id, _ in rows]
    assert len(post_ids) == 20 and len(set(post_ids)) == 20
    assert set(post_ids) <= eligible(world, USER_NEAR_EVERYTHING)
    assert set(post_ids) & world.near_local, "nearby local posts are eligible and among user 1's nearest"
    # Scores are the true inner products, best first, and close to the exact top 20.
    user_vector = world.user_vectors[USER_NEAR_EVERYTHING - 1]
    exact = {int(p): float(world.post_vectors[int(p) - 1] @ user_vector) for p in eligible(world, USER_NEAR_EVERYTHING)}
    for post_id, score in rows:
        assert score == pytest.approx(exact[post_id], abs=1e-5)
    assert [s for _, s in rows] == sorted((s for _, s in rows), reverse=True)
    exact_top = set(sorted(exact, key=exact.get, reverse=True)[:20])
    assert len(exact_top & set(post_ids)) >= 18


def _vote(url: str, vote_id: int, user_id: int, post_id: int, value: int, days_ago: int) -> None:
    with connect(url) as conn:
        conn.execute(
            "insert into raw_supabase.votes values (%s, %s, %s, %s, now() - make_interval(days => %s))",
            (vote_id, post_id, user_id, value, days_ago),
        )


def test_a_post_the_user_last_voted_down_is_never_recommended(world: World) -> None:
    """Without any view of it tracked (an ad blocker drops Mixpanel's calls), a downvote alone keeps the post out
    of the model's list and of the fallback's; where a later upvote replaced it, only the upvote counts."""
    before = [post_id for post_id, _ in recommend_rows(world.url, USER_NEAR_EVERYTHING, 20)]
    downvoted, revoted = before[0], before[1]
    _vote(world.url, 1, USER_NEAR_EVERYTHING, downvoted, -1, days_ago=0)
    _vote(world.url, 2, USER_NEAR_EVERYTHING, revoted, -1, days_ago=2)
    _vote(world.url, 3, USER_NEAR_EVERYTHING, revoted, 1, days_ago=1)
    _vote(world.url, 4, USER_NEAR_EVERYTHING + 3, before[2], -1, days_ago=0)  # someone else's downvote
    after = [post_id for post_id, _ in recommend_rows(world.url, USER_NEAR_EVERYTHING, 20)]
    assert downvoted not in after and len(after) == 20
    assert after[:2] == before[1:3]
    everything = {post_id for post_id, _ in recommend_rows(world.url, USER_NEAR_EVERYTHING, 1000)}
    assert everything == eligible(world, USER_NEAR_EVERYTHING) - {downvoted}

    assert recommend_rows(world.url, USER_WITHOUT_EMBEDDING, 1)[0][0] == world.top_post_for_fallback
    _vote(world.url, 5, USER_WITHOUT_EMBEDDING, world.top_post_for_fallback, -1, days_ago=0)
    fallback = [post_id for post_id, _ in recommend_rows(world.url, USER_WITHOUT_EMBEDDING, 20)]
    assert world.top_post_for_fallback not in fallback and len(fallback) == 20


def test_local_posts_follow_the_radius_and_need_a_location(world: World) -> None:
    for user_id in world.user_ids.tolist():
        if user_id == USER_WITHOUT_LOCATION:
            continue
        returned = {post_id for post_id, _ in recommend_rows(world.url, user_id, 50)}
        assert not returned & world.far_local, f"user {user_id} got a local post from Sydney"
    without_location = {post_id for post_id, _ in recommend_rows(world.url, USER_WITHOUT_LOCATION, 100)}
    assert len(without_location) == 100
    assert not without_location & (world.far_local | world.near_local)
    # Potsdam is ~27 km from Berlin: out of a 10 km radius; the whole planet's radius lets Sydney in.
    small = {post_id for post_id, _ in recommend_rows(world.url, USER_NEAR_EVERYTHING, 30, p_local_radius_km=10)}
    assert not small & world.near_local
    everywhere = {p for p, _ in recommend_rows(world.url, USER_NEAR_EVERYTHING, 30, p_local_radius_km=20100)}
    assert everywhere & world.far_local


def test_heavy_filtering_still_returns_the_count_asked_for(world: World) -> None:
    with connect(world.url) as conn:
        conn.execute("set enable_seqscan = off")  # take the HNSW path even on this small table
        rows = conn.execute("select post_id, score from ml.recommend_posts(%s, 10)", (USER_WHO_SAW_ALMOST_ALL,))
        rows = rows.fetchall()
        everything = conn.execute("select post_id from ml.recommend_posts(%s, 1000)", (USER_WHO_SAW_ALMOST_ALL,))
        everything = everything.fetchall()
    candidates = eligible(world, USER_WHO_SAW_ALMOST_ALL)
    assert 10 < len(candidates) <= 25
    assert len(rows) == 10 and {p for p, _ in rows} <= candidates
    assert {p for (p,) in everything} == candidates


def test_a_longer_page_searches_a_longer_candidate_list_for_the_call_only(world: World) -> None:
    """hnsw.ef_search grows with the page (ml.hnsw_ef_search), set for the call only: the caller's own setting,
    far too short for a page of 100, neither shortens the call's list nor is changed by it. The HNSW path's page
    of 100 is the exact top 100 here (400 posts: any list of 200 or more covers them)."""
    with connect(world.url) as conn:
        pages = conn.execute(
            "select array_agg(ml.hnsw_ef_search(n) order by n) from unnest(array[1, 20, 21, 50, 100, 1000]) n"
        ).fetchone()[0]
        conn.execute("set enable_seqscan = off")  # take the HNSW path even on this small table
        conn.execute("set hnsw.ef_search = 10")
        rows = conn.execute("select post_id from ml.recommend_posts(%s, 100)", (USER_NEAR_EVERYTHING,)).fetchall()
        after = conn.execute("show hnsw.ef_search").fetchone()[0]
    assert pages == [200, 200, 210, 500, 1000, 1000]
    assert after == "10"
    user_vector = world.user_vectors[USER_NEAR_EVERYTHING - 1]
    candidates = eligible(world, USER_NEAR_EVERYTHING)
    exact = sorted(candidates, key=lambda p: float(world.post_vectors[p - 1] @ user_vector), reverse=True)
    assert [post_id for (post_id,) in rows] == exact[:100]


@pytest.mark.parametrize(
    ("user_id", "count", "extra", "message"),
    [
        (None, 20, {}, "p_user_id must not be null"),
        (1, 0, {}, "p_count must be between 1 and 1000, got 0"),
        (1, 1001, {}, "p_count must be between 1 and 1000, got 1001"),
        (1, None, {}, "got null"),
        (1, 20, {"p_local_radius_km": -1.0}, "p_local_radius_km must be a number >= 0"),
    ],
)
def test_out_of_range_arguments_are_clear_errors(
    world: World, user_id: int | None, count: int | None, extra: dict[str, float], message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        recommend_rows(world.url, user_id, count, **extra)


def test_a_user_without_embedding_gets_popular_recent_posts(world: World) -> None:
    rows = recommend_rows(world.url, USER_WITHOUT_EMBEDDING, 20)
    post_ids = [post_id for post_id, _ in rows]
    assert len(post_ids) == 20
    assert post_ids[0] == world.top_post_for_fallback, "5000 views yesterday beats everything not yet seen"
    assert set(post_ids) <= eligible(world, USER_WITHOUT_EMBEDDING)
    assert [s for _, s in rows] == sorted((s for _, s in rows), reverse=True)


def _fallback_formula(world: World, user_id: int, decay: float) -> list[int]:
    """The fallback's ranking written out, over the user's eligible posts, with the given decay."""
    with connect(world.url) as conn:
        rows = conn.execute(
            "select pf.post_id from marts.post_features pf where pf.post_id = any(%s)"
            " order by pf.engaged_user_count::float8"
            " / power(1 + extract(epoch from now() - pf.created_at) / 86400, %s) desc, pf.post_id limit 20",
            (sorted(eligible(world, user_id)), decay),
        ).fetchall()
    return [post_id for (post_id,) in rows]


def test_the_fallback_uses_the_decay_the_latest_evaluation_chose(world: World) -> None:
    """ml.popularity_fallback's newest row decides the fallback's decay: 0 ranks by engagement alone, 3 puts
    recent posts first (the two rankings differ here); with no row it is 1.5."""
    user = USER_WITHOUT_EMBEDDING
    assert _fallback_formula(world, user, 0.0) != _fallback_formula(world, user, 3.0)
    assert fallback_decay(world.url) is None
    assert [p for p, _ in recommend_rows(world.url, user, 20)] == _fallback_formula(world, user, 1.5)
    try:
        for decay in (0.0, 3.0):
            with connect(world.url) as conn:
                # Two choices in one transaction (the same chosen_at): the later one counts.
                conn.execute("insert into ml.popularity_fallback (decay) values (7.0), (%s)", (decay,))
            assert fallback_decay(world.url) == decay
            assert [p for p, _ in recommend_rows(world.url, user, 20)] == _fallback_formula(world, user, decay)
    finally:
        with connect(world.url) as conn:
            conn.execute("delete from ml.popularity_fallback")


def test_each_recommendation_says_whether_the_model_or_the_fallback_ranked_it(world: World) -> None:
    assert sources(world.url, USER_NEAR_EVERYTHING) == {"model"}
    assert sources(world.url, USER_WITHOUT_EMBEDDING) == {"popularity fallback"}
    assert sources(world.url, N_USERS + 1000) == {"popularity fallback"}, "an unknown user"
    assert {r.source for r in recommend(world.url, USER_NEAR_EVERYTHING, 5)} == {"model"}
    assert {r.source for r in recommend(world.url, USER_WITHOUT_EMBEDDING, 5)} == {"popularity fallback"}
    assert is_known_user(world.url, USER_WITHOUT_EMBEDDING) and not is_known_user(world.url, N_USERS + 1000)


def test_reinstalling_over_the_functions_without_source_replaces_them(world: World) -> None:
    """Databases installed before the source column: its result type changed, which `create or replace` can't do."""
    with connect(world.url) as conn:
        conn.execute("drop function ml.recommend_posts(bigint, integer, double precision)")
        conn.execute(
            "create function ml.recommend_posts(p_user_id bigint, p_count integer default 20,"
            " p_local_radius_km double precision default 50) returns table (post_id bigint, score real)"
            " language sql as $$ select 1::bigint, 1::real $$"
        )
    install_serving_functions(world.url)
    install_serving_functions(world.url)  # and idempotent afterwards
    assert sources(world.url, USER_NEAR_EVERYTHING) == {"model"}


def test_without_embedding_tables_everyone_gets_the_popularity_fallback(world: World) -> None:
    """Before any model is promoted (the gate refused the first one) the embedding tables don't exist; the
    serving functions still answer: popularity for everyone, no similar posts."""
    fallback_of_user_30 = [post_id for post_id, _ in recommend_rows(world.url, USER_WITHOUT_EMBEDDING, 20)]
    with connect(world.url) as conn:
        conn.execute("drop table ml.user_embeddings, ml.post_embeddings")
        # The fallback's own formula, over user 1's eligible posts.
        expected = conn.execute(
            "select pf.post_id from marts.post_features pf where pf.post_id = any(%s)"
            " order by pf.engaged_user_count::float8"
            " / power(1 + extract(epoch from now() - pf.created_at) / 86400, 1.5) desc, pf.post_id limit 20",
            (sorted(eligible(world, USER_NEAR_EVERYTHING)),),
        ).fetchall()
        similar = conn.execute("select * from ml.similar_posts(%s)", (int(world.post_ids[0]),)).fetchall()
    assert [post_id for post_id, _ in recommend_rows(world.url, USER_NEAR_EVERYTHING, 20)] == [p for (p,) in expected]
    # Scores follow the clock (post age): the ranking is what stays.
    assert [post_id for post_id, _ in recommend_rows(world.url, USER_WITHOUT_EMBEDDING, 20)] == fallback_of_user_30
    assert sources(world.url, USER_NEAR_EVERYTHING) == {"popularity fallback"}
    assert similar == []


def test_recommend_returns_titles_in_rank_order(world: World) -> None:
    recommendations = recommend(world.url, USER_NEAR_EVERYTHING, count=5)
    assert [(r.post_id, pytest.approx(r.score)) for r in recommendations] == recommend_rows(
        world.url, USER_NEAR_EVERYTHING, 5
    )
    assert [r.title for r in recommendations] == [f"Post {r.post_id}" for r in recommendations]


def test_similar_posts_exclude_the_post_and_local_ones_far_from_it(world: World) -> None:
    in_potsdam = next(p for p in world.post_ids.tolist() if p not in world.far_local)
    in_sydney = min(world.far_local)
    with connect(world.url) as conn:
        near_potsdam = conn.execute("select * from ml.similar_posts(%s, 50)", (in_potsdam,)).fetchall()
        near_sydney = conn.execute("select * from ml.similar_posts(%s, 50)", (in_sydney,)).fetchall()
        missing = conn.execute("select * from ml.similar_posts(%s)", (N_POSTS + 99,)).fetchall()
    assert len(near_potsdam) == 50 and in_potsdam not in {p for p, _ in near_potsdam}
    assert not {p for p, _ in near_potsdam} & world.far_local
    assert len(near_sydney) == 50 and in_sydney not in {p for p, _ in near_sydney}
    assert not {p for p, _ in near_sydney} & world.near_local
    expected = world.post_vectors @ world.post_vectors[in_potsdam - 1]
    for post_id, score in near_potsdam:
        assert score == pytest.approx(float(expected[post_id - 1]), abs=1e-5)
    assert missing == [], "a post without an embedding has no similar posts yet"


def test_readers_never_fail_nor_see_an_empty_table_during_full_refreshes(world: World) -> None:
    stop = threading.Event()
    failures: list[str] = []
    calls = {"recommend": 0, "prepared_scan": 0}
    query_vector = world.user_vectors[0]

    def read_in_a_loop() -> None:
        with connect(world.url, autocommit=True) as conn:
            register_vector(conn)
            while not stop.is_set():
                try:
                    rows = conn.execute("select post_id from ml.recommend_posts(%s, 10)", (USER_NEAR_EVERYTHING,))
                    rows = rows.fetchall()
                    calls["recommend"] += 1
                    # A prepared statement whose plan names the swapped table by OID.
                    scanned = conn.execute(
                        "select post_id from ml.post_embeddings order by embedding <#> %s limit 5",
                        (query_vector,),
                        prepare=True,
                    ).fetchall()
                    calls["prepared_scan"] += 1
                except psycopg.Error as error:
                    failures.append(f"{type(error).__name__}: {error}")
                    continue
                if len(rows) != 10 or len(scanned) != 5:
                    failures.append(f"got {len(rows)} recommendations and {len(scanned)} scanned rows")

    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        rng = np.random.default_rng(4)
        for version in range(2, 8):
            write_embeddings(world.url, "post", world.post_ids, unit_vectors(rng, N_POSTS), f"m{version}", mode="full")
    finally:
        stop.set()
        reader.join(timeout=30)
    assert failures == []
    assert calls["recommend"] > 6 and calls["prepared_scan"] > 6
    assert embedding_checks(world.url, "post")["model_versions"] == ["m7"]


def test_a_full_refresh_outwaits_a_long_reader_instead_of_failing(world: World) -> None:
    """A reader holding the live table past the swap's lock timeout makes the swap retry, not roll back."""
    holder = connect(world.url)
    holder.execute("select count(*) from ml.post_embeddings").fetchone()  # ACCESS SHARE until commit
    release = threading.Timer(3.0, holder.commit)  # longer than one SWAP_LOCK_TIMEOUT (2 s)
    release.start()
    try:
        result = write_embeddings(world.url, "post", world.post_ids, world.post_vectors, "m9", mode="full")
    finally:
        release.join()
        holder.close()
    assert result.rows == N_POSTS
    assert embedding_checks(world.url, "post")["model_versions"] == ["m9"]


BLANK_ROW: dict[str, object] = {
    "latitude": None,
    "longitude": None,
    "bio": None,
    "passions": None,
    "project_titles": None,
    "created_post_titles": None,
    "recent_post_ids": [],
    "viewed_count": 0,
    "upvoted_count": 0,
    "commented_count": 0,
}
# One change each to a blank row, and whether the user is still blank (nothing for the query tower to read).
BLANK_VARIANTS: list[tuple[str, dict[str, object], bool]] = [
    ("blank", {}, True),
    ("whitespace bio", {"bio": " \t\n"}, True),
    ("whitespace passions", {"passions": ["", "  "]}, True),
    ("latitude NaN", {"latitude": float("nan"), "longitude": 13.4}, True),
    ("latitude out of range", {"latitude": 95.0, "longitude": 13.4}, True),
    ("a bio", {"bio": "I build synths"}, False),
    ("a passion", {"passions": ["music"]}, False),
    ("a project", {"project_titles": ["Repair cafe"]}, False),
    ("a post written", {"created_post_titles": ["Who wants to jam?"]}, False),
    ("a history", {"recent_post_ids": [7]}, False),
    ("an upvote", {"upvoted_count": 1}, False),
    ("a location", {"latitude": BERLIN[0], "longitude": BERLIN[1]}, False),
]


def test_blank_users_get_the_fallback_though_embedded_and_python_agrees(world: World) -> None:
    """A user with nothing for the query tower to read has the one vector every such user has (a global ranking),
    so ml.recommend_posts serves them the fallback even with a vector written; any history, activity, profile text,
    passion or location makes them the model's. features.blank_user_ids, which the evaluation uses to rank them
    as served, says the same of each row."""
    user = USER_WHO_SAW_ALMOST_ALL + 1
    columns = list(BLANK_ROW)
    served_by_fallback: dict[str, bool] = {}
    for name, change, _ in BLANK_VARIANTS:
        row = {**BLANK_ROW, **change}
        with connect(world.url) as conn:
            conn.execute(
                f"update marts.user_features set ({', '.join(columns)}) = ({', '.join(['%s'] * len(columns))})"
                " where user_id = %s",
                [*(row[c] for c in columns), user],
            )
        served_by_fallback[name] = sources(world.url, user) == {"popularity fallback"}
    assert served_by_fallback == {name: blank for name, _, blank in BLANK_VARIANTS}

    frame = pd.DataFrame([{"user_id": i, **BLANK_ROW, **change} for i, (_, change, _) in enumerate(BLANK_VARIANTS)])
    python_blank = set(blank_user_ids(frame).tolist())
    assert {name: i in python_blank for i, (name, _, _) in enumerate(BLANK_VARIANTS)} == served_by_fallback
