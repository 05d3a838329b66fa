"""generate(config) -> SyntheticDataset: Teamu-shaped app tables and Mixpanel events with known ground truth.

Pure and deterministic: every draw comes from numpy Generators spawned from config.seed, one per stage (so a
change to one stage leaves the draws of the others alone), and nothing reads the clock or the environment.
The engagement model is documented in teamu_assets.synthetic.truth.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from teamu_assets.contract import POST_VIEWED, RECOMMENDATION_CLICKED, RECOMMENDATION_SHOWN
from teamu_assets.synthetic import text
from teamu_assets.synthetic.config import SyntheticConfig
from teamu_assets.synthetic.truth import SECONDS_PER_DAY, GroundTruth, PostPool, post_log_weights
from teamu_assets.synthetic.vocabulary import CITIES, TOPICS

TIMESTAMP_DTYPE = "datetime64[us, UTC]"
# The raw data contract (docs/DATA_CONTRACT.md): columns of each Supabase table, in order, with pandas dtypes.
CONTRACT_COLUMNS: dict[str, dict[str, str]] = {
    "users": {
        "user_id": "int64",
        "username": "str",
        "bio": "str",
        "passions": "object",
        "latitude": "float64",
        "longitude": "float64",
        "created_at": TIMESTAMP_DTYPE,
        "updated_at": TIMESTAMP_DTYPE,
    },
    "projects": {"project_id": "int64", "user_id": "int64", "title": "str", "created_at": TIMESTAMP_DTYPE},
    # A project's team: one row per (project, member), the owner included with role "owner".
    "project_members": {"project_id": "int64", "user_id": "int64", "role": "str", "joined_at": TIMESTAMP_DTYPE},
    "posts": {
        "post_id": "int64",
        "user_id": "int64",
        "title": "str",
        "description": "str",
        "is_local": "bool",
        "latitude": "float64",
        "longitude": "float64",
        "created_at": TIMESTAMP_DTYPE,
        "updated_at": TIMESTAMP_DTYPE,
    },
    "comments": {
        "comment_id": "int64",
        "post_id": "int64",
        "user_id": "int64",
        "body": "str",
        "created_at": TIMESTAMP_DTYPE,
    },
    "votes": {
        "vote_id": "int64",
        "post_id": "int64",
        "user_id": "int64",
        "value": "int16",
        "created_at": TIMESTAMP_DTYPE,
    },
}
# Post ids live in another range than user ids, so a join on the wrong id finds nothing instead of nonsense.
POST_ID_OFFSET = 1_000_000
PREVIOUS_MODEL_VERSION = "v0-popularity"
# The previous model ranked non-local posts by their tracked views over this many days before the day shown.
POPULARITY_WINDOW_DAYS = 7
# Users live around a city centre with this spread per axis: two users of a city are surely < 50 km apart.
CITY_SPREAD_KM = 8.0
POST_SPREAD_KM = 1.0
KM_PER_DEGREE = 111.0
# Users who signed up before the period: up to this many days earlier.
EARLY_SIGNUP_DAYS = 120
EARLY_SIGNUP_SHARE = 0.7
MAX_PASSIONS = 5
MEAN_EXTRA_PASSIONS = 1.5
MEAN_PROJECTS = 1.2
# Members besides the owner: Poisson with this mean, at most MAX_EXTRA_MEMBERS; SAME_CITY_MEMBER_SHARE of them
# are drawn from the owner's city (so some teams are local), all by their affinity for the project's topic.
MEAN_EXTRA_MEMBERS = 1.5
MAX_EXTRA_MEMBERS = 6
SAME_CITY_MEMBER_SHARE = 0.6
# Dirichlet concentration of a user's latent tastes: small, so most users lean to one or two.
TASTE_CONCENTRATION = 0.3
# With active_days > 0, an author who had stopped being active by a post's time is drawn again, this many times
# at most (the rare post still without an active author keeps one who had signed up).
AUTHOR_REDRAWS = 50
# A long thread's comment count is log-uniform in this range; its comments come within THREAD_SPAN_DAYS of the
# commenter's view.
LONG_THREAD_COMMENTS = (200, 3000)
THREAD_SPAN_DAYS = 3
# Oddities written when config.bad_fraction > 0, each counted in SyntheticDataset.quality_issues.
OUT_OF_RANGE_LATITUDE = 123.4
OUT_OF_RANGE_LONGITUDE = 200.5


@dataclass(frozen=True, eq=False)
class SyntheticDataset:
    config: SyntheticConfig
    users: pd.DataFrame
    projects: pd.DataFrame
    project_members: pd.DataFrame
    posts: pd.DataFrame
    comments: pd.DataFrame
    votes: pd.DataFrame
    # Mixpanel raw export events, in time order.
    events: list[dict]
    truth: GroundTruth
    # Data-quality oddities put into the tables, by "table.kind" (empty when config.bad_fraction == 0).
    quality_issues: dict[str, int] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The Supabase tables by name, parents before children."""
        return {name: getattr(self, name) for name in CONTRACT_COLUMNS}


