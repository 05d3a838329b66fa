"""A team (a project's members, marts.teams) and the facts about it the ideas need: who is in it, what they
care about, what they have posted, and whether it is a local team.

A team is local when its members live close together: at least two members with a location, at least half the
members located, every located member within LOCAL_RADIUS_KM of their centre; or when at least half of the
team's posts are local posts. Its centre is then the members' (or the local posts') mean position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from teamu_assets.db.connection import connect
from teamu_assets.model.features import normalized_passions

# The radius ml.recommend_posts shows local posts within (its p_local_radius_km default): a local team's
# audience and trends are the people and posts this close to it.
LOCAL_RADIUS_KM = 50.0
EARTH_RADIUS_KM = 6371.0
# The share of a team's posts that are local above which the team counts as local whatever its members' homes.
LOCAL_POST_SHARE = 0.5
# A team's activity (active_teams) is counted over this many days before the newest interaction.
ACTIVITY_WINDOW_DAYS = 14


class TeamNotFound(LookupError):
    """No such project in marts.teams."""


@dataclass(frozen=True)
class Member:
    user_id: int
    role: str
    username: str | None
    passions: tuple[str, ...]
    project_titles: tuple[str, ...]
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True)
class TeamPost:
    post_id: int
    user_id: int
    title: str
    description: str
    is_local: bool
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True)
class Team:
    project_id: int
    title: str | None
    members: tuple[Member, ...]  # owner first
    posts: tuple[TeamPost, ...]  # the members' posts, newest first
    is_local: bool
    latitude: float | None  # the centre of a local team, None otherwise
    longitude: float | None

    @property
    def member_ids(self) -> list[int]:
        return [member.user_id for member in self.members]

    @property
    def label(self) -> str:
        return f"project {self.project_id}" + (f" ({self.title})" if self.title else "")


def haversine_km(lat1: np.ndarray, lng1: np.ndarray, lat2: float, lng2: float) -> np.ndarray:
    """Great-circle distances in km from points (arrays, degrees) to one point; NaN where a point is unknown."""
    lat1, lng1 = np.radians(np.asarray(lat1, np.float64)), np.radians(np.asarray(lng1, np.float64))
    lat2_r, lng2_r = np.radians(lat2), np.radians(lng2)
    a = np.sin((lat2_r - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2_r) * np.sin((lng2_r - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _located(points: list[tuple[float | None, float | None]]) -> np.ndarray:
    rows = [(lat, lng) for lat, lng in points if lat is not None and lng is not None]
    return np.array(rows, np.float64).reshape(len(rows), 2)


def locality(members: tuple[Member, ...], posts: tuple[TeamPost, ...]) -> tuple[bool, float | None, float | None]:
    """(is_local, centre latitude, centre longitude) by the rule in the module docstring."""
    homes = _located([(m.latitude, m.longitude) for m in members])
    if len(homes) >= 2 and 2 * len(homes) >= len(members):
        centre = homes.mean(axis=0)
        if (haversine_km(homes[:, 0], homes[:, 1], centre[0], centre[1]) <= LOCAL_RADIUS_KM).all():
            return True, float(centre[0]), float(centre[1])
    local_posts = _located([(p.latitude, p.longitude) for p in posts if p.is_local])
    if posts and len(local_posts) and len(local_posts) >= LOCAL_POST_SHARE * len(posts):
        centre = local_posts.mean(axis=0)
        return True, float(centre[0]), float(centre[1])
    return False, None, None


def read_team(url: str, project_id: int) -> Team:
    """The team of a project from marts.teams, its members' profiles from marts.user_features and their posts from
    marts.post_features (newest first)."""
    with connect(url) as conn:
        row = conn.execute(
            "select title, member_ids, member_roles from marts.teams where project_id = %s::bigint", (project_id,)
        ).fetchone()
        if row is None:
            raise TeamNotFound(f"project {project_id} is not in marts.teams (no such project, or dbt hasn't run)")
        title, member_ids, roles = row
        profiles = {
            user_id: rest
            for user_id, *rest in conn.execute(
                "select user_id, username, passions, project_titles, latitude, longitude"
                " from marts.user_features where user_id = any(%s)",
                (member_ids,),
            )
        }
        post_rows = conn.execute(
            "select post_id, user_id, coalesce(title, ''), coalesce(description, ''), is_local, latitude, longitude"
            " from marts.post_features where user_id = any(%s) order by created_at desc, post_id desc",
            (member_ids,),
        ).fetchall()
    members = []
    for user_id, role in zip(member_ids, roles, strict=True):
        username, passions, project_titles, latitude, longitude = profiles.get(user_id, (None, [], [], None, None))
        members.append(
            Member(
                user_id=user_id,
                role=role,
                username=username,
                passions=tuple(normalized_passions(passions)),
                project_titles=tuple(t for t in project_titles or [] if t),
                latitude=latitude,
                longitude=longitude,
            )
        )
    posts = tuple(TeamPost(*post) for post in post_rows)
    is_local, latitude, longitude = locality(tuple(members), posts)
    return Team(project_id, title, tuple(members), posts, is_local, latitude, longitude)


def active_teams(url: str, count: int) -> list[tuple[int, int, int]]:
    """The `count` most active teams as (project_id, recent, total), most active first. A team's activity is the
    interactions its members made plus those their posts received: `recent` counts those of the
    ACTIVITY_WINDOW_DAYS before the newest interaction (the data's clock, not the wall clock, so replayed data
    works the same), `total` all of them, which breaks ties (then the lower project id)."""
    with connect(url) as conn:
        rows = conn.execute(
            "with since as ("
            "  select max(occurred_at) - make_interval(days => %(days)s) as at from marts.interactions),"
            " touched as (select i.user_id, p.user_id as author_id, i.occurred_at >= since.at as recent"
            "  from marts.interactions i join marts.post_features p using (post_id), since),"
            " by_user as (select user_id, count(*) filter (where recent) as recent, count(*) as total from ("
            "  select user_id, recent from touched union all select author_id, recent from touched) as both_sides"
            "  group by user_id),"
            " member as (select t.project_id, m.user_id from marts.teams t, unnest(t.member_ids) as m(user_id))"
            " select member.project_id, coalesce(sum(by_user.recent), 0)::bigint as recent,"
            "  coalesce(sum(by_user.total), 0)::bigint as total"
            " from member left join by_user using (user_id)"
            " group by member.project_id order by recent desc, total desc, member.project_id limit %(count)s",
            {"days": ACTIVITY_WINDOW_DAYS, "count": count},
        ).fetchall()
    return [(project_id, recent, total) for project_id, recent, total in rows]
