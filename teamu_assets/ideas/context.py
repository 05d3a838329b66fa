"""The context the ideas are written from, chosen with the served embeddings: the team's audience, the posts that
did well with that audience, what the team cares about and has already posted, and local trends.

Every choice is exact (no approximate index) and ordered with an id tie-break, so the same database gives the
same context; IdeaContext.summary() shows all of it.

The vectors (teamu_assets/model/towers.py): a user is [item-item block, content / temperature, appetite, 1,
new-user prior], a post [item-item block, content, freshness, quality, a tenth of its log view count].
"Nearest" compares everything but the last SCORE_TERMS dimensions (content and the item-item block, which places
a post by who engaged with it, weighted as the served score weighs it: zero on both sides where the model keeps no
block), as a unit vector: which users and posts sit where the team does, whatever their appetite for fresh
posts, a post's quality or its popularity.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from teamu_assets.db.connection import connect
from teamu_assets.ideas.team import ACTIVITY_WINDOW_DAYS, LOCAL_RADIUS_KM, Team, haversine_km
from teamu_assets.model.params import SCORE_TERMS

DEFAULT_AUDIENCE_SIZE = 200
# A user's rate of engagement is read from the posts they engaged with before the moment of scoring, each counted
# with this half-life: the recent weigh most, and an account that never engaged draws nothing.
ENGAGEMENT_HALF_LIFE = pd.Timedelta(days=30)
# A post "performed well" when its engagement (views + upvotes net of downvotes, at least 0, + comments) is in
# the top quarter of all posts.
SUCCESS_QUANTILE = 0.75
SUCCESSFUL_POSTS = 8
# The nearest posts looked at for successful ones (before the engagement bar and the locality filter).
NEAREST_POOL = 200
LOCAL_TRENDS = 5
MAX_PASSIONS = 8
MAX_PROJECTS = 10


class ContextError(RuntimeError):
    """The context can't be built: no embeddings, or embeddings of another model than the one ranking."""


@dataclass(frozen=True)
class ContextPost:
    post_id: int
    title: str
    description: str
    views: int
    upvotes: int  # net votes, as marts.post_features.vote_count
    comments: int
    avg_seconds_viewed: float
    is_local: bool
    similarity: float  # content cosine with the audience's centre (local trends: 0)
    recent_engagements: int = 0  # local trends: interactions in the last ACTIVITY_WINDOW_DAYS
    latitude: float | None = None  # where a local post is (rank.successful_as_new embeds it there)
    longitude: float | None = None

    @property
    def engagement(self) -> int:
        return self.views + max(self.upvotes, 0) + self.comments


@dataclass(frozen=True)
class Audience:
    user_ids: np.ndarray  # int64 [n], nearest first (local users first for a local team)
    affinity: np.ndarray  # float [n]: user vector . team direction (content cosine / temperature)
    is_local: np.ndarray  # bool [n]: within LOCAL_RADIUS_KM of a local team's centre
    vectors: np.ndarray = field(repr=False)  # float32 [n, D]: their served user embeddings
    # float [n]: how much each engages (engagement_rates at the data's clock); None: every user alike
    rates: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class IdeaContext:
    team: Team
    as_of: pd.Timestamp  # the data's clock: the newest interaction
    model_version: str
    audience: Audience
    passions: tuple[tuple[str, int], ...]  # (passion, how many members hold it), most held first
    projects: tuple[str, ...]  # the team's project first, then the members' other projects
    successful_posts: tuple[ContextPost, ...]
    local_trends: tuple[ContextPost, ...] = ()

    @property
    def existing_titles(self) -> list[str]:
        """What the team already posted, newest first: ideas must not repeat it."""
        return [post.title for post in self.team.posts if post.title]

    def summary(self) -> dict[str, Any]:
        """Everything chosen, as JSON-able values: what the generator was given and why."""
        audience = self.audience
        return {
            "team": {
                "project_id": self.team.project_id,
                "title": self.team.title,
                "members": self.team.member_ids,
                "is_local": self.team.is_local,
                "centre": None if not self.team.is_local else [self.team.latitude, self.team.longitude],
            },
            "as_of": self.as_of.isoformat(),
            "model_version": self.model_version,
            "audience": {
                "size": len(audience.user_ids),
                "local": int(audience.is_local.sum()),
                "nearest": audience.user_ids[:10].tolist(),
                # How many of them engaged with anything: only they weigh in the ideas' expected engagement.
                "engaged": None if audience.rates is None else int(np.count_nonzero(audience.rates)),
                "affinity_range": [float(audience.affinity.min()), float(audience.affinity.max())]
                if len(audience.affinity)
                else None,
            },
            "passions": [list(item) for item in self.passions],
            "projects": list(self.projects),
            "successful_posts": [_post_summary(post) for post in self.successful_posts],
            "existing_posts": len(self.team.posts),
            "local_trends": [_post_summary(post) for post in self.local_trends],
        }