@dataclass(frozen=True, eq=False)
class _Users:
    ids: np.ndarray
    city: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    passions: list[list[str]]
    affinity: np.ndarray
    created: np.ndarray
    updated: np.ndarray
    active_from: np.ndarray
    active_until: np.ndarray
    activity: np.ndarray
    is_cold: np.ndarray


@dataclass(frozen=True, eq=False)
class _Posts:
    ids: np.ndarray
    author: np.ndarray  # user index
    topic: np.ndarray
    is_local: np.ndarray
    city: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    quality: np.ndarray
    appeal: np.ndarray
    taste_appeal: np.ndarray  # (posts, tastes)
    created: np.ndarray
    updated: np.ndarray


@dataclass(frozen=True, eq=False)
class _Views:
    user: np.ndarray  # user index
    post: np.ndarray  # post index
    time: np.ndarray
    relative_affinity: np.ndarray  # affinity of the user for the post's topic, 1 = indifferent
    duration_ms: np.ndarray
    tracked: np.ndarray  # False for the views Mixpanel never received


@dataclass(frozen=True, eq=False)
class _FollowUps:
    """Votes or comments: each follows one view, a little later."""

    view: np.ndarray  # index into _Views
    time: np.ndarray


def generate(config: SyntheticConfig) -> SyntheticDataset:
    """The app tables (CONTRACT_COLUMNS), the Mixpanel events and the ground truth of one synthetic world;
    the same config gives byte-identical output (see checksums)."""
    # Stages added later come last: spawn(n) gives the same first children whatever n is.
    (
        user_rng,
        post_rng,
        view_rng,
        vote_rng,
        comment_rng,
        event_rng,
        text_rng,
        oddity_rng,
        taste_rng,
        appeal_rng,
        thread_rng,
        member_rng,
    ) = np.random.default_rng(config.seed).spawn(12)
    start, cutoff, end = _period(config)
    tau_seconds = config.recency_half_life_days * SECONDS_PER_DAY / np.log(2)

    users = _simulate_users(config, user_rng)
    user_taste = taste_rng.dirichlet(np.full(config.latent_tastes, TASTE_CONCENTRATION), config.users)
    posts = _simulate_posts(config, post_rng, appeal_rng, users)
    pool = PostPool(
        topic=posts.topic,
        city=posts.city,
        is_local=posts.is_local,
        created=posts.created,
        log_weight=post_log_weights(
            posts.quality, posts.appeal, posts.taste_appeal, posts.created, end, tau_seconds, config.quality_scale
        ),
        n_topics=config.topics,
        n_cities=config.cities,
        origin=start,
        end=end,
    )
    views = _simulate_views(config, view_rng, taste_rng, users, user_taste, posts, pool, end)
    logit_affinity = np.log(views.relative_affinity)
    quality = posts.quality[views.post]

    # Users close to the topic, on better posts, vote and comment more; downvotes come from the opposite.
    vote_probability = _sigmoid(config.vote_bias + 0.8 * logit_affinity + 0.7 * quality)
    vote_delay, comment_delay = (5, 600), (30, 1800)
    votes = _follow_views(vote_rng, views, vote_probability, delay_seconds=vote_delay, end=end, once=True)
    upvote_probability = _sigmoid(1.5 + quality + 0.5 * logit_affinity)[votes.view]
    vote_values = np.where(vote_rng.random(len(votes.view)) < upvote_probability, 1, -1).astype(np.int16)
    comment_probability = _sigmoid(config.comment_bias + 0.6 * logit_affinity + 0.4 * quality)
    comments = _with_long_threads(
        _follow_views(comment_rng, views, comment_probability, delay_seconds=comment_delay, end=end),
        _long_threads(config, thread_rng, views, end),
        views,
    )

    users_frame = _users_frame(users, text_rng)
    projects_frame, project_owner, project_topic = _projects_frame(users, text_rng, end)
    posts_frame = _posts_frame(posts, users, text_rng)
    comment_topics = posts.topic[views.post[comments.view]]
    comment_bodies = text.comment_bodies(comment_topics, _draws(text_rng, len(comment_topics)))
    dataset = SyntheticDataset(
        config=config,
        users=users_frame,
        projects=projects_frame,
        project_members=_project_members_frame(projects_frame, project_owner, project_topic, users, member_rng, end),
        posts=posts_frame,
        comments=_follow_up_frame("comment_id", views, posts, users, comments, "body", comment_bodies),
        votes=_follow_up_frame("vote_id", views, posts, users, votes, "value", vote_values),
        events=_mixpanel_events(config, event_rng, users, posts, views, start),
        truth=GroundTruth(
            user_ids=users.ids,
            post_ids=posts.ids,
            topic_names=np.array([topic.name for topic in TOPICS[: config.topics]]),
            affinity=users.affinity,
            user_taste=user_taste,
            post_topic=posts.topic,
            post_quality=posts.quality,
            post_appeal=posts.appeal,
            post_taste_appeal=posts.taste_appeal,
            post_user_ids=users.ids[posts.author],
            post_is_local=posts.is_local,
            post_city=posts.city,
            post_created=posts.created,
            user_city=users.city,
            user_activity=users.activity,
            user_active_from=users.active_from,
            user_active_until=users.active_until,
            start=start,
            cutoff=cutoff,
            end=end,
            recency_tau_seconds=float(tau_seconds),
            quality_scale=config.quality_scale,
            local_boost=config.local_boost,
        ),
    )
    if config.bad_fraction > 0:
        return _with_quality_issues(dataset, oddity_rng)
    return dataset


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


