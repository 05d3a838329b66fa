"""The embedding tables: created once by concurrent callers; tables from before feature_hash gain it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect, scratch_database
from teamu_assets.db.embeddings import ensure_embedding_tables, write_embeddings
from teamu_assets.db.features import changed_since_embedding


def test_concurrent_callers_create_the_tables_once(server_url: str) -> None:
    for _ in range(5):
        with scratch_database(server_url, "teamu_test") as url:
            bootstrap.prepare_app_database(url)
            with ThreadPoolExecutor(max_workers=4) as pool:
                for future in [pool.submit(ensure_embedding_tables, url, 8) for _ in range(4)]:
                    future.result()
            with connect(url) as conn:
                tables = conn.execute(
                    "select count(*) from pg_tables where schemaname = 'ml' and tablename like '%_embeddings'"
                ).fetchone()[0]
            assert tables == 2


def test_a_table_from_before_feature_hash_gains_it_once_and_its_rows_are_re_embedded_once(server_url: str) -> None:
    with scratch_database(server_url, "teamu_test") as url:
        bootstrap.prepare_app_database(url)
        with connect(url) as conn:
            # ml.user_embeddings as an earlier version created it, and a minimal user mart.
            conn.execute(
                "create table ml.user_embeddings (user_id bigint primary key, embedding vector(8) not null,"
                " model_version text not null, updated_at timestamptz not null default now());"
                "insert into ml.user_embeddings (user_id, embedding, model_version)"
                " values (1, array_fill(1, array[8])::real[]::vector, 'm1');"
                "create schema if not exists marts;"
                "create table marts.user_features (user_id bigint primary key, feature_hash text);"
                "insert into marts.user_features values (1, 'a'), (2, 'b')"
            )
        # Nothing records what the old rows were embedded from: every user is re-embedded.
        assert sorted(changed_since_embedding(url, "user")) == [1, 2]
        ensure_embedding_tables(url, 8)
        ensure_embedding_tables(url, 8)
        with connect(url) as conn:
            columns = conn.execute(
                "select count(*) from information_schema.columns"
                " where table_schema = 'ml' and table_name = 'user_embeddings' and column_name = 'feature_hash'"
            ).fetchone()[0]
        assert columns == 1
        assert sorted(changed_since_embedding(url, "user")) == [1, 2]

        write_embeddings(url, "user", np.array([1, 2]), np.ones((2, 8)), "m1", mode="upsert")
        with connect(url) as conn:
            hashes = dict(conn.execute("select user_id, feature_hash from ml.user_embeddings").fetchall())
        assert hashes == {1: "a", 2: "b"}
        assert changed_since_embedding(url, "user") == []
