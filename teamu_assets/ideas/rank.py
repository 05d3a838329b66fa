"""Ranking ideas by the post tower: each idea is embedded by the served model's candidate tower as a new post
(cold start by content: no id the model knows, no views, votes or comments, age 0), and scored against the
audience's user embeddings.

The tower's score is the model's own prediction of engagement. The towers are trained with a softmax over posts,
so for a user u, exp(u . p) / sum over the live posts q of exp(u . q) is the share of u's next engagement that
post p would get; times how much u engages (context.engagement_rates: the posts u engaged with lately) and
summed over the audience, it is the number of engagements the idea is expected to draw from its audience were it
published now among the live posts (predicted_engagement). Counting every user's share alike let the many
accounts that never engage (most sign-ups of a real site) weigh as much as the few who answer, which is not what
the score says it is (measured, the difference is within the spread between trainings: docs/BENCHMARKS.md, post
ideas). The ideas' score blends it with the team's past engagement as the model's validation chose
(blend.RankerBlend; the tower alone when not validated).
The reasons are the successful posts of the context nearest each idea in content, each embedded as a new post
too (successful_as_new): an idea and a post the model knows would otherwise be compared across two regimes, the
idea placed by its content alone and the post by its learned id as well: on the demo one team's drafts scored
-0.07 on average against its successful posts that way (0.06 at most), ordering nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from teamu_assets.db.connection import connect
from teamu_assets.ideas.context import ContextPost, IdeaContext, content
from teamu_assets.ideas.generate import Idea

if TYPE_CHECKING:
    from teamu_assets.ideas.blend import RankerBlend

# Embeds a post frame (marts.post_features' columns) as the served candidate tower does, post ages measured at
# the given moment: [n, D] float32.
PostEmbedder = Callable[[pd.DataFrame, pd.Timestamp], np.ndarray]
REASONS_PER_IDEA = 2
# exp() of a score above this overflows float8; real scores (1 / temperature + appetite x freshness + quality)
# stay in the tens.
MAX_EXPONENT = 700.0


@dataclass(frozen=True)
class Reason:
    post_id: int
    title: str
    similarity: float  # content cosine between the idea and this successful post, both embedded as new posts
    views: int
    upvotes: int

    def __str__(self) -> str:
        return f'near "{self.title}" (cos {self.similarity:.2f}; {self.views} views, {self.upvotes} upvotes)'


@dataclass(frozen=True)
class RankedIdea:
    rank: int
    idea: Idea
    score: float  # the ranker's: the blend of tower_score and the team's past engagement (RankerBlend.score)
    mean_affinity: float  # mean over the audience of user . idea: the raw model score
    reasons: tuple[Reason, ...]
    tower_score: float | None = None  # expected engagements from the audience (predicted_engagement)


def as_new_posts(posts: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Posts (columns user_id, title, description, is_local, latitude, longitude) as marts.post_features rows of
    posts published at `as_of`: negative ids (never a post's, so the tower's id lookup gives the
    out-of-vocabulary id, as for any post newer than the model), no comments, votes, views or view time yet, age 0
    when embedded at `as_of`. The cold start the ideas are ranked in, and which bench_post_ideas measures."""
    n = len(posts)
    titles = posts["title"].fillna("").astype(str).tolist()
    descriptions = posts["description"].fillna("").astype(str).tolist()
    return pd.DataFrame(
        {
            "post_id": -np.arange(1, n + 1, dtype=np.int64),
            "user_id": posts["user_id"].to_numpy(np.int64),
            "title": titles,
            "description": descriptions,
            "post_length": [len(t) + len(d) for t, d in zip(titles, descriptions, strict=True)],
            "comments": [[] for _ in range(n)],
            "vote_count": np.zeros(n, dtype=np.int64),
            "view_count": np.zeros(n, dtype=np.int64),
            "avg_time_viewed_seconds": np.zeros(n),
            "is_local": posts["is_local"].fillna(False).astype(bool).to_numpy(),
            "latitude": posts["latitude"].to_numpy(np.float64, na_value=np.nan),
            "longitude": posts["longitude"].to_numpy(np.float64, na_value=np.nan),
            "created_at": pd.Series([as_of] * n, dtype="datetime64[us, UTC]"),
        }
    )


def idea_posts(ideas: Sequence[Idea], context: IdeaContext) -> pd.DataFrame:
    """The ideas as new posts (as_new_posts) by the team's owner, published at the data's clock; a local team's
    are local posts at its centre."""
    team = context.team
    owner = team.members[0].user_id if team.members else 0
    frame = pd.DataFrame(
        {
            "user_id": np.full(len(ideas), owner, dtype=np.int64),
            "title": [idea.title for idea in ideas],
            "description": [idea.description for idea in ideas],
            "is_local": np.full(len(ideas), team.is_local),
            "latitude": np.full(len(ideas), team.latitude if team.is_local else np.nan, dtype=np.float64),
            "longitude": np.full(len(ideas), team.longitude if team.is_local else np.nan, dtype=np.float64),
        }
    )
    return as_new_posts(frame, context.as_of)


