"""Benchmark: the pgvector serving path, write side and read side, on trained-like embeddings.

Generates --posts post and --users user embeddings of --dim dimensions, drawn from a mixture of --clusters
gaussians and L2-normalized (what a trained two-tower model's vectors look like, unlike uniform noise), plus
minimal marts tables (authors, local posts in a few cities, users' seen posts mostly in their own cluster).
Measures, in one run on one server:
  (a) write rate: a raw binary COPY of the same vectors into a bare table (no key, no index) against
      teamu_assets.db.embeddings.write_embeddings(mode="full"): its COPY part, and the whole (primary key and
      HNSW build and the swap included);
  (b) ml.recommend_posts(user, 10): p50/p95 latency and QPS with 1 and 4 client threads, and recall@10 against
      the exact answer (every eligible post scored in numpy), for each HNSW build (--hnsw m:ef_construction)
      and each hnsw.ef_search (--ef-search; the scratch database's ml.hnsw_ef_search answers that value); and
      the exact scan in SQL (no index) as the latency baseline. With --pages, first each page size as the app
      asks for it (ml.recommend_posts(user, page), the candidate list by the product's ml.hnsw_ef_search)
      against the same page with the fixed list of 200 the functions had before: recall@page, latency, 1 thread;
  (c) the exported TFRS BruteForce and ScaNN SavedModels (identity query model, k=10) over the same post
      vectors, reloaded and called one query at a time with the same users' vectors: p50/p95 latency and
      recall@10 against numpy's exact top 10 over all posts (no eligibility filters: the index has none).
      --only-savedmodel runs (c) alone, without the database.
The server is TEAMU_DATABASE_URL's or the embedded one; the benchmark works in a scratch database of its own
and drops it at the end. At 100k x 512 each HNSW build takes minutes on 2 cores; --posts 10000 is quick.

    .venv/bin/python bench/bench_serving.py [--posts 100000] [--dim 512] [--hnsw 16:64,8:32] [--pages 10,50,100] \
        [--ef-search 20,40,100,200] [--only-savedmodel]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from teamu_assets.db import schema
from teamu_assets.db.connection import connect, drop_database, ensure_pgvector, resolve_url, with_database
from teamu_assets.db.embeddings import HNSW_EF_CONSTRUCTION, HNSW_M, write_embeddings
from teamu_assets.db.recommend import install_serving_functions
from teamu_assets.settings import Settings

COUNT = 10  # recall@10
# The candidate list the serving functions used for every page before it grew with the page (ml.hnsw_ef_search).
FIXED_EF_SEARCH = 200
EXACT_QUERIES = 40  # the exact scan is slow at 100k posts: fewer calls give its latency well enough
SEEN_PER_USER = 30
LOCAL_SHARE = 0.2
RADIUS_KM = 50.0
# Posts and users live in these cities (±0.1°); a local post is thus visible only to users of its city.
CITIES = np.array([(52.52, 13.40), (38.72, -9.14), (30.27, -97.74), (-1.29, 36.82), (34.69, 135.50), (-12.05, -77.04)])
EXACT_SQL = """
select pe.post_id from ml.post_embeddings pe
join marts.post_features pf on pf.post_id = pe.post_id
left join marts.user_features uf on uf.user_id = %(user_id)s
where pf.user_id is distinct from %(user_id)s
  and ml.local_post_visible(pf.is_local, pf.latitude, pf.longitude, uf.latitude, uf.longitude, %(radius)s)
  and not exists (select 1 from marts.interactions i where i.user_id = %(user_id)s and i.post_id = pe.post_id)
