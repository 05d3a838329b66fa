"""Observed CTR and the replay estimate on a tiny event log computed by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from teamu_assets.contract import RECOMMENDATION_CLICKED as CLICKED
from teamu_assets.contract import RECOMMENDATION_SHOWN as SHOWN
from teamu_assets.evaluation.ctr import attributed_clicks, observed_ctr, replay_clicks_recovered


def _events() -> pd.DataFrame:
    rows = [
        # (event, distinct_id, request_id, post_ids, post_id, model_version)
        (SHOWN, "1", "r1", [10, 11, 12], None, "v1"),
        (SHOWN, "2", "r2", [10, 13], None, "v1"),
        (SHOWN, "1", "r3", [14, 15], None, "v2"),
        (SHOWN, "1", "r1", [10, 11, 12], None, "v1"),  # the same request logged twice
        (SHOWN, "3", "r4", [16], None, None),  # no model version
        (CLICKED, "1", "r1", None, 11, None),
        (CLICKED, "1", "r1", None, 11, None),  # double click on the same slot
        (CLICKED, "2", "r2", None, 99, None),  # a post that request did not show
        (CLICKED, "2", "r9", None, 10, None),  # a request that was never shown
        (CLICKED, "1", "r3", None, 15, None),
        (CLICKED, "3", "r4", None, 16, None),
    ]
    frame = pd.DataFrame(rows, columns=["event", "distinct_id", "request_id", "post_ids", "post_id", "model_version"])
    frame["time"] = pd.date_range("2026-03-01", periods=len(frame), freq="min", tz="UTC")
    return frame


def test_attributed_clicks_join_the_shown_request() -> None:
    clicks = attributed_clicks(_events())
    assert sorted(zip(clicks["request_id"], clicks["post_id"], strict=True)) == [
        ("r1", "11"),
        ("r3", "15"),
        ("r4", "16"),
    ]


def test_observed_ctr_by_hand() -> None:
    observed = observed_ctr(_events()).set_index("model_version")
    # v1: requests r1, r2; impressions 3 + 2 = 5 (r1 once); clicks: r1/11 once (r2/99 was not shown) -> 1/5.
    assert observed.loc["v1", "requests"] == 2
    assert observed.loc["v1", "impressions"] == 5
    assert observed.loc["v1", "clicks"] == 1
    assert observed.loc["v1", "ctr"] == pytest.approx(1 / 5)
    # v2: r3 shows 2 posts, 15 clicked -> 1/2.
    assert observed.loc["v2", "ctr"] == pytest.approx(1 / 2)
    # r4 has no model version: grouped as "unknown", 1 click on 1 impression.
    assert observed.loc["unknown", "ctr"] == pytest.approx(1.0)
    assert list(observed.index) == ["unknown", "v1", "v2"]


def test_observed_ctr_of_no_events_is_an_empty_frame() -> None:
    empty = observed_ctr(_events().iloc[0:0])
    assert empty.empty
    assert list(empty.columns) == ["model_version", "requests", "impressions", "clicks", "ctr"]


def test_replay_clicks_recovered_by_hand() -> None:
    # Attributed clicks: user 1 on 11 and 15, user 3 on 16. The candidate has lists for users 1 and 2 only.
    recommendations = {1: [15, 20, 11], 2: [10]}
    top_two = replay_clicks_recovered(_events(), recommendations, k=2)
    # Top 2 of user 1 = {15, 20}: recovers 15 but not 11; user 3's click has no list.
    assert (top_two.logged_clicks, top_two.recovered_clicks, top_two.clicks_without_list) == (3, 1, 1)
    assert top_two.recovered_share == pytest.approx(1 / 3)
    top_three = replay_clicks_recovered(_events(), recommendations, k=3)
    assert top_three.recovered_share == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="positive"):
        replay_clicks_recovered(_events(), recommendations, k=0)