def log_normalizers(user_vectors: np.ndarray, post_vectors: np.ndarray, *, block: int = 65_536) -> np.ndarray:
    """log sum over posts of exp(u . p) for each user [n], posts taken `block` at a time (stable log-sum-exp)."""
    users = np.asarray(user_vectors, np.float64)
    total = np.full(len(users), -np.inf)
    for start in range(0, len(post_vectors), block):
        scores = users @ np.asarray(post_vectors[start : start + block], np.float64).T
        total = np.logaddexp(total, np.logaddexp.reduce(scores, axis=1))
    return total


def live_log_normalizers(url: str, user_ids: np.ndarray) -> np.ndarray:
    """log_normalizers of these users against every post in ml.post_embeddings, computed in the database (no post
    vector leaves it), in the order of user_ids."""
    with connect(url) as conn:
        rows = dict(
            conn.execute(
                "select u.user_id, ln(sum(exp(least(-(p.embedding <#> u.embedding), %s))))"
                " from ml.user_embeddings u cross join ml.post_embeddings p"
                " where u.user_id = any(%s) group by u.user_id",
                (MAX_EXPONENT, user_ids.tolist()),
            ).fetchall()
        )
    return np.array([rows[user_id] for user_id in user_ids.tolist()], np.float64)


def predicted_engagement(
    user_vectors: np.ndarray, post_vectors: np.ndarray, normalizers: np.ndarray, rates: np.ndarray | None = None
) -> np.ndarray:
    """For each post [n]: the sum over users of rate(u) * exp(u . p - normalizer(u)), its expected engagements
    from them (rates: context.engagement_rates). Without rates, or when none of the users engaged, every user's
    share counts alike, one engagement each: rather than every post expected to draw nothing."""
    scores = np.asarray(user_vectors, np.float64) @ np.asarray(post_vectors, np.float64).T
    shares = np.exp(np.minimum(scores - normalizers[:, np.newaxis], MAX_EXPONENT))
    if rates is None or not np.any(rates):
        return shares.sum(axis=0)
    return np.asarray(rates, np.float64) @ shares


def successful_as_new(context: IdeaContext) -> pd.DataFrame:
    """The context's successful posts as new posts (as_new_posts) where they are, published at the data's clock:
    what each would be to the tower with its content alone, as an idea is."""
    successful = context.successful_posts
    frame = pd.DataFrame(
        {
            # The candidate tower reads no author: any id does.
            "user_id": np.zeros(len(successful), dtype=np.int64),
            "title": [post.title for post in successful],
            "description": [post.description for post in successful],
            "is_local": [post.is_local for post in successful],
            "latitude": np.array([np.nan if post.latitude is None else post.latitude for post in successful]),
            "longitude": np.array([np.nan if post.longitude is None else post.longitude for post in successful]),
        }
    )
    return as_new_posts(frame, context.as_of)


def _reasons(idea_vector: np.ndarray, successful_vectors: np.ndarray, context: IdeaContext) -> tuple[Reason, ...]:
    similarity = content(successful_vectors) @ content(idea_vector)
    order = np.lexsort(([p.post_id for p in context.successful_posts], -similarity))[:REASONS_PER_IDEA]
    posts: list[ContextPost] = [context.successful_posts[i] for i in order]
    return tuple(
        Reason(p.post_id, p.title, float(similarity[i]), p.views, p.upvotes) for p, i in zip(posts, order, strict=True)
    )


def rank_ideas(
    ideas: Sequence[Idea],
    context: IdeaContext,
    embed: PostEmbedder,
    normalizers: np.ndarray,
    blend: RankerBlend | None = None,
    prior: float = 0.0,
) -> list[RankedIdea]:
    """The ideas best first by the blend's score of the tower's predicted engagement from the context's audience
    (each user's share times their engagement rate) and the team's prior (blend.team_prior), the tower alone
    without a blend; ties (all of them when the blend is the prior alone) by the tower's score, then the earlier
    idea. Each with its reasons. normalizers: the audience's log_normalizers over the live posts, in audience
    order."""
    if not ideas:
        return []
    vectors = np.asarray(embed(idea_posts(ideas, context), context.as_of), np.float64)
    # Embedded once for every idea's reasons (nothing to embed without successful posts: no reasons then).
    successful = (
        np.asarray(embed(successful_as_new(context), context.as_of), np.float64)
        if context.successful_posts
        else vectors[:0]
    )
    audience = context.audience.vectors
    tower = predicted_engagement(audience, vectors, normalizers, context.audience.rates)
    scores = tower if blend is None else blend.score(tower, prior)
    mean_affinity = (np.asarray(audience, np.float64) @ vectors.T).mean(axis=0)
    order = np.lexsort((np.arange(len(ideas)), -tower, -scores))
    return [
        RankedIdea(
            rank=rank,
            idea=ideas[i],
            score=float(scores[i]),
            mean_affinity=float(mean_affinity[i]),
            reasons=_reasons(vectors[i], successful, context),
            tower_score=float(tower[i]),
        )
        for rank, i in enumerate(order, start=1)
    ]
