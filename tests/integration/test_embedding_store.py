"""The embedding store: a new model is served with its promotion in one transaction; DDL and serving functions
installed once, then verified."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from teamu_assets.db import bootstrap, embeddings, registry
from teamu_assets.db.connection import connect, scratch_database
from teamu_assets.db.store import EmbeddingStore, StagedEmbeddingsRefused

pytestmark = pytest.mark.integration

DIM = 8
IDS = np.arange(1, 6)
RECOMMEND_POSTS = "ml.recommend_posts(bigint, integer, float8)"


@pytest.fixture
def store(server_url: str) -> Iterator[EmbeddingStore]:
    with scratch_database(server_url, "teamu_test") as url:
        bootstrap.prepare_app_database(url)
        for version in ("m1", "m2"):
            registry.register_model_version(url, version, {}, f"/models/{version}")
        with connect(url) as conn:
            # The two marts as far as the store reads them: one row per id, with its feature_hash.
            conn.execute("create schema if not exists marts")
            for kind in embeddings.KINDS:
                conn.execute(
                    f"create table marts.{kind}_features ({kind}_id bigint primary key, feature_hash text);"
                    f"insert into marts.{kind}_features select i, md5(i::text) from generate_series(1, {len(IDS)}) i"
                )
        with EmbeddingStore(url) as opened:
            yield opened


def _vectors(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(IDS), DIM)) + 1.0


def _approve(store: EmbeddingStore, version: str) -> None:
    registry.record_evaluation(store.url, version, metrics={}, baselines={}, segments={}, promote=True, report_path="")


def _publish(store: EmbeddingStore, version: str, seed: int) -> list[bool]:
    return [store.write(kind, IDS, _vectors(seed), version, mode="publish")[1] for kind in embeddings.KINDS]


def _served_versions(store: EmbeddingStore) -> dict[str, list[str]]:
    return {kind: store.checks(kind).metadata["model_versions"] for kind in embeddings.KINDS}


def test_an_approved_model_is_promoted_only_with_both_tables(store: EmbeddingStore) -> None:
    _approve(store, "m1")
    # The gate's approval alone promotes nothing: serving (no tables yet) and the registry still agree.
    assert store.promoted_model() is None
    assert store.plan("user", "publish").model.model_version == "m1"
    # The first kind staged waits for the second; the second publishes both and promotes, together.
    assert _publish(store, "m1", 1) == [False, True]
    assert store.promoted_model().model_version == "m1"
    assert _served_versions(store) == {"user": '["m1"]', "post": '["m1"]'}
    assert all(store.checks(kind).passed for kind in embeddings.KINDS)


def test_a_swap_failing_midway_leaves_the_old_model_promoted_with_its_vectors(
    store: EmbeddingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _approve(store, "m1")
    _publish(store, "m1", 1)
    _approve(store, "m2")
    swap = embeddings._swap_in

    def crash_on_posts(conn: object, kind: str) -> None:
        swap(conn, kind)  # type: ignore[arg-type]
        if kind == "post":  # users already swapped in this transaction
            raise RuntimeError("server killed during the swap")

    monkeypatch.setattr(embeddings, "_swap_in", crash_on_posts)
    store.write("user", IDS, _vectors(2), "m2", mode="publish")
    with pytest.raises(RuntimeError, match="killed"):
        store.write("post", IDS, _vectors(2), "m2", mode="publish")
    assert store.promoted_model().model_version == "m1"
    assert _served_versions(store) == {"user": '["m1"]', "post": '["m1"]'}
    # The incremental path keeps working on the old model (it refused to mix vectors when the registry ran ahead).
    assert store.plan("user", "incremental").model.model_version == "m1"
    store.write("user", IDS[:1], _vectors(3)[:1], "m1", mode="incremental")
    assert all(store.checks(kind).passed for kind in embeddings.KINDS)

    monkeypatch.setattr(embeddings, "_swap_in", swap)
    assert store.publish("m2")  # both kinds are still staged: publishing again completes the promotion
    assert store.publish("m2")  # and a second publisher finds it done
    assert store.promoted_model().model_version == "m2"
    assert _served_versions(store) == {"user": '["m2"]', "post": '["m2"]'}


def test_staged_vectors_that_break_the_rules_are_never_published(store: EmbeddingStore) -> None:
    """In a full refresh the first kind staged is published by the second kind's step; its own blocking check ran
    before that, on the table still served. Its vectors are checked when staged, before any swap."""
    _approve(store, "m1")
    _publish(store, "m1", 1)
    _approve(store, "m2")
    broken = _vectors(2)
    broken[0] = 0.0  # a zero vector scores 0 against everything
    with pytest.raises(StagedEmbeddingsRefused, match="post embeddings of m2 are not published: a zero vector"):
        store.write("post", IDS, broken, "m2", mode="publish")
    with pytest.raises(StagedEmbeddingsRefused, match="4 embeddings for 5 rows"):
        store.write("post", IDS[:4], _vectors(2)[:4], "m2", mode="publish")
    # The users' step stages its vectors and finds no post vectors of m2 to publish with.
    assert store.write("user", IDS, _vectors(2), "m2", mode="publish")[1] is False
    assert store.promoted_model().model_version == "m1"
    assert _served_versions(store) == {"user": '["m1"]', "post": '["m1"]'}
    assert all(store.checks(kind).passed for kind in embeddings.KINDS)


def test_serving_functions_are_verified_not_reinstalled(store: EmbeddingStore) -> None:
    def function_row_version() -> str:
        with connect(store.url) as conn:
            row = conn.execute("select xmin::text from pg_proc where oid = %s::regprocedure", (RECOMMEND_POSTS,))
            return row.fetchone()[0]

    installed = function_row_version()  # by bootstrap.prepare_app_database
    assert store.ensure_ready() is False
    assert store.ensure_ready(DIM) is True  # the tables are created once they have a dimension
    assert store.ensure_ready(DIM) is False
    assert function_row_version() == installed
    with connect(store.url) as conn:
        conn.execute("update ml.installed_sql set digest = 'an older file' where name = 'serving_functions'")
    assert store.ensure_ready(DIM) is True
    assert function_row_version() != installed


def test_nothing_promoted_means_nothing_to_refresh(store: EmbeddingStore) -> None:
    for mode in ("incremental", "rewrite"):
        plan = store.plan("post", mode)
        assert not plan.writes
        assert "popularity fallback" in plan.reason


def test_an_evaluation_records_its_fallback_decay_on_a_database_older_than_the_table(store: EmbeddingStore) -> None:
    """A database bootstrapped before ml.popularity_fallback existed gets the table with the first evaluation
    that records a choice, instead of failing to record the evaluation."""
    with connect(store.url) as conn:
        conn.execute("drop table ml.popularity_fallback")
    fallback = {"decay": 0.5, "k": 20, "users": 3, "recalls": {"0": 0.1, "0.5": 0.2}}
    registry.record_evaluation(
        store.url, "m1", metrics={}, baselines={}, segments={}, promote=False, report_path="", fallback=fallback
    )
    assert registry.fallback_decay(store.url) == 0.5
    assert registry.latest_evaluation(store.url, "m1") is not None