order by -(pe.embedding <#> (select embedding from ml.user_embeddings where user_id = %(user_id)s)) desc
limit %(count)s
"""


@dataclass(frozen=True)
class World:
    post_ids: np.ndarray
    post_vectors: np.ndarray
    user_ids: np.ndarray
    user_vectors: np.ndarray
    author: np.ndarray  # per post
    post_is_local: np.ndarray
    post_location: np.ndarray  # [n, 2] lat, lng
    user_location: np.ndarray
    seen: dict[int, np.ndarray]  # user id -> post indices


def mixture_of_gaussians(
    rng: np.random.Generator, centers: np.ndarray, weights: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around the given centers (about 45 degrees away from them), and their cluster labels."""
    labels = rng.choice(len(centers), size=n, p=weights)
    dim = centers.shape[1]
    vectors = centers[labels] + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


def generate(posts: int, users: int, dim: int, clusters: int, seed: int = 0) -> World:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(clusters, 2.0))  # uneven cluster sizes, like real interests
    post_vectors, post_labels = mixture_of_gaussians(rng, centers, weights, posts)
    user_vectors, user_labels = mixture_of_gaussians(rng, centers, weights, users)
    posts_by_cluster = [np.flatnonzero(post_labels == c) for c in range(clusters)]
    seen = {}
    for index, label in enumerate(user_labels):
        pool = posts_by_cluster[label] if len(posts_by_cluster[label]) >= SEEN_PER_USER else np.arange(posts)
        seen[index + 1] = rng.choice(pool, size=SEEN_PER_USER, replace=False)
    jitter = rng.uniform(-0.1, 0.1, size=(posts + users, 2))
    locations = CITIES[rng.integers(0, len(CITIES), size=posts + users)] + jitter
    return World(
        post_ids=np.arange(1, posts + 1, dtype=np.int64),
        post_vectors=post_vectors,
        user_ids=np.arange(1, users + 1, dtype=np.int64),
        user_vectors=user_vectors,
        author=rng.integers(1, users * 5, size=posts),  # most authors aren't among the queried users
        post_is_local=rng.random(posts) < LOCAL_SHARE,
        post_location=locations[:posts],
        user_location=locations[posts:],
        seen=seen,
    )


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def exact_top(world: World, user_id: int, count: int = COUNT) -> set[int]:
    """The true top `count` eligible posts for a user, by the same rules as ml.recommend_posts."""
    scores = world.post_vectors @ world.user_vectors[user_id - 1]
    lat, lon = world.user_location[user_id - 1]
    far = haversine_km(lat, lon, world.post_location[:, 0], world.post_location[:, 1]) > RADIUS_KM
    scores[(world.post_is_local & far) | (world.author == user_id)] = -np.inf
    scores[world.seen[user_id]] = -np.inf
    return {int(world.post_ids[i]) for i in np.argpartition(-scores, count)[:count]}


def load_marts(url: str, world: World) -> None:
    now_s = time.time()
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "create schema marts;"
            "create table marts.interactions"
            " (user_id bigint, post_id bigint, kind text, occurred_at timestamptz);"
            "create table marts.post_features (post_id bigint primary key, user_id bigint, title text,"
            " is_local boolean, latitude float8, longitude float8, view_count bigint, vote_count bigint,"
            " created_at timestamptz);"
            # The columns ml.recommend_posts reads (a blank user, one with nothing for the tower to read, gets the
            # fallback): every user here has a location and a history.
            "create table marts.user_features"
            " (user_id bigint primary key, latitude float8, longitude float8, bio text, passions text[],"
            " project_titles text[], created_post_titles text[], recent_post_ids bigint[], viewed_count bigint,"
            " upvoted_count bigint, commented_count bigint);"
        )
        with cur.copy("copy marts.post_features from stdin") as copy:
            for i, post_id in enumerate(world.post_ids.tolist()):
                copy.write_row(
                    (
                        post_id,
                        int(world.author[i]),
                        f"Post {post_id}",
                        bool(world.post_is_local[i]),
                        *world.post_location[i].tolist(),
                        i % 997,
                        i % 31 - 5,
                        time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(now_s - (i % 90) * 86400)),
                    )
                )
        with cur.copy(
            "copy marts.user_features (user_id, latitude, longitude, recent_post_ids, viewed_count) from stdin"
        ) as copy:
            for i, user_id in enumerate(world.user_ids.tolist()):
                history = world.post_ids[world.seen.get(user_id, [])].tolist()
                copy.write_row((user_id, *world.user_location[i].tolist(), history[:10], len(history)))
        with cur.copy("copy marts.interactions (user_id, post_id, kind, occurred_at) from stdin") as copy:
            for user_id, indices in world.seen.items():
                for post_id in world.post_ids[indices].tolist():
                    copy.write_row((user_id, post_id, "view", "2025-01-01 00:00:00+00"))
        # The indexes the serving functions need from the marts (dbt must create them too).
        cur.execute("create index on marts.interactions (user_id, post_id)")
        cur.execute("analyze marts.interactions; analyze marts.post_features; analyze marts.user_features")


