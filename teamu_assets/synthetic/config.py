"""The knobs of the synthetic Teamu world. The defaults are the demo size: the whole pipeline (dbt, training,
evaluation) runs on them in a few minutes on two cores."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from teamu_assets.synthetic.vocabulary import CITIES, TOPICS


class SyntheticConfigError(ValueError):
    """A SyntheticConfig (a `teamu seed` / `teamu demo` flag) out of its range; the message names the field."""


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2000
    posts: int = 1500
    days: int = 60
    seed: int = 7
    # The period ends at midnight UTC starting this day, so reruns never depend on the wall clock.
    end_date: dt.date = dt.date(2026, 6, 1)
    topics: int = 12
    cities: int = 8
    # The last part of the period, where cold-start users sign up and new posts appear: a temporal split there
    # holds users and posts the training data has never seen.
    holdout_fraction: float = 0.2
    cold_start_user_fraction: float = 0.08
    # Of the cold-start users, the share that never does anything (profile only).
    cold_start_inactive_fraction: float = 0.4
    new_post_fraction: float = 0.2
    local_post_fraction: float = 0.25
    # Mean views a user makes per active day; the per-user rate is log-normal around it (a few heavy users).
    views_per_user_day: float = 0.55
    recency_half_life_days: float = 7.0
    # Spread of the latent post quality (log scale): how much popularity matters next to the topic affinity.
    # Quality also shows in votes and view time, so a model can read it off a post's counts.
    quality_scale: float = 0.8
    # Item appeal no content feature explains (truth.py has the engagement model). popularity_tail is the spread
    # (log scale) of a per-post appeal that only shows in how often the post is viewed: log-normal, so a few posts
    # collect a large share of the views, the more the larger it is (0: none).
    popularity_tail: float = 1.0
    # Users have hidden tastes (a mix over latent_tastes, unrelated to topics and profiles) and every post a
    # hidden appeal to each taste, spread taste_scale on the log scale (0: none): which posts of a topic a user
    # views depends on who they are beyond what they wrote, and only their history (and the post's other
    # viewers) tells.
    latent_tastes: int = 8
    taste_scale: float = 1.0
    # Prolific authors: this many accounts (the earliest writers, e.g. a brand or a bot) write prolific_share of
    # all posts, on topics like everyone's (0, 0.0: no such accounts).
    prolific_authors: int = 0
    prolific_share: float = 0.0
    # Share of posts that gather a long comment thread (LONG_THREAD_COMMENTS in generator.py: hundreds to
    # thousands of comments, written by the post's viewers).
    long_thread_share: float = 0.0
    # Mean days a user stays active (exponential). 0: everyone stays until the end, and most users signed up
    # shortly before the period (the demo). Above 0, as multi-year worlds need: users sign up at one rate from
    # that many days before the period to its end, and each is active for a while only; those who sign up after
    # the cutoff are the cold-start users (see cold_start_users).
    active_days: float = 0.0
    # How much more a nearby user favours a local post over a non-local one of the same quality and age.
    local_boost: float = 3.0
    # Logit offsets of voting and commenting after a view (user of average affinity, post of average quality).
    vote_bias: float = -2.8
    comment_bias: float = -3.9
    # Share of views that followed a "Recommendation Shown" of the previous popularity model.
    recommendation_feed_fraction: float = 0.3
    recommendations_shown: int = 10
    # Views Mixpanel never received (ad blockers, offline clients): votes and comments without a tracked view.
    untracked_view_fraction: float = 0.03
    # Share of bad input. Here: data-quality oddities in the Supabase tables (empty bios and titles, NULL
    # passions, impossible coordinates); pass it to write_mixpanel_files(bad_fraction=...) for bad lines.
    bad_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("users", "posts", "days", "topics", "cities", "recommendations_shown", "latent_tastes"):
            if getattr(self, name) < 1:
                raise SyntheticConfigError(f"SyntheticConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.topics > len(TOPICS):
            raise SyntheticConfigError(f"SyntheticConfig.topics is at most {len(TOPICS)}, got {self.topics}")
        if self.cities > len(CITIES):
            raise SyntheticConfigError(f"SyntheticConfig.cities is at most {len(CITIES)}, got {self.cities}")
        for name in (
            "holdout_fraction",
            "cold_start_user_fraction",
            "cold_start_inactive_fraction",
            "new_post_fraction",
            "local_post_fraction",
            "recommendation_feed_fraction",
            "untracked_view_fraction",
            "bad_fraction",
            "prolific_share",
            "long_thread_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SyntheticConfigError(f"SyntheticConfig.{name} must be within [0, 1], got {value}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise SyntheticConfigError("SyntheticConfig.holdout_fraction must be strictly between 0 and 1")
        if not self.start < self.cutoff < self.end:
            raise SyntheticConfigError("SyntheticConfig.holdout_fraction leaves no time before or after the cutoff")
        if self.cold_start_user_fraction >= 1.0:
            raise SyntheticConfigError("SyntheticConfig.cold_start_user_fraction must leave some users to write posts")
        for name in ("views_per_user_day", "recency_half_life_days", "local_boost"):
            if getattr(self, name) <= 0:
                raise SyntheticConfigError(f"SyntheticConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("quality_scale", "popularity_tail", "taste_scale", "active_days", "prolific_authors"):
            if getattr(self, name) < 0:
                raise SyntheticConfigError(f"SyntheticConfig.{name} must not be negative, got {getattr(self, name)}")
        if (self.prolific_authors > 0) != (self.prolific_share > 0):
            raise SyntheticConfigError(
                "SyntheticConfig.prolific_authors and prolific_share go together: both 0 or both set"
            )
        writers = self.users - self.cold_start_users
        if self.prolific_authors > writers:
            raise SyntheticConfigError(f"SyntheticConfig.prolific_authors is at most the {writers} users who write")

    @property
    def cold_start_users(self) -> int:
        """Users who sign up after the cutoff: cold_start_user_fraction of them, or with active_days > 0 the
        holdout's share of the sign-up span, so users keep coming at one rate through the holdout."""
        share = self.cold_start_user_fraction
        if self.active_days > 0:
            share = (self.end - self.cutoff) / (self.end - self.start + dt.timedelta(days=self.active_days))
        return min(round(self.users * share), self.users - 1)

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.combine(self.end_date, dt.time(), tzinfo=dt.UTC)

    @property
    def start(self) -> dt.datetime:
        return self.end - dt.timedelta(days=self.days)

    @property
    def cutoff(self) -> dt.datetime:
        """Where the holdout part of the period begins (to the second)."""
        return self.start + dt.timedelta(seconds=round(self.days * 86400 * (1 - self.holdout_fraction)))
