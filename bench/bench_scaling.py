"""Benchmark: the unit costs docs/SCALING.md extrapolates from that docs/BENCHMARKS.md does not already measure.

1. Tower inference per core: users and posts embedded per second by the saved towers of a trained model (the
   newest under TEAMU_HOME/artifacts/models, or --model) on the app database's marts, replicated to --rows rows,
   with TensorFlow held to one thread (intra- and inter-op), then with every core; baseline: the one-thread run
   (ratio = all cores / one thread). The first batch, which traces the function, is excluded.
2. The partitioned refresh's cost over a plain full refresh (teamu_assets/db/partitions.py): --vectors random
   vectors of --dim dimensions written as user embeddings once with write_embeddings(mode="full") (the baseline),
   once as --partitions staged partitions plus the publish (union, primary key, swap), in a scratch database.
3. HNSW build, vector against halfvec (the first step of docs/SCALING.md's plan): the same --hnsw-rows vectors,
   m=16 and ef_construction=64 as the serving index, built on vector(D) (baseline) and on halfvec(D).

The app database is only read; the scratch database is dropped at the end.

    nice -n 10 .venv/bin/python bench/bench_scaling.py [--rows 20000] [--vectors 100000] [--hnsw-rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from teamu_assets.db import features
from teamu_assets.db.connection import connect, resolve_url, scratch_database
from teamu_assets.db.embeddings import write_embeddings
from teamu_assets.db.partitions import partition_of, publish_partitions, stage_partition
from teamu_assets.settings import Settings


def _newest_model(settings: Settings) -> Path:
    models = sorted((settings.home / "artifacts" / "models").glob("tt-*"))
    if not models:
        raise SystemExit("no trained model under TEAMU_HOME/artifacts/models: run `make demo` first, or pass --model")
    return models[-1]


def _replicate(frame: pd.DataFrame, id_column: str, rows: int) -> pd.DataFrame:
    """The mart's rows repeated to `rows` rows, each copy with ids of its own (the towers see distinct rows)."""
    copies = -(-rows // len(frame))
    parts = []
    for copy in range(copies):
        part = frame.copy()
        part[id_column] = part[id_column] + copy * 10_000_000
        parts.append(part)
    return pd.concat(parts, ignore_index=True).head(rows)


def _inference_rates(url: str, model_dir: Path, rows: int) -> tuple[float, float]:
    """(users/s, posts/s) of the saved towers over `rows` replicated mart rows, tracing excluded."""
    from teamu_assets.model.train import embed_posts, embed_users

    users = _replicate(features.read_user_features(url), "user_id", rows)
    posts = _replicate(features.read_post_features(url), "post_id", rows)
    clock = features.data_clock(url)
    embed_users(model_dir, users.head(64))  # traces the towers' functions
    embed_posts(model_dir, posts.head(64), as_of=clock)
    started = time.perf_counter()
    embed_users(model_dir, users)
    user_rate = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    embed_posts(model_dir, posts, as_of=clock)
    return user_rate, rows / (time.perf_counter() - started)


def bench_inference(url: str, model_dir: Path, rows: int) -> None:
    import tensorflow as tf

    # TensorFlow's thread pools are fixed once it runs anything: the one-thread run is this process, the
    # all-cores run a child process of its own.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    one_users, one_posts = _inference_rates(url, model_dir, rows)
    child = subprocess.run(
        [sys.executable, __file__, "--only", "all-cores", "--rows", str(rows), "--model", str(model_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    all_cores = json.loads(child.stdout.strip().splitlines()[-1])
    cores = os.cpu_count()
    print(f"inference, {rows} rows, model {model_dir.name}:")
    for kind, one in (("users", one_users), ("posts", one_posts)):
        print(f"  {kind} embedded/s, 1 thread (baseline)  {one:9,.0f}")
        print(f"  {kind} embedded/s, {cores} cores  {all_cores[kind]:9,.0f}  ratio {all_cores[kind] / one:.2f}")


def bench_partitioned_publish(server_url: str, vectors: int, dim: int, partitions: int) -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(1, vectors + 1, dtype=np.int64)
    matrix = rng.normal(size=(vectors, dim)).astype(np.float32)
    with scratch_database(server_url, "bench_scaling") as url:
        started = time.perf_counter()
        write_embeddings(url, "user", ids, matrix, "v1", mode="full")
        full = time.perf_counter() - started
        parts = partition_of(ids, partitions)
        started = time.perf_counter()
        for partition in range(partitions):
            chosen = parts == partition
            stage_partition(url, "user", partition, partitions, ids[chosen], matrix[chosen], "v2")
        staged = time.perf_counter() - started
        result = publish_partitions(url, "user", partitions, "v2")
        assert result.published, result.reason
    print(f"user embeddings, {vectors} x {dim}:")
    print(f"  full refresh (baseline)          {full:6.2f} s  ({vectors / full:,.0f} rows/s)")
    print(f"  {partitions} partitions staged one by one  {staged:6.2f} s  ({vectors / staged:,.0f} rows/s)")
    print(f"  publish (union, key, swap)       {result.seconds:6.2f} s")
    print(f"  ratio (staged + publish) / full  {(staged + result.seconds) / full:6.2f}")


def bench_hnsw(server_url: str, rows: int, dim: int) -> None:
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(1)
    # Trained embeddings cluster: a mixture of 50 Gaussians, L2-normalized (as bench_serving.py does).
    centres = rng.normal(size=(50, dim))
    matrix = centres[rng.integers(0, 50, rows)] + 0.3 * rng.normal(size=(rows, dim))
    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
    seconds = {}
    with scratch_database(server_url, "bench_scaling") as url, connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"create table v (id bigint, embedding vector({dim}))")
        with conn.cursor().copy("copy v from stdin (format binary)") as copy:
            copy.set_types(["int8", "vector"])
            for row_id, vector in enumerate(matrix):
                copy.write_row((row_id, vector))
        conn.execute(f"create table h as select id, embedding::halfvec({dim}) as embedding from v")
        conn.execute("set maintenance_work_mem = '1GB'")
        for table, ops in (("v", "vector_ip_ops"), ("h", "halfvec_ip_ops")):
            started = time.perf_counter()
            conn.execute(f"create index on {table} using hnsw (embedding {ops}) with (m = 16, ef_construction = 64)")
            seconds[table] = time.perf_counter() - started
        sizes = {
            table: conn.execute(
                "select pg_relation_size(indexrelid) from pg_index where indrelid = %s::regclass", (table,)
            ).fetchone()[0]
            for table in ("v", "h")
        }
    per_100k = {table: value * 100_000 / rows for table, value in seconds.items()}
    print(f"HNSW build, {rows} x {dim}, m=16, ef_construction=64:")
    print(
        f"  vector  (baseline)  {seconds['v']:6.1f} s  ({per_100k['v']:.0f} s per 100k)  index {sizes['v'] >> 20} MiB"
    )
    print(
        f"  halfvec             {seconds['h']:6.1f} s  ({per_100k['h']:.0f} s per 100k)  index {sizes['h'] >> 20} MiB"
    )
    print(f"  ratio halfvec / vector: build {seconds['h'] / seconds['v']:.2f}, size {sizes['h'] / sizes['v']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a trained model's folder (default: the newest)")
    parser.add_argument("--rows", type=int, default=20_000, help="users and posts embedded (default 20000)")
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors for the publish bench")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--hnsw-rows", type=int, default=50_000)
    parser.add_argument("--only", choices=["inference", "all-cores", "publish", "hnsw"], action="append")
    args = parser.parse_args()
    settings = Settings.from_env()
    server_url = resolve_url(settings.database_url, settings.pgdata)
    only = set(args.only or ["inference", "publish", "hnsw"])
    if "all-cores" not in only:
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if "inference" in only or "all-cores" in only:
        model_dir = args.model or _newest_model(settings)
        if "all-cores" in only:
            users, posts = _inference_rates(server_url, model_dir, args.rows)
            print(json.dumps({"users": users, "posts": posts}))
            return
        bench_inference(server_url, model_dir, args.rows)
    if "publish" in only:
        bench_partitioned_publish(server_url, args.vectors, args.dim, args.partitions)
    if "hnsw" in only:
        bench_hnsw(server_url, args.hnsw_rows, args.dim)


if __name__ == "__main__":
    main()