def raw_copy_seconds(url: str, world: World) -> float:
    """The baseline: the same vectors, binary COPY, into a bare table with no key and no index."""
    with connect(url) as conn:
        register_vector(conn)
        conn.execute(
            sql.SQL("create table bench_bare (id bigint, embedding vector({}), mv text)").format(
                sql.Literal(world.post_vectors.shape[1])
            )
        )
        started = time.perf_counter()
        with conn.cursor().copy("copy bench_bare from stdin (format binary)") as copy:
            copy.set_types(["int8", "vector", "text"])
            for row_id, vector in zip(world.post_ids.tolist(), world.post_vectors, strict=True):
                copy.write_row((row_id, vector, "bench"))
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("drop table bench_bare")
    return elapsed


def run_queries(
    url: str, user_ids: list[int], threads: int, query: Callable[[psycopg.Connection, int], list]
) -> tuple[list[float], float, dict[int, list]]:
    """Latencies (s) of every call, the wall time of the whole run, and each user's result rows."""
    latencies: list[float] = []
    results: dict[int, list] = {}
    lock = threading.Lock()
    slices = [user_ids[i::threads] for i in range(threads)]

    def client(users: list[int]) -> None:
        with connect(url, autocommit=True) as conn:
            query(conn, users[0])  # warm this connection's plan cache
            for user_id in users:
                started = time.perf_counter()
                rows = query(conn, user_id)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    results[user_id] = rows

    workers = [threading.Thread(target=client, args=(users,)) for users in slices]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, time.perf_counter() - started, results


def recommend_query(conn: psycopg.Connection, user_id: int, count: int = COUNT) -> list:
    return conn.execute("select post_id from ml.recommend_posts(%s, %s)", (user_id, count)).fetchall()


def exact_query(conn: psycopg.Connection, user_id: int) -> list:
    return conn.execute(EXACT_SQL, {"user_id": user_id, "radius": RADIUS_KM, "count": COUNT}).fetchall()


def summary(latencies: list[float], wall: float) -> str:
    ms = np.array(latencies) * 1000
    return f"p50 {np.percentile(ms, 50):6.2f} ms  p95 {np.percentile(ms, 95):6.2f} ms  {len(ms) / wall:7.1f} QPS"


def recall(world: World, results: dict[int, list], count: int = COUNT) -> float:
    hits = [
        len(exact_top(world, user_id, count) & {row[0] for row in rows}) / count for user_id, rows in results.items()
    ]
    return float(np.mean(hits))


def set_candidate_list(url: str, ef_search: int) -> None:
    """In this scratch database, ml.hnsw_ef_search (the serving functions' candidate list) answers ef_search."""
    with connect(url) as conn:
        conn.execute(
            "create or replace function ml.hnsw_ef_search(p_count integer) returns integer"
            f" language sql immutable return {ef_search}"
        )


def page_rows(url: str, world: World, users: list[int], pages: list[int]) -> None:
    """Each page size as the app asks for it (the candidate list by the product's ml.hnsw_ef_search), against the
    same page with the fixed list of FIXED_EF_SEARCH the serving functions had before: recall@page and latency, 1
    thread. Leaves ml.hnsw_ef_search at that fixed list."""
    with connect(url) as conn:
        lists = {page: conn.execute("select ml.hnsw_ef_search(%s)", (page,)).fetchone()[0] for page in pages}

    def measure() -> dict[int, tuple[list[float], float, float]]:
        """Per page: (latencies, wall time, recall@page) with the candidate list ml.hnsw_ef_search answers now."""
        measured = {}
        for page in pages:
            latencies, wall, results = run_queries(url, users, 1, functools.partial(recommend_query, count=page))
            measured[page] = (latencies, wall, recall(world, results, page))
        return measured

    by_rule = measure()
    set_candidate_list(url, FIXED_EF_SEARCH)
    by_fixed_list = measure()
    print(f"  pages as the app asks for them (HNSW m={HNSW_M}; 1 thread), against a fixed list of {FIXED_EF_SEARCH}:")
    for page in pages:
        rule, fixed = by_rule[page], by_fixed_list[page]
        p95_ratio = np.percentile(rule[0], 95) / np.percentile(fixed[0], 95)
        print(
            f"    page of {page:3d}: ef_search {lists[page]:4d} recall@{page} {rule[2]:.3f}"
            f"  {summary(rule[0], rule[1])}"
            f"  | fixed {FIXED_EF_SEARCH}: recall {fixed[2]:.3f}  {summary(fixed[0], fixed[1])}"
            f"  | p95 ratio x{p95_ratio:.2f}"
        )


