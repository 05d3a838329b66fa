"""The embedding checks' rules (teamu_assets.db.store.check_outcome), on the statistics embeddings.checks reads."""

from __future__ import annotations

from typing import Any

from teamu_assets.db.registry import ModelVersion
from teamu_assets.db.store import check_outcome

M1 = ModelVersion("m1", "/models/m1", {})
MART = "marts.post_features"


def stats(**changes: Any) -> dict[str, Any]:
    healthy = {
        "table": "ml.post_embeddings",
        "row_count": 3,
        "null_embedding_count": 0,
        "non_finite_count": 0,
        "norm_min": 0.5,
        "norm_rows": 3,
        "model_versions": ["m1"],
        "hnsw_index_expected": True,
        "hnsw_index_present": True,
    }
    return healthy | changes


def test_a_complete_table_of_the_promoted_model_passes() -> None:
    assert check_outcome(stats(), M1, MART, 3).passed


def test_each_broken_rule_is_named() -> None:
    cases = {
        "2 rows of": (stats(), 2),
        "NULL": (stats(null_embedding_count=1), 3),
        "zero vector": (stats(norm_min=0.0), 3),
        "several model versions": (stats(model_versions=["m0", "m1"]), 3),
        "but m1 is promoted": (stats(model_versions=["m0"]), 3),
        "HNSW index missing": (stats(hnsw_index_present=False), 3),
    }
    for expected, (table_stats, feature_rows) in cases.items():
        outcome = check_outcome(table_stats, M1, MART, feature_rows)
        assert not outcome.passed
        assert expected in outcome.description


def test_with_nothing_promoted_only_an_empty_table_passes() -> None:
    assert check_outcome(stats(row_count=0, model_versions=[]), None, MART, None).passed
    refused = check_outcome(stats(), None, MART, None)
    assert not refused.passed
    assert "no model is promoted, yet" in refused.description
