"""The partitioned embedding refresh on the real Postgres: partitions staged separately (one of them retried
after a failure) are swapped in together, and a reader polling the live table all along only ever sees one
complete refresh, never a mix of two and never an empty table. Only the promoted model's partitions publish."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from teamu_assets.db import bootstrap, registry
from teamu_assets.db.connection import connect, scratch_database
from teamu_assets.db.embeddings import EmbeddingWriteError, embedding_checks, write_embeddings
from teamu_assets.db.partitions import partition_of, partition_table, publish_partitions, stage_partition

pytestmark = pytest.mark.integration

DIM = 8
IDS = np.arange(1, 401, dtype=np.int64)


@pytest.fixture
def url(server_url: str) -> Iterator[str]:
    with scratch_database(server_url, "teamu_test_partitions") as scratch:
        bootstrap.prepare_app_database(scratch)
        for version in ("v1", "v2", "v3"):
            registry.register_model_version(scratch, version, {}, f"/models/{version}")
        with connect(scratch) as conn:
            registry.promote(conn, "v1")
        yield scratch


def _vectors(n: int, seed: int, marker: float = 0.0) -> np.ndarray:
    """Random vectors whose first dimension is `marker`: which refresh wrote a row, as a reader sees it."""
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    vectors[:, 0] = marker
    return vectors


class Reader(threading.Thread):
    """Reads the live table over and over, as ml.recommend_posts would, recording (rows, the refreshes whose
    rows it saw: their vectors' markers)."""

    def __init__(self, url: str, table: str) -> None:
        super().__init__(daemon=True)
        self.url, self.table = url, table
        self.seen: list[tuple[int, tuple[float, ...]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                rows, markers = conn.execute(
                    "select count(*), coalesce(array_agg(distinct (embedding::real[])[1]), '{}')"
                    f" from ml.{self.table}"
                ).fetchone()
                self.seen.append((rows, tuple(markers)))


def test_partition_of_is_stable_and_spreads_consecutive_ids() -> None:
    ids = np.arange(1, 100_001)
    parts = partition_of(ids, 8)
    assert set(np.unique(parts)) == set(range(8))
    counts = np.bincount(parts, minlength=8)
    assert counts.min() > 0.9 * len(ids) / 8 and counts.max() < 1.1 * len(ids) / 8
    # The hash is part of the staged data's contract (a retried pod must pick the same ids): pinned values.
    assert partition_of(np.array([1, 2, 3, 4, 5]), 16).tolist() == [5, 10, 0, 4, 12]


@pytest.mark.parametrize("kind", ["user", "post"])
def test_partitions_refreshed_separately_swap_in_together(url: str, kind: str) -> None:
    table = f"{kind}_embeddings"
    write_embeddings(url, kind, IDS, _vectors(len(IDS), 0, marker=0.0), "v1", mode="full")  # type: ignore[arg-type]
    parts = partition_of(IDS, 2)
    first, second = IDS[parts == 0], IDS[parts == 1]
    reader = Reader(url, table)
    reader.start()
    try:
        assert stage_partition(url, kind, 0, 2, first, _vectors(len(first), 1, marker=1.0), "v1") == len(first)  # type: ignore[arg-type]
        refused = publish_partitions(url, kind, 2, "v1")  # type: ignore[arg-type]
        assert not refused.published and "[1]" in refused.reason
        # Partition 1 fails (a NaN from its model: nothing written), is retried and staged.
        bad = _vectors(len(second), 2, marker=1.0)
        bad[3, 1] = np.nan
        with pytest.raises(EmbeddingWriteError, match="NaN"):
            stage_partition(url, kind, 1, 2, second, bad, "v1")  # type: ignore[arg-type]
        assert not publish_partitions(url, kind, 2, "v1").published  # type: ignore[arg-type]
        with pytest.raises(EmbeddingWriteError, match="not in partition"):
            stage_partition(url, kind, 1, 2, first, _vectors(len(first), 2, marker=1.0), "v1")  # type: ignore[arg-type]
        stage_partition(url, kind, 1, 2, second, _vectors(len(second), 3, marker=1.0), "v1")  # type: ignore[arg-type]
        published = publish_partitions(url, kind, 2, "v1")  # type: ignore[arg-type]
        assert published.published and published.rows == len(IDS)
        # Let the reader read the new table too (it sees the swap's commit on its next query).
        for _ in range(1000):
            if reader.seen and reader.seen[-1][1] == (1.0,):
                break
            threading.Event().wait(0.01)
    finally:
        reader.stop.set()
        reader.join()

    assert reader.seen, "the reader never read"
    assert {rows for rows, _ in reader.seen} == {len(IDS)}, "a reader saw a partial or empty table"
    assert {markers for _, markers in reader.seen} == {(0.0,), (1.0,)}, "a reader saw rows of two refreshes at once"
    checks = embedding_checks(url, kind)  # type: ignore[arg-type]
    assert checks["row_count"] == len(IDS) and checks["model_versions"] == ["v1"]
    assert checks["hnsw_index_present"] == (kind == "post")
    with psycopg.connect(url) as conn:
        expected = dict(zip(second.tolist(), _vectors(len(second), 3, marker=1.0).tolist(), strict=True))
        some = int(second[0])
        stored = conn.execute(f"select embedding::text from ml.{table} where {kind}_id = %s", (some,)).fetchone()[0]
        assert np.allclose(np.array(stored.strip("[]").split(","), dtype=np.float32), expected[some], atol=1e-6)
        # The partition tables went with the publish.
        for partition in (0, 1):
            name = partition_table(kind, partition, 2)  # type: ignore[arg-type]
            assert conn.execute("select to_regclass(%s)", (f"ml.{name}",)).fetchone()[0] is None


def test_partitions_of_two_model_versions_are_not_published(url: str) -> None:
    write_embeddings(url, "user", IDS, _vectors(len(IDS), 0), "v1", mode="full")
    parts = partition_of(IDS, 2)
    stage_partition(url, "user", 0, 2, IDS[parts == 0], _vectors(int((parts == 0).sum()), 1), "v1")
    stage_partition(url, "user", 1, 2, IDS[parts == 1], _vectors(int((parts == 1).sum()), 1), "v3")
    result = publish_partitions(url, "user", 2, "v1")
    assert not result.published and "another model version" in result.reason
    assert embedding_checks(url, "user")["row_count"] == len(IDS)


def test_partitions_of_a_model_promoted_away_meanwhile_are_not_published(url: str) -> None:
    """The full refresh promoted v2 (both kinds) while a partitioned refresh with v1 was staging."""
    write_embeddings(url, "user", IDS, _vectors(len(IDS), 0), "v2", mode="full")
    with connect(url) as conn:
        registry.promote(conn, "v2")
    parts = partition_of(IDS, 2)
    for partition in range(2):
        chosen = IDS[parts == partition]
        stage_partition(url, "user", partition, 2, chosen, _vectors(len(chosen), 1), "v1")
    result = publish_partitions(url, "user", 2, "v1")
    assert not result.published and "not the promoted model" in result.reason
    assert embedding_checks(url, "user")["model_versions"] == ["v2"]


def test_all_empty_partitions_never_empty_the_live_table(url: str) -> None:
    write_embeddings(url, "user", IDS, _vectors(len(IDS), 0), "v1", mode="full")
    empty_ids, empty_vectors = np.zeros(0, np.int64), np.zeros((0, DIM), np.float32)
    for partition in range(2):
        stage_partition(url, "user", partition, 2, empty_ids, empty_vectors, "v1")
    with pytest.raises(EmbeddingWriteError, match="empty"):
        publish_partitions(url, "user", 2, "v1")
    assert embedding_checks(url, "user")["row_count"] == len(IDS)
