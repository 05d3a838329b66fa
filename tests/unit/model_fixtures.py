"""A small topic-structured world for the model tests, shaped like the dbt marts.

Each user has one or two favourite topics (their passions, with some noise); every post belongs to one topic
and says so in its title and description; users engage with posts of their topics far more often than with
others, preferring recent posts. Some users sign up after the cutoff: they have a profile only (cold start).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

TOPIC_WORDS: dict[str, list[str]] = {
    "climbing": ["boulder", "crag", "rope", "belay", "chalk", "summit", "harness", "ascent"],
    "cooking": ["recipe", "bake", "sourdough", "spice", "kitchen", "ferment", "broth", "roast"],
    "robotics": ["servo", "arduino", "sensor", "motor", "circuit", "lidar", "gripper", "firmware"],
    "music": ["guitar", "synth", "chord", "melody", "drum", "vinyl", "tempo", "riff"],
    "gardening": ["compost", "seedling", "tomato", "soil", "prune", "greenhouse", "mulch", "bulb"],
    "photography": ["lens", "aperture", "shutter", "portrait", "darkroom", "tripod", "exposure", "bokeh"],
}
GENERIC_WORDS = [
    "weekend",
    "project",
    "ideas",
    "community",
    "update",
    "help",
    "looking",
    "share",
    "first",
    "new",
]
CITIES = [(52.52, 13.40), (48.85, 2.35), (40.71, -74.0), (35.68, 139.69)]
START = pd.Timestamp("2024-01-01", tz="UTC")


@dataclass(frozen=True)
class SyntheticWorld:
    user_features: pd.DataFrame
    post_features: pd.DataFrame
    interactions: pd.DataFrame
    cutoff: pd.Timestamp
    cold_user_ids: list[int]


def _words(rng: np.random.Generator, topic: str, topical: int, generic: int) -> str:
    words = list(rng.choice(TOPIC_WORDS[topic], topical, replace=False))
    words += list(rng.choice(GENERIC_WORDS, generic, replace=False))
    rng.shuffle(words)
    return " ".join(words)


def make_world(
    *,
    warm_users: int = 160,
    cold_users: int = 30,
    posts: int = 300,
    days: int = 60,
    cutoff_day: int = 48,
    events_per_user: int = 30,
    seed: int = 7,
) -> SyntheticWorld:
    rng = np.random.default_rng(seed)
    topics = list(TOPIC_WORDS)
    user_count = warm_users + cold_users
    user_ids = np.arange(1, user_count + 1, dtype=np.int64)
    favourites = [list(rng.choice(topics, 1 + int(rng.random() < 0.3), replace=False)) for _ in user_ids]
    signed_up_day = np.where(
        np.arange(user_count) < warm_users, rng.uniform(0, days * 0.3, user_count), cutoff_day + 0.5
    )

    post_ids = np.arange(1001, 1001 + posts, dtype=np.int64)
    post_topics = rng.choice(topics, posts)
    post_day = np.sort(rng.uniform(0, days, posts))
    post_author = rng.choice(user_ids[:warm_users], posts)
    titles = [_words(rng, topic, 2, 1) for topic in post_topics]
    descriptions = [_words(rng, topic, 4, 3) for topic in post_topics]
    comments = [[_words(rng, topic, 2, 2) for _ in range(rng.integers(0, 3))] for topic in post_topics]
    post_city = rng.integers(0, len(CITIES), posts)

    events: list[tuple[int, int, str, float]] = []
    for user_index, user in enumerate(user_ids):
        start = signed_up_day[user_index]
        for event_day in np.sort(rng.uniform(start, days, events_per_user)):
            liked = rng.random() < 0.85
            topic = rng.choice(favourites[user_index]) if liked else rng.choice(topics)
            available = np.flatnonzero((post_topics == topic) & (post_day < event_day))
            if len(available) == 0:
                continue
            # Fresh posts attract more attention: a decay over ~10 days of age.
            weights = np.exp(-(event_day - post_day[available]) / 10.0)
            post = post_ids[rng.choice(available, p=weights / weights.sum())]
            events.append((int(user), int(post), "view", float(event_day)))
            if rng.random() < 0.3:
                events.append((int(user), int(post), "upvote", float(event_day) + 1e-3))
            if rng.random() < 0.1:
                events.append((int(user), int(post), "comment", float(event_day) + 2e-3))

    interactions = pd.DataFrame(events, columns=["user_id", "post_id", "kind", "day"])
    interactions["occurred_at"] = START + pd.to_timedelta(interactions.pop("day"), unit="D")
    interactions = interactions.drop_duplicates(["user_id", "post_id", "kind", "occurred_at"])
    interactions = interactions.astype({"user_id": np.int64, "post_id": np.int64})

    created_titles: dict[int, list[str]] = {int(u): [] for u in user_ids}
    for author, title in zip(post_author, titles, strict=True):
        created_titles[int(author)].append(title)
    user_city = rng.integers(0, len(CITIES), user_count)
    no_location = rng.random(user_count) < 0.1
    user_features = pd.DataFrame(
        {
            "user_id": user_ids,
            "bio": [f"into {_words(rng, fav[0], 2, 1)}" if rng.random() < 0.8 else None for fav in favourites],
            "passions": [fav + ([str(rng.choice(topics))] if rng.random() < 0.2 else []) for fav in favourites],
            "latitude": [
                np.nan if missing else CITIES[c][0] for c, missing in zip(user_city, no_location, strict=True)
            ],
            "longitude": [
                np.nan if missing else CITIES[c][1] for c, missing in zip(user_city, no_location, strict=True)
            ],
            "project_titles": [[_words(rng, fav[-1], 2, 1)] if rng.random() < 0.5 else [] for fav in favourites],
            "created_post_titles": [created_titles[int(u)] for u in user_ids],
            "created_at": START + pd.to_timedelta(signed_up_day, unit="D"),
        }
    )
    user_features = _with_activity(user_features, interactions)
    user_features["updated_at"] = user_features["created_at"]

    counts = interactions.groupby(["post_id", "kind"]).size().unstack(fill_value=0)
    post_features = pd.DataFrame(
        {
            "post_id": post_ids,
            "user_id": post_author,
            "title": titles,
            "description": descriptions,
            "post_length": [len(d) for d in descriptions],
            "comments": comments,
            "vote_count": [int(counts["upvote"].get(p, 0)) for p in post_ids],
            "view_count": [int(counts["view"].get(p, 0)) for p in post_ids],
            "avg_time_viewed_seconds": rng.uniform(5, 120, posts),
            "is_local": rng.random(posts) < 0.2,
            "latitude": [CITIES[c][0] for c in post_city],
            "longitude": [CITIES[c][1] for c in post_city],
            "created_at": START + pd.to_timedelta(post_day, unit="D"),
        }
    )
    post_features["updated_at"] = post_features["created_at"]
    return SyntheticWorld(
        user_features=user_features,
        post_features=post_features,
        interactions=interactions.reset_index(drop=True),
        cutoff=START + pd.Timedelta(days=cutoff_day),
        cold_user_ids=[int(u) for u in user_ids[warm_users:]],
    )


def _with_activity(user_features: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """The mart's activity columns as of the end of the data (what the live mart would read)."""
    result = user_features.copy()
    per_kind = interactions.groupby(["user_id", "kind"]).size().unstack(fill_value=0)
    for kind, column in (
        ("view", "viewed_count"),
        ("upvote", "upvoted_count"),
        ("comment", "commented_count"),
    ):
        result[column] = result["user_id"].map(per_kind[kind]).fillna(0).astype(np.int64)
    newest_first = interactions.sort_values("occurred_at", ascending=False).drop_duplicates(["user_id", "post_id"])
    recent = newest_first.groupby("user_id")["post_id"].agg(lambda ids: [int(i) for i in ids[:50]])
    result["recent_post_ids"] = [recent.get(u, []) for u in result["user_id"]]
    return result


def recall_at_k(
    ranked: dict[int, list[int]], relevant: dict[int, set[int]], users: Iterable[int], k: int = 20
) -> float:
    """Mean over users with relevant posts of |top k ∩ relevant| / |relevant|."""
    scores = [len(set(ranked[u][:k]) & relevant[u]) / len(relevant[u]) for u in users if relevant.get(u)]
    return float(np.mean(scores)) if scores else 0.0


def rank_excluding(
    scores: np.ndarray, user_ids: np.ndarray, post_ids: np.ndarray, seen: dict[int, set[int]], k: int = 20
) -> dict[int, list[int]]:
    """Top-k post ids per user by score, skipping posts the user engaged with before (as serving does)."""
    ranked: dict[int, list[int]] = {}
    for row, user in enumerate(user_ids):
        order = np.argsort(-scores[row], kind="stable")
        excluded = seen.get(int(user), set())
        ranked[int(user)] = [int(post_ids[i]) for i in order if int(post_ids[i]) not in excluded][:k]
    return ranked