def _categorical(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One draw per row of a (rows, k) matrix of probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    draws = rng.random((len(probabilities), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(axis=1), probabilities.shape[1] - 1)


def _draws(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.random((rows, text.DRAWS_PER_TEXT))


def _near(
    rng: np.random.Generator, latitude: np.ndarray, longitude: np.ndarray, spread_km: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points scattered around the given ones by spread_km per axis."""
    km_per_degree_longitude = KM_PER_DEGREE * np.cos(np.radians(latitude))
    return (
        latitude + rng.normal(0.0, spread_km / KM_PER_DEGREE, len(latitude)),
        longitude + rng.normal(0.0, 1.0, len(longitude)) * spread_km / km_per_degree_longitude,
    )


def _timestamps(epoch_seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(epoch_seconds, unit="s", utc=True)).astype(TIMESTAMP_DTYPE)


def _period(config: SyntheticConfig) -> tuple[int, int, int]:
    """Start, cutoff and end of the period in epoch seconds."""
    start, cutoff, end = (int(moment.timestamp()) for moment in (config.start, config.cutoff, config.end))
    return start, cutoff, end


def _simulate_users(config: SyntheticConfig, rng: np.random.Generator) -> _Users:
    start, cutoff, end = _period(config)
    n_users, n_topics = config.users, config.topics
    cities = CITIES[: config.cities]
    # A few big cities and a tail of smaller ones.
    city_share = 1.0 / np.arange(1, len(cities) + 1) ** 0.7
    city = rng.choice(len(cities), n_users, p=city_share / city_share.sum())
    latitude, longitude = _near(
        rng,
        np.array([c.latitude for c in cities])[city],
        np.array([c.longitude for c in cities])[city],
        CITY_SPREAD_KM,
    )

    # Declared passions: a few, concentrated on the topics a sparse interest mix favours.
    interest = rng.dirichlet(np.full(n_topics, 0.25), n_users)
    passion_count = 1 + np.minimum(rng.poisson(MEAN_EXTRA_PASSIONS, n_users), MAX_PASSIONS - 1)
    passion_interest = np.repeat(interest, MAX_PASSIONS, axis=0)
    passion_topic = _categorical(rng, passion_interest).reshape(n_users, MAX_PASSIONS)
    passion_slot = rng.random((n_users, MAX_PASSIONS))
    passions: list[list[str]] = []
    declared = np.zeros((n_users, n_topics))
    for user, (count, topics, slots) in enumerate(
        zip(passion_count.tolist(), passion_topic.tolist(), passion_slot.tolist(), strict=True)
    ):
        names: list[str] = []
        for topic, slot in zip(topics[:count], slots[:count], strict=True):
            options = TOPICS[topic].passions
            name = options[int(slot * len(options))]
            if name not in names:
                names.append(name)
                declared[user, topic] += 1
        passions.append(names)
    # The true affinity follows the passions, with noise and interests nobody wrote down: a model that only
    # reads profiles leaves signal on the table that the interaction history holds.
    hidden_interest = rng.dirichlet(np.full(n_topics, 0.5), n_users)
    raw_affinity = declared * rng.lognormal(0.0, 0.3, (n_users, n_topics)) + 0.6 * hidden_interest + 0.03
    affinity = raw_affinity / raw_affinity.sum(axis=1, keepdims=True)

    is_cold = np.zeros(n_users, dtype=bool)
    n_cold = config.cold_start_users
    is_cold[rng.choice(n_users, n_cold, replace=False)] = True
    if config.active_days > 0:
        # Users come and go: sign-ups spread from one mean lifetime before the period to the cutoff.
        created = rng.integers(start - round(config.active_days * SECONDS_PER_DAY), cutoff, n_users)
    else:
        signed_up_early = rng.random(n_users) < EARLY_SIGNUP_SHARE
        created = np.where(
            signed_up_early,
            start - rng.integers(1, EARLY_SIGNUP_DAYS * SECONDS_PER_DAY, n_users),
            rng.integers(start, cutoff, n_users),
        )
    created[is_cold] = rng.integers(cutoff, end, n_cold)
    active_from = np.maximum(created, start)
    edited = rng.random(n_users) < 0.5
    edit_delay = (rng.random(n_users) * (end - active_from)).astype(np.int64)
    updated = np.where(edited, active_from + edit_delay, created)

    # Mean-preserving log-normal: most users view a little, a few a lot.
    sigma = 0.9
    activity = config.views_per_user_day * rng.lognormal(-0.5 * sigma**2, sigma, n_users)
    activity[is_cold & (rng.random(n_users) < config.cold_start_inactive_fraction)] = 0.0
    active_until = np.full(n_users, end, dtype=np.int64)
    if config.active_days > 0:
        lifetime = rng.exponential(config.active_days * SECONDS_PER_DAY, n_users).astype(np.int64)
        # Someone who left before the period was active for none of it.
        active_until = np.clip(created + lifetime, active_from, end)
    return _Users(
        ids=np.arange(1, n_users + 1, dtype=np.int64),
        city=city.astype(np.int64),
        latitude=latitude,
        longitude=longitude,
        passions=passions,
        affinity=affinity,
        created=created.astype(np.int64),
        updated=updated.astype(np.int64),
        active_from=active_from.astype(np.int64),
        active_until=active_until.astype(np.int64),
        activity=activity,
        is_cold=is_cold,
    )


def _simulate_posts(
    config: SyntheticConfig, rng: np.random.Generator, appeal_rng: np.random.Generator, users: _Users
) -> _Posts:
    start, cutoff, end = _period(config)
    n_posts = config.posts
    created = rng.integers(start, cutoff, n_posts)
    n_new = round(n_posts * config.new_post_fraction)
    created[:n_new] = rng.integers(cutoff, end, n_new)
    # Cold-start users only have a profile; everyone else may write, some far more than others.
    writers = np.flatnonzero(~users.is_cold)
    writers = writers[np.argsort(users.created[writers], kind="stable")]
    created = np.sort(np.maximum(created, users.created[writers[0]]))
    writer_weight = np.cumsum(rng.lognormal(0.0, 1.0, len(writers)))
    # Each post's author is drawn among the writers who had signed up by then.
    eligible = np.searchsorted(users.created[writers], created, side="right")
    targets = rng.random(n_posts) * writer_weight[eligible - 1]
    author = writers[np.minimum(np.searchsorted(writer_weight, targets, side="right"), eligible - 1)]
    if config.active_days > 0:
        # Writers post while they are active.
        for _ in range(AUTHOR_REDRAWS):
            gone = np.flatnonzero(users.active_until[author] <= created)
            if len(gone) == 0:
                break
            targets = rng.random(len(gone)) * writer_weight[eligible[gone] - 1]
            redrawn = np.minimum(np.searchsorted(writer_weight, targets, side="right"), eligible[gone] - 1)
            author[gone] = writers[redrawn]
    topic_mix = users.affinity[author]
    if config.prolific_authors > 0:
        # The earliest writers (a brand, a catalogue, a bot) write prolific_share of the posts, each post by one
        # of them who had signed up by then (the first always had), on topics like everyone's.
        prolific = rng.choice(n_posts, round(config.prolific_share * n_posts), replace=False)
        accounts = writers[: config.prolific_authors]
        signed_up = np.searchsorted(users.created[accounts], created[prolific], side="right")
        author[prolific] = accounts[(rng.random(len(prolific)) * signed_up).astype(np.int64)]
        topic_mix[prolific] = users.affinity.mean(axis=0)

    topic = _categorical(rng, topic_mix)
    is_local = rng.random(n_posts) < config.local_post_fraction
    latitude, longitude = _near(rng, users.latitude[author], users.longitude[author], POST_SPREAD_KM)
    quality = rng.normal(0.0, 1.0, n_posts)
    edited = rng.random(n_posts) < 0.4
    edit_delay = (rng.random(n_posts) * np.minimum(3 * SECONDS_PER_DAY, end - 1 - created)).astype(np.int64)
    return _Posts(
        ids=POST_ID_OFFSET + np.arange(1, n_posts + 1, dtype=np.int64),
        author=author,
        topic=topic.astype(np.int64),
        is_local=is_local,
        city=users.city[author],
        latitude=latitude,
        longitude=longitude,
        quality=quality,
        # Drawn apart from everything else about the post: no content feature explains them.
        appeal=appeal_rng.normal(0.0, config.popularity_tail, n_posts),
        taste_appeal=appeal_rng.normal(0.0, config.taste_scale, (n_posts, config.latent_tastes)),
        created=created.astype(np.int64),
        updated=(created + np.where(edited, edit_delay, 0)).astype(np.int64),
    )


def _simulate_views(
    config: SyntheticConfig,
    rng: np.random.Generator,
    taste_rng: np.random.Generator,
    users: _Users,
    user_taste: np.ndarray,
    posts: _Posts,
    pool: PostPool,
    end: int,
) -> _Views:
    active_seconds = users.active_until - users.active_from
    counts = rng.poisson(users.activity * active_seconds / SECONDS_PER_DAY)
    user = np.repeat(np.arange(config.users), counts)
    time = users.active_from[user] + (rng.random(len(user)) * active_seconds[user]).astype(np.int64)
    topic = _categorical(rng, users.affinity[user])
    taste = _categorical(taste_rng, user_taste[user])

    # Topic and taste first, then a post of that topic: non-local ones, or local ones of the viewer's city
    # (boosted), weighted for the taste.
    global_group = topic
    local_group = pool.local_group(topic, users.city[user])
    log_global = pool.log_mass(global_group, taste, time)
    log_local = np.log(config.local_boost) + pool.log_mass(local_group, taste, time)
    with np.errstate(divide="ignore"):
        use_local = np.log(rng.random(len(user))) + np.logaddexp(log_global, log_local) < log_local
    post = pool.sample(np.where(use_local, local_group, global_group), taste, time, rng.random(len(user)))
    duration_noise = rng.normal(0.0, 0.7, len(user))
    tracked = rng.random(len(user)) >= config.untracked_view_fraction

    # No post of the topic yet, or the viewer's own post: that view does not happen.
    kept = np.flatnonzero(post >= 0)
    kept = kept[posts.author[post[kept]] != user[kept]]
    kept = kept[np.lexsort((user[kept], time[kept]))]
    user, post, time = user[kept], post[kept], time[kept]
    relative_affinity = users.affinity[user, posts.topic[post]] * config.topics
    duration_ms = np.exp(
        np.log(15_000) + 0.35 * np.log(relative_affinity) + 0.3 * posts.quality[post] + duration_noise[kept]
    )
    return _Views(
        user=user,
        post=post,
        time=time,
        relative_affinity=relative_affinity,
        duration_ms=np.clip(duration_ms, 500, 600_000).astype(np.int64),
        tracked=tracked[kept],
    )


def _follow_views(
    rng: np.random.Generator,
    views: _Views,
    probability: np.ndarray,
    *,
    delay_seconds: tuple[int, int],
    end: int,
    once: bool = False,
) -> _FollowUps:
    """Votes or comments made shortly after some views, before the period ends, in time order."""
    happens = rng.random(len(views.time)) < probability
    time = views.time + rng.integers(*delay_seconds, len(views.time))
    view = np.flatnonzero(happens & (time < end))
    if once:  # at most one per (user, post)
        # Views are in time order, so the first of each (user, post) is the earliest.
        pair = views.user[view] * (views.post.max(initial=0) + 1) + views.post[view]
        _, first = np.unique(pair, return_index=True)
        view = view[np.sort(first)]
    view = view[np.lexsort((views.user[view], time[view]))]
    return _FollowUps(view=view, time=time[view])


def _long_threads(config: SyntheticConfig, rng: np.random.Generator, views: _Views, end: int) -> _FollowUps:
    """The comments of the long threads: long_thread_share of the posts (drawn among the viewed ones) get
    LONG_THREAD_COMMENTS each, every one by a viewer of the post (chosen among its views) within
    THREAD_SPAN_DAYS after that view and before the end."""
    viewed_posts, first, viewed = np.unique(np.sort(views.post), return_index=True, return_counts=True)
    n_threads = min(round(config.long_thread_share * config.posts), len(viewed_posts))
    threads = rng.choice(len(viewed_posts), n_threads, replace=False)
    low, high = LONG_THREAD_COMMENTS
    lengths = np.exp(rng.uniform(np.log(low), np.log(high), n_threads)).astype(np.int64)
    thread = np.repeat(threads, lengths)
    by_post = np.argsort(views.post, kind="stable")
    view = by_post[first[thread] + (rng.random(len(thread)) * viewed[thread]).astype(np.int64)]
    room = np.minimum(THREAD_SPAN_DAYS * SECONDS_PER_DAY, end - 1 - views.time[view])
    return _FollowUps(view=view, time=views.time[view] + (rng.random(len(view)) * room).astype(np.int64))


def _with_long_threads(comments: _FollowUps, threads: _FollowUps, views: _Views) -> _FollowUps:
    view = np.concatenate([comments.view, threads.view])
    time = np.concatenate([comments.time, threads.time])
    order = np.lexsort((views.user[view], time))
    return _FollowUps(view=view[order], time=time[order])


def _mixpanel_events(
    config: SyntheticConfig,
    rng: np.random.Generator,
    users: _Users,
    posts: _Posts,
    views: _Views,
    start: int,
) -> list[dict]:
    """Tracked views, and before some of them the previous model's feed (clicked when the viewed post is in).

    Clicks are views the user was going to make anyway, so they follow the true affinity and the observed CTR
    of the popularity model is what such a model really earns."""
    tracked = np.flatnonzero(views.tracked)
    day = (views.time - start) // SECONDS_PER_DAY
    feed_offsets, feed_posts = _popularity_feeds(config, views, posts, tracked, day, start)
    has_feed = np.diff(feed_offsets) > 0
    feed = tracked[(rng.random(len(tracked)) < config.recommendation_feed_fraction) & has_feed[day[tracked]]]
    n_posts = len(posts.ids)
    feed_day = np.repeat(np.arange(config.days), np.diff(feed_offsets))
    click = feed[np.isin(day[feed] * n_posts + views.post[feed], feed_day * n_posts + feed_posts)]

    # One row per event: (time, kind rank so a feed precedes its click precedes the view, view index).
    view_kind, shown_kind, click_kind = 2, 0, 1
    times = np.concatenate(
        [
            views.time[tracked],
            np.maximum(views.time[feed] - 2, start),
            np.maximum(views.time[click] - 1, start),
        ]
    )
    kinds = np.concatenate(
        [np.full(len(tracked), view_kind), np.full(len(feed), shown_kind), np.full(len(click), click_kind)]
    )
    sources = np.concatenate([tracked, feed, click])
    order = np.lexsort((sources, kinds, times))
    insert_ids = _hex_ids(rng, len(order))
    request_ids = dict(zip(feed.tolist(), _hex_ids(rng, len(feed)), strict=True))

    distinct_ids = users.ids.astype(str)
    post_ids = posts.ids.tolist()
    shown_by_day = [
        posts.ids[feed_posts[begin:stop]].tolist()
        for begin, stop in zip(feed_offsets[:-1].tolist(), feed_offsets[1:].tolist(), strict=True)
    ]
    events: list[dict] = []
    for insert_id, time, kind, view in zip(
        insert_ids, times[order].tolist(), kinds[order].tolist(), sources[order].tolist(), strict=True
    ):
        properties: dict = {
            "time": time,
            "distinct_id": str(distinct_ids[views.user[view]]),
            "$insert_id": insert_id,
        }
        if kind == view_kind:
            properties.update(post_id=post_ids[views.post[view]], duration_ms=int(views.duration_ms[view]))
            events.append({"event": POST_VIEWED, "properties": properties})
        elif kind == shown_kind:
            properties.update(post_ids=shown_by_day[day[view]], request_id=request_ids[view])
            properties["model_version"] = PREVIOUS_MODEL_VERSION
            events.append({"event": RECOMMENDATION_SHOWN, "properties": properties})
        else:
            properties.update(post_id=post_ids[views.post[view]], request_id=request_ids[view])
            events.append({"event": RECOMMENDATION_CLICKED, "properties": properties})
    return events


def _popularity_feeds(
    config: SyntheticConfig, views: _Views, posts: _Posts, tracked: np.ndarray, day: np.ndarray, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """What "v0-popularity" showed each day: the non-local posts with the most tracked views over the previous
    days (newest first among equals), as post indices: day d's feed is posts[offsets[d]:offsets[d + 1]].

    Sparse, so memory follows the views, not days x posts: the candidates of a day are the posts viewed in its
    window and the newest posts created before it (which fill a feed when few posts were viewed)."""
    n_days, n_posts, shown = config.days, len(posts.ids), config.recommendations_shown
    counted = tracked[~posts.is_local[views.post[tracked]]]
    daily, daily_views = np.unique(day[counted] * n_posts + views.post[counted], return_counts=True)
    # A day's views count on each of the POPULARITY_WINDOW_DAYS days after it.
    later = (daily[:, None] + np.arange(1, POPULARITY_WINDOW_DAYS + 1)[None, :] * n_posts).ravel()
    later_views = np.repeat(daily_views, POPULARITY_WINDOW_DAYS)
    within = later < n_days * n_posts
    non_local = np.flatnonzero(~posts.is_local)  # in creation order, as post indices are
    day_starts = start + np.arange(n_days) * SECONDS_PER_DAY
    created_before = np.searchsorted(posts.created[non_local], day_starts, side="left")
    newest = created_before[:, None] - np.arange(1, shown + 1)[None, :]
    fill_day = np.broadcast_to(np.arange(n_days)[:, None], newest.shape)[newest >= 0]
    fill = fill_day * n_posts + non_local[newest[newest >= 0]]
    keys, inverse = np.unique(np.concatenate([later[within], fill]), return_inverse=True)
    trailing = np.bincount(inverse, weights=np.concatenate([later_views[within], np.zeros(len(fill))]))
    key_day, key_post = keys // n_posts, keys % n_posts
    order = np.lexsort((-(trailing + key_post / n_posts), key_day))
    key_day, key_post = key_day[order], key_post[order]
    first_of_day = np.searchsorted(key_day, key_day, side="left")
    top = np.arange(len(key_day)) - first_of_day < shown
    offsets = np.concatenate([[0], np.cumsum(np.bincount(key_day[top], minlength=n_days))])
    return offsets, key_post[top]


def _hex_ids(rng: np.random.Generator, count: int) -> list[str]:
    raw = rng.bytes(16 * count)
    return [raw[offset : offset + 16].hex() for offset in range(0, 16 * count, 16)]


def _users_frame(users: _Users, rng: np.random.Generator) -> pd.DataFrame:
    top_topic = np.argmax(users.affinity, axis=1)
    return pd.DataFrame(
        {
            "user_id": users.ids,
            "username": text.usernames(users.ids, rng.random(len(users.ids))),
            "bio": text.bios(users.passions, top_topic, _draws(rng, len(users.ids))),
            "passions": pd.Series(users.passions, dtype=object),
            "latitude": users.latitude,
            "longitude": users.longitude,
            "created_at": _timestamps(users.created),
            "updated_at": _timestamps(users.updated),
        }
    )


def _projects_frame(users: _Users, rng: np.random.Generator, end: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The projects table, and each row's owner (user index) and topic, for drawing its team."""
    owner = np.repeat(np.arange(len(users.ids)), rng.poisson(MEAN_PROJECTS, len(users.ids)))
    topic = _categorical(rng, users.affinity[owner])
    created = users.created[owner] + (rng.random(len(owner)) * (end - users.created[owner])).astype(np.int64)
    titles = text.project_titles(topic, _draws(rng, len(owner)))
    order = np.argsort(created, kind="stable")
    frame = pd.DataFrame(
        {
            "project_id": np.arange(1, len(owner) + 1, dtype=np.int64),
            "user_id": users.ids[owner][order],
            "title": pd.Series(titles, dtype="str").iloc[order].reset_index(drop=True),
            "created_at": _timestamps(created[order]),
        }
    )
    return frame, owner[order], topic[order]


def _project_members_frame(
    projects: pd.DataFrame,
    owner: np.ndarray,
    topic: np.ndarray,
    users: _Users,
    rng: np.random.Generator,
    end: int,
) -> pd.DataFrame:
    """Each project's team: the owner (role "owner", joined when the project was created) and up to
    MAX_EXTRA_MEMBERS members drawn by their affinity for the project's topic, SAME_CITY_MEMBER_SHARE of them
    from the owner's city; a member joins after both the project and their sign-up. Draws go by (city, topic)
    group through cumulative weights, so the cost grows with users x groups, never users x projects."""
    n_projects = len(owner)
    extra = np.minimum(rng.poisson(MEAN_EXTRA_MEMBERS, n_projects), MAX_EXTRA_MEMBERS)
    slot_project = np.repeat(np.arange(n_projects), extra)
    same_city = rng.random(len(slot_project)) < SAME_CITY_MEMBER_SHARE
    slot_city = np.where(same_city, users.city[owner[slot_project]], -1)
    slot_topic = topic[slot_project]
    draws = rng.random(len(slot_project))
    member = np.empty(len(slot_project), dtype=np.int64)
    for city in np.unique(slot_city).tolist():
        pool = np.arange(len(users.ids)) if city < 0 else np.flatnonzero(users.city == city)
        for topic_index in np.unique(slot_topic[slot_city == city]).tolist():
            slots = np.flatnonzero((slot_city == city) & (slot_topic == topic_index))
            cumulative = np.cumsum(users.affinity[pool, topic_index])
            picked = np.searchsorted(cumulative, draws[slots] * cumulative[-1], side="right")
            member[slots] = pool[np.minimum(picked, len(pool) - 1)]
    # A draw of the owner or of someone already in the team adds nobody.
    keep = member != owner[slot_project]
    slot_project, member = slot_project[keep], member[keep]
    _, first = np.unique(slot_project * len(users.ids) + member, return_index=True)
    first = np.sort(first)
    slot_project, member = slot_project[first], member[first]
    created = (projects["created_at"].astype("int64") // 1_000_000).to_numpy()
    start = np.maximum(created[slot_project], users.created[member])
    joined = start + (rng.random(len(member)) * np.maximum(end - 1 - start, 0)).astype(np.int64)
    frame = pd.DataFrame(
        {
            "project_id": np.concatenate(
                [projects["project_id"].to_numpy(), projects["project_id"].to_numpy()[slot_project]]
            ),
            "user_id": np.concatenate([users.ids[owner], users.ids[member]]),
            "role": pd.Series(["owner"] * n_projects + ["member"] * len(member), dtype="str"),
            "joined_at": _timestamps(np.concatenate([created, joined])),
        }
    )
    return frame.sort_values(["project_id", "joined_at", "user_id"], kind="stable").reset_index(drop=True)


def _posts_frame(posts: _Posts, users: _Users, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "post_id": posts.ids,
            "user_id": users.ids[posts.author],
            "title": text.post_titles(posts.topic, posts.is_local, posts.city, _draws(rng, len(posts.ids))),
            "description": text.post_descriptions(posts.topic, _draws(rng, len(posts.ids))),
            "is_local": posts.is_local,
            "latitude": posts.latitude,
            "longitude": posts.longitude,
            "created_at": _timestamps(posts.created),
            "updated_at": _timestamps(posts.updated),
        }
    )


def _follow_up_frame(
    id_column: str,
    views: _Views,
    posts: _Posts,
    users: _Users,
    follow_ups: _FollowUps,
    value_column: str,
    values: np.ndarray | list[str],
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            id_column: np.arange(1, len(follow_ups.view) + 1, dtype=np.int64),
            "post_id": posts.ids[views.post[follow_ups.view]],
            "user_id": users.ids[views.user[follow_ups.view]],
            value_column: values,
            "created_at": _timestamps(follow_ups.time),
        }
    )


def _with_quality_issues(dataset: SyntheticDataset, rng: np.random.Generator) -> SyntheticDataset:
    """The oddities a real app database has, in a known number of rows each: empty texts, NULL passions,
    coordinates off the globe. The ground truth keeps the real values."""
    users, posts = dataset.users.copy(), dataset.posts.copy()
    fraction = dataset.config.bad_fraction

    def pick(frame: pd.DataFrame) -> np.ndarray:
        count = min(len(frame), max(1, round(fraction * len(frame))))
        return np.sort(rng.choice(len(frame), count, replace=False))

    issues: dict[str, int] = {}
    rows = pick(users)
    users.loc[rows, "bio"] = ""
    issues["users.empty_bio"] = len(rows)
    rows = pick(users)
    users["passions"] = users["passions"].astype(object)
    for row in rows.tolist():
        users.at[row, "passions"] = None
    issues["users.null_passions"] = len(rows)
    rows = pick(users)
    users.loc[rows, "latitude"] = OUT_OF_RANGE_LATITUDE
    issues["users.out_of_range_coordinates"] = len(rows)
    rows = pick(posts)
    posts.loc[rows, "title"] = ""
    issues["posts.empty_title"] = len(rows)
    rows = pick(posts)
    posts.loc[rows, "longitude"] = OUT_OF_RANGE_LONGITUDE
    issues["posts.out_of_range_coordinates"] = len(rows)
    return SyntheticDataset(
        config=dataset.config,
        users=users,
        projects=dataset.projects,
        project_members=dataset.project_members,
        posts=posts,
        comments=dataset.comments,
        votes=dataset.votes,
        events=dataset.events,
        truth=dataset.truth,
        quality_issues=issues,
    )


def checksums(dataset: SyntheticDataset) -> dict[str, str]:
    """sha256 of every table (dtypes and values), the events and the ground truth: same seed, same sums."""
    sums = {}
    for name, frame in dataset.tables.items():
        digest = hashlib.sha256(json.dumps({c: str(t) for c, t in frame.dtypes.items()}).encode())
        digest.update(frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z").encode())
        sums[name] = digest.hexdigest()
    digest = hashlib.sha256()
    for event in dataset.events:
        digest.update(json.dumps(event, sort_keys=True).encode())
        digest.update(b"\n")
    sums["events"] = digest.hexdigest()
    digest = hashlib.sha256()
    for name, value in sorted(vars(dataset.truth).items()):
        array = np.ascontiguousarray(value)
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    sums["truth"] = digest.hexdigest()
    return sums