def _post_summary(post: ContextPost) -> dict[str, Any]:
    return {
        "post_id": post.post_id,
        "title": post.title,
        "views": post.views,
        "upvotes": post.upvotes,
        "comments": post.comments,
        "similarity": round(post.similarity, 4),
        "recent_engagements": post.recent_engagements,
    }


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def content(vectors: np.ndarray) -> np.ndarray:
    """The unit content part of user or post vectors."""
    return _unit(np.asarray(vectors, np.float64)[..., :-SCORE_TERMS])


def as_query(direction: np.ndarray) -> str:
    """A content direction as a pgvector literal in the vectors' space ([direction, 0, 0]): its inner product with
    a vector is that vector's content . direction (a user's divided by the temperature)."""
    values = np.concatenate([direction, np.zeros(SCORE_TERMS)])
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


def team_direction(member_vectors: np.ndarray, post_vectors: np.ndarray) -> np.ndarray:
    """Where the team sits in content space: the mean of its members' content and the mean of its posts' content,
    the two given equal weight (a team with many posts isn't only its posts), as a unit vector."""
    parts = [_unit(content(vectors).mean(axis=0)) for vectors in (member_vectors, post_vectors) if len(vectors)]
    if not parts:
        raise ContextError("the team has no embedded member and no embedded post: nothing to find an audience by")
    return _unit(np.sum(parts, axis=0))


def _vectors(conn: Any, table: str, id_column: str, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(
        f"select {id_column}, embedding::real[] from ml.{table} where {id_column} = any(%s) order by {id_column}",
        (ids,),
    ).fetchall()
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32)


def _check_model_version(conn: Any, model_version: str) -> None:
    for table in ("user_embeddings", "post_embeddings"):
        exists = conn.execute("select to_regclass(%s)", (f"ml.{table}",)).fetchone()[0]
        if exists is None:
            raise ContextError(f"ml.{table} does not exist: no model has been promoted and embedded (run `make demo`)")
        versions = [r[0] for r in conn.execute(f"select distinct model_version from ml.{table}")]
        if versions != [model_version]:
            raise ContextError(
                f"ml.{table} holds {versions or 'no vectors'}, not the promoted model {model_version}: "
                "materialize the embedding assets first"
            )


def engagement_rates(interactions: pd.DataFrame, user_ids: np.ndarray, as_of: pd.Timestamp) -> np.ndarray:
    """How much each user engages [n], in user_ids' order: the distinct posts they engaged with in `interactions`
    (user_id, post_id, occurred_at; the caller passes what was known at as_of), each weighted 0.5 ** (its first
    engagement's age at as_of / ENGAGEMENT_HALF_LIFE); 0 for a user who engaged with nothing."""
    first = interactions.groupby(["user_id", "post_id"], sort=False)["occurred_at"].min()
    age = (as_of - pd.to_datetime(first, utc=True)).clip(lower=pd.Timedelta(0))
    weight = pd.Series(0.5 ** (age / ENGAGEMENT_HALF_LIFE).to_numpy(np.float64), index=first.index)
    per_user = weight.groupby(level="user_id").sum()
    return pd.Series(np.asarray(user_ids, np.int64)).map(per_user).fillna(0.0).to_numpy(np.float64)


