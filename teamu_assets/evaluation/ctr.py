"""Click-through rate from Mixpanel recommendation events: observed per model version, and an offline replay
estimate for a model that has not been shown to anyone yet.

The events frame has one row per event with the columns event ("Recommendation Shown" or "Recommendation
Clicked"), distinct_id (the Teamu user id), time, request_id, post_ids (list, on shown), post_id (on clicked)
and model_version (on shown). Ids are matched by their string form (11, 11.0 and "11" alike): Mixpanel's
distinct_id is a string while user and post ids are integers elsewhere.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from teamu_assets.contract import RECOMMENDATION_CLICKED, RECOMMENDATION_SHOWN

UNKNOWN_MODEL_VERSION = "unknown"
OBSERVED_COLUMNS = ["model_version", "requests", "impressions", "clicks", "ctr"]


def _id_string(value: object) -> str:
    """An id's string form, the same for 11, 11.0 (an integer column with gaps turns float) and "11"."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _post_list(post_ids: object) -> list[str]:
    """A shown event's post ids as strings; a missing or malformed value (not a list) shows nothing."""
    if isinstance(post_ids, list | tuple | np.ndarray):
        return [_id_string(post) for post in post_ids]
    return []


def _shown_requests(events: pd.DataFrame) -> pd.DataFrame:
    """One row per shown request (a repeated request_id is the same request logged twice: first wins)."""
    shown = events.loc[
        events["event"] == RECOMMENDATION_SHOWN, ["request_id", "distinct_id", "post_ids", "model_version"]
    ]
    shown = shown.dropna(subset=["request_id"]).drop_duplicates(subset="request_id", keep="first")
    model_version = shown["model_version"].astype(object).where(shown["model_version"].notna(), None)
    return pd.DataFrame(
        {
            "request_id": shown["request_id"].map(_id_string).to_numpy(),
            "distinct_id": shown["distinct_id"].map(_id_string).to_numpy(),
            "shown_posts": [_post_list(posts) for posts in shown["post_ids"]],
            "model_version": [UNKNOWN_MODEL_VERSION if v is None else str(v) for v in model_version],
        }
    )


def attributed_clicks(events: pd.DataFrame) -> pd.DataFrame:
    """Clicks joined to the shown request they came from: columns request_id, distinct_id (of the shown
    request), post_id (as a string), model_version. A click counts once per (request, post), and only when
    its post was in that request's shown list; clicks with no such request are dropped."""
    shown = _shown_requests(events)
    clicked = events.loc[events["event"] == RECOMMENDATION_CLICKED, ["request_id", "post_id"]].dropna()
    clicked = pd.DataFrame(
        {"request_id": clicked["request_id"].map(_id_string), "post_id": clicked["post_id"].map(_id_string)}
    ).drop_duplicates()
    joined = clicked.merge(shown, on="request_id", how="inner")
    was_shown = [post in posts for post, posts in zip(joined["post_id"], joined["shown_posts"], strict=True)]
    return joined.loc[was_shown, ["request_id", "distinct_id", "post_id", "model_version"]].reset_index(drop=True)


def observed_ctr(events: pd.DataFrame) -> pd.DataFrame:
    """Observed CTR per model version: columns model_version, requests, impressions (shown post slots),
    clicks (attributed, see attributed_clicks) and ctr = clicks / impressions (NaN without impressions).
    Shown events without a model_version are grouped as "unknown". One row per model version shown."""
    shown = _shown_requests(events)
    if shown.empty:
        return pd.DataFrame({column: [] for column in OBSERVED_COLUMNS}).astype(
            {"requests": "int64", "impressions": "int64", "clicks": "int64", "ctr": "float64"}
        )
    shown["impressions"] = shown["shown_posts"].map(len)
    per_model = shown.groupby("model_version", sort=True).agg(
        requests=("request_id", "size"), impressions=("impressions", "sum")
    )
    clicks = attributed_clicks(events).groupby("model_version").size()
    per_model["clicks"] = clicks.reindex(per_model.index, fill_value=0).astype("int64")
    impressions = per_model["impressions"].astype("float64")
    per_model["ctr"] = (per_model["clicks"] / impressions).where(impressions > 0, np.nan)
    return per_model.reset_index()[OBSERVED_COLUMNS]


@dataclass(frozen=True)
class ReplayEstimate:
    """Offline replay of logged clicks against a new model's lists: an estimate, not an observed CTR."""

    k: int
    logged_clicks: int
    recovered_clicks: int
    clicks_without_list: int  # clicks by users the new model has no list for (counted as not recovered)

    @property
    def recovered_share(self) -> float:
        return self.recovered_clicks / self.logged_clicks if self.logged_clicks else 0.0


def replay_clicks_recovered(
    events: pd.DataFrame, recommendations: Mapping[Hashable, Sequence[Hashable]], k: int
) -> ReplayEstimate:
    """Share of logged, attributed clicks whose post is in the new model's top k for the clicking user.

    Biases, so read it as a comparison between candidates on the same log and not as a CTR forecast:
    - Exposure bias: only posts the logging model showed can have been clicked, so a new model is credited
      only where it agrees with the old one; a new model that surfaces better posts the old one never showed
      gets no credit for them (the estimate is biased towards the logging policy).
    - It ignores position and list context: a click at slot 1 of the old list counts the same as a match at
      slot k of the new one, and the new list's other posts might have drawn the click elsewhere.
    - The new lists must be ranked as of before the logged clicks: lists that exclude already-engaged posts
      (as serving does) exclude the clicked posts themselves and recover almost nothing.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    top_k_by_user = {
        _id_string(user): {_id_string(item) for item in items[:k]} for user, items in recommendations.items()
    }
    clicks = attributed_clicks(events)
    recovered = 0
    without_list = 0
    for user, post in zip(clicks["distinct_id"], clicks["post_id"], strict=True):
        top_k = top_k_by_user.get(user)
        if top_k is None:
            without_list += 1
        elif post in top_k:
            recovered += 1
    return ReplayEstimate(k=k, logged_clicks=len(clicks), recovered_clicks=recovered, clicks_without_list=without_list)


@dataclass(frozen=True)
class CtrSummary:
    """What the report shows about clicks: observed per model version, and the candidate's replay estimate."""

    observed: pd.DataFrame  # observed_ctr's frame
    replay: ReplayEstimate | None
