"""The post and user embedding steps run in parallel and both create the embedding tables when missing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import connect, scratch_database
from teamu_assets.db.embeddings import ensure_embedding_tables


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