def choose_audience(
    user_ids: np.ndarray,
    affinity: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    team: Team,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the audience among the candidates, and which of them are local: the `size` users of highest
    affinity, a local team's users within LOCAL_RADIUS_KM first (then the nearest others, when fewer than `size`
    live nearby). Ties go to the lower user id."""
    if team.is_local:
        distance = haversine_km(latitude, longitude, team.latitude, team.longitude)
        local = np.nan_to_num(distance, nan=np.inf) <= LOCAL_RADIUS_KM
    else:
        local = np.zeros(len(user_ids), dtype=bool)
    order = np.lexsort((user_ids, -affinity, ~local))
    return order[:size], local[order[:size]]


def build_context(
    url: str,
    team: Team,
    model_version: str,
    *,
    audience_size: int = DEFAULT_AUDIENCE_SIZE,
    successful_posts: int = SUCCESSFUL_POSTS,
) -> IdeaContext:
    """The team's context from the served embeddings of `model_version` (the model that will rank the ideas)."""
    member_ids = team.member_ids
    with connect(url) as conn:
        _check_model_version(conn, model_version)
        # Exact scans: the HNSW index would answer approximately, and by its build, not only by the data.
        conn.execute("set local enable_indexscan = off")
        as_of = conn.execute("select max(occurred_at) from marts.interactions").fetchone()[0]
        _, member_vectors = _vectors(conn, "user_embeddings", "user_id", member_ids)
        _, team_post_vectors = _vectors(conn, "post_embeddings", "post_id", [p.post_id for p in team.posts])
        direction = team_direction(member_vectors, team_post_vectors)
        candidates = conn.execute(
            "select e.user_id, -(e.embedding <#> %s::vector), u.latitude, u.longitude"
            " from ml.user_embeddings e join marts.user_features u using (user_id)"
            " where not (e.user_id = any(%s))",
            (as_query(direction), member_ids),
        ).fetchall()
        frame = pd.DataFrame(candidates, columns=["user_id", "affinity", "latitude", "longitude"])
        chosen, local = choose_audience(
            frame["user_id"].to_numpy(np.int64),
            frame["affinity"].to_numpy(np.float64),
            frame["latitude"].to_numpy(np.float64, na_value=np.nan),
            frame["longitude"].to_numpy(np.float64, na_value=np.nan),
            team,
            audience_size,
        )
        audience_ids = frame["user_id"].to_numpy(np.int64)[chosen]
        ids, vectors = _vectors(conn, "user_embeddings", "user_id", audience_ids.tolist())
        engaged = conn.execute(
            "select user_id, post_id, min(occurred_at) from marts.interactions"
            " where user_id = any(%s) and occurred_at <= %s group by user_id, post_id",
            (audience_ids.tolist(), as_of),
        ).fetchall()
        audience = Audience(
            user_ids=audience_ids,
            affinity=frame["affinity"].to_numpy(np.float64)[chosen],
            is_local=local,
            vectors=vectors[np.searchsorted(ids, audience_ids)] if len(ids) else vectors,
            rates=engagement_rates(
                pd.DataFrame(engaged, columns=["user_id", "post_id", "occurred_at"]), audience_ids, pd.Timestamp(as_of)
            ),
        )
        centre = _unit(content(audience.vectors).mean(axis=0)) if len(audience_ids) else direction
        near_posts = conn.execute(
            "with nearest as ("
            "  select post_id, -(embedding <#> %(q)s::vector) as similarity"
            "  from ml.post_embeddings order by embedding <#> %(q)s::vector, post_id limit %(pool)s),"
            " engagement as (select post_id, user_id, title, description, view_count, vote_count,"
            "  cardinality(comments) as comment_count,"
            "  coalesce(extract(epoch from avg_time_viewed), 0)::float8 as seconds, is_local, latitude, longitude,"
            "  view_count + greatest(vote_count, 0) + cardinality(comments) as engagement from marts.post_features),"
            " bar as (select percentile_cont(%(quantile)s) within group (order by engagement) as at from engagement)"
            " select n.post_id, coalesce(e.title, ''), coalesce(e.description, ''), e.view_count, e.vote_count,"
            "  e.comment_count, e.seconds, e.is_local, n.similarity, e.latitude, e.longitude"
            " from nearest n join engagement e using (post_id), bar"
            " where e.engagement >= bar.at and not (e.user_id = any(%(members)s))"
            " order by n.similarity desc, n.post_id",
            {"q": as_query(centre), "pool": NEAREST_POOL, "quantile": SUCCESS_QUANTILE, "members": member_ids},
        ).fetchall()
        trends = _local_trends(conn, team, as_of) if team.is_local else ()
    kept = [row for row in near_posts if _visible_to(team, row[7], row[9], row[10])][:successful_posts]
    posts = tuple(ContextPost(*row[:9], latitude=row[9], longitude=row[10]) for row in kept)
    return IdeaContext(
        team=team,
        as_of=pd.Timestamp(as_of),
        model_version=model_version,
        audience=audience,
        passions=_passions(team),
        projects=_projects(team),
        successful_posts=posts,
        local_trends=trends,
    )


def _visible_to(team: Team, is_local: bool, latitude: float | None, longitude: float | None) -> bool:
    """A local post is an example only for a local team near it: elsewhere nobody in the audience sees it."""
    if not is_local:
        return True
    if not team.is_local or latitude is None or longitude is None:
        return False
    return bool(
        haversine_km(np.array([latitude]), np.array([longitude]), team.latitude, team.longitude)[0] <= LOCAL_RADIUS_KM
    )


def _local_trends(conn: Any, team: Team, as_of: Any) -> tuple[ContextPost, ...]:
    """The local posts near a local team that drew the most interactions in the last ACTIVITY_WINDOW_DAYS."""
    rows = conn.execute(
        "with recent as (select post_id, count(*) as n from marts.interactions"
        "  where occurred_at >= %s::timestamptz - make_interval(days => %s) group by post_id)"
        " select p.post_id, coalesce(p.title, ''), coalesce(p.description, ''), p.view_count, p.vote_count,"
        " cardinality(p.comments), coalesce(extract(epoch from p.avg_time_viewed), 0)::float8, p.is_local,"
        " recent.n, p.latitude, p.longitude"
        " from recent join marts.post_features p using (post_id)"
        " where p.is_local and not (p.user_id = any(%s))"
        " order by recent.n desc, p.post_id",
        (as_of, ACTIVITY_WINDOW_DAYS, team.member_ids),
    ).fetchall()
    near = [row for row in rows if _visible_to(team, True, row[9], row[10])][:LOCAL_TRENDS]
    return tuple(
        ContextPost(*row[:8], similarity=0.0, recent_engagements=row[8], latitude=row[9], longitude=row[10])
        for row in near
    )


def _passions(team: Team) -> tuple[tuple[str, int], ...]:
    counts = Counter(passion for member in team.members for passion in member.passions)
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_PASSIONS])


def _projects(team: Team) -> tuple[str, ...]:
    titles = dict.fromkeys(t for t in [team.title, *(p for m in team.members for p in m.project_titles)] if t)
    return tuple(titles)[:MAX_PROJECTS]