def savedmodel_rows(world: World, users: list[int]) -> None:
    """(c): BruteForce and ScaNN SavedModels over the same post vectors, queried with the same users' vectors."""
    # isort: off
    import teamu_assets  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is first imported)
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from teamu_assets.model.export import top_k_layer

    # isort: on

    class IdentityIndex(tf.Module):
        """The top-k layer behind one signature whose query model is the identity: the query is the vector."""

        def __init__(self, top_k: tfrs.layers.factorized_top_k.TopK, dim: int) -> None:
            super().__init__()
            self.top_k = top_k
            self.__call__ = tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])(self.top_k)

    posts = len(world.post_ids)
    layers = {
        "BruteForce": lambda: top_k_layer("brute_force", COUNT, posts),
        "ScaNN (export.py's parameters)": lambda: top_k_layer("scann", COUNT, posts),
    }
    queries = world.user_vectors[np.array(users) - 1]
    scores = queries @ world.post_vectors.T
    exact = [set(world.post_ids[np.argpartition(-row, COUNT)[:COUNT]].tolist()) for row in scores]
    print(
        f"\n(c) exported TFRS SavedModels, k={COUNT}, identity query model, {len(users)} users, 1 client,"
        f" recall@{COUNT} against numpy's exact top {COUNT} over all {posts} posts (no filters)"
    )
    with tempfile.TemporaryDirectory(prefix="bench_savedmodel_") as tmp:
        for label, make in layers.items():
            started = time.perf_counter()
            top_k = make()
            top_k.index(tf.constant(world.post_vectors), tf.constant(world.post_ids))
            build_seconds = time.perf_counter() - started
            options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]) if label.startswith("ScaNN") else None
            path = f"{tmp}/{label.split()[0]}"
            started = time.perf_counter()
            tf.saved_model.save(IdentityIndex(top_k, world.post_vectors.shape[1]), path, options=options)
            loaded = tf.saved_model.load(path)
            save_load_seconds = time.perf_counter() - started
            loaded(tf.constant(queries[:1]))  # warm: the first call traces and builds
            latencies, hits = [], []
            wall_started = time.perf_counter()
            for query, truth in zip(queries, exact, strict=True):
                started = time.perf_counter()
                _, ids = loaded(tf.constant(query[None, :]))
                found = set(ids.numpy()[0].tolist())
                latencies.append(time.perf_counter() - started)
                hits.append(len(found & truth) / COUNT)
            wall = time.perf_counter() - wall_started
            print(
                f"  {label:<34} recall {np.mean(hits):.3f}  1 thread: {summary(latencies, wall)}"
                f"  (indexed in {build_seconds:.1f} s, saved+loaded in {save_load_seconds:.1f} s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--queries", type=int, default=300, help="recommend_posts calls per measurement")
    parser.add_argument("--hnsw", default=f"{HNSW_M}:{HNSW_EF_CONSTRUCTION},8:32", help="m:ef_construction,...")
    parser.add_argument("--ef-search", default="20,40,100,200")
    parser.add_argument(
        "--pages",
        default="",
        help="page sizes (p_count) served with the product's candidate list, ml.hnsw_ef_search: recall@page, latency",
    )
    parser.add_argument("--only-savedmodel", action="store_true", help="only (c): no database")
    args = parser.parse_args()
    builds = [tuple(int(part) for part in spec.split(":")) for spec in args.hnsw.split(",")]
    ef_searches = [int(value) for value in args.ef_search.split(",")]
    pages = [int(value) for value in args.pages.split(",") if value]

    if args.only_savedmodel:
        started = time.perf_counter()
        world = generate(args.posts, args.users, args.dim, args.clusters)
        print(
            f"generated {args.posts} posts and {args.users} users x {args.dim} dims"
            f" in {time.perf_counter() - started:.1f} s"
        )
        rng = np.random.default_rng(1)
        users = [int(u) for u in rng.choice(world.user_ids, size=min(args.queries, len(world.user_ids)), replace=False)]
        savedmodel_rows(world, users)
        return

    settings = Settings.from_env()
    server_url = resolve_url(settings.database_url, settings.pgdata)
    name = f"teamu_bench_serving_{uuid.uuid4().hex[:8]}"
    with connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    try:
        started = time.perf_counter()
        world = generate(args.posts, args.users, args.dim, args.clusters)
        print(
            f"generated {args.posts} posts and {args.users} users x {args.dim} dims "
            f"({args.clusters} clusters) in {time.perf_counter() - started:.1f} s"
        )
        ensure_pgvector(url)
        schema.apply(url, "ml")
        install_serving_functions(url)
        load_marts(url, world)
        write_embeddings(url, "user", world.user_ids, world.user_vectors, "bench", mode="full")

        print("\n(a) embedding write, full refresh")
        baseline = min(raw_copy_seconds(url, world) for _ in range(2))
        result = write_embeddings(url, "post", world.post_ids, world.post_vectors, "bench", mode="full")
        megabytes = world.post_vectors.nbytes / 1e6
        n = len(world.post_ids)
        print(
            f"  raw binary COPY, bare table      {baseline:7.2f} s  {n / baseline:9.0f} rows/s"
            f"  {megabytes / baseline:6.1f} MB/s"
        )
        print(
            f"  write_embeddings COPY part        {result.copy_seconds:7.2f} s"
            f"  {n / result.copy_seconds:9.0f} rows/s"
            f"  ratio to raw {baseline / result.copy_seconds:.2f}"
        )
        print(
            f"  write_embeddings index build      {result.index_seconds:7.2f} s"
            f"  (primary key + HNSW m={HNSW_M},"
            f" ef_construction={HNSW_EF_CONSTRUCTION})"
        )
        print(
            f"  write_embeddings whole            {result.total_seconds:7.2f} s"
            f"  {n / result.total_seconds:9.0f} rows/s"
            f"  ratio to raw {baseline / result.total_seconds:.2f}"
        )

        rng = np.random.default_rng(1)
        users = [int(u) for u in rng.choice(world.user_ids, size=min(args.queries, len(world.user_ids)), replace=False)]
        print(
            f"\n(b) ml.recommend_posts(user, {COUNT}), {len(users)} users, recall@{COUNT} against numpy's exact answer"
        )
        exact_1, exact_wall, exact_results = run_queries(url, users[:EXACT_QUERIES], 1, exact_query)
        print(
            f"  exact SQL scan (baseline), 1 thread: {summary(exact_1, exact_wall)}"
            f"  recall {recall(world, exact_results):.3f}"
        )
        if pages:
            page_rows(url, world, users, pages)
        for m, ef_construction in builds:
            if (m, ef_construction) != (HNSW_M, HNSW_EF_CONSTRUCTION):
                with connect(url) as conn:
                    conn.execute("drop index ml.post_embeddings_embedding_hnsw")
                    conn.execute("set local maintenance_work_mem = '1GB'")
                    build_started = time.perf_counter()
                    conn.execute(
                        "create index post_embeddings_embedding_hnsw on ml.post_embeddings"
                        " using hnsw (embedding vector_ip_ops)"
                        f" with (m = {m}, ef_construction = {ef_construction})"
                    )
                    build_seconds = time.perf_counter() - build_started
            else:
                build_seconds = result.index_seconds
            print(f"  HNSW m={m} ef_construction={ef_construction} (built in {build_seconds:.1f} s)")
            for ef_search in ef_searches:
                set_candidate_list(url, ef_search)
                one, one_wall, results = run_queries(url, users, 1, recommend_query)
                four, four_wall, _ = run_queries(url, users, 4, recommend_query)
                print(
                    f"    ef_search {ef_search:4d}  recall {recall(world, results):.3f}"
                    f"  1 thread: {summary(one, one_wall)}"
                    f"  | 4 threads: {summary(four, four_wall)}"
                    f"  | p50 speedup vs exact x{np.median(exact_1) / np.median(one):.1f}"
                )
        savedmodel_rows(world, users)
    finally:
        drop_database(server_url, name)


if __name__ == "__main__":
    main()
