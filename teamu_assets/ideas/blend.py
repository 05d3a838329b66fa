"""Which score to trust for ideas: the post tower's predicted engagement, the team's past engagement, or a blend,
chosen on the training period of the model that ranks.

On real data the tower's cold-start reading of a new post is not always the better predictor: on one Stack
Exchange site the asker's record predicted a new question's engagement where the tower did not
(docs/BENCHMARKS.md, post ideas). So the ideas' score is a geometric blend

    score = tower ** w * (prior_scale * (1 + prior)) ** (1 - w)

of the tower's expected engagements (rank.predicted_engagement) and the author's prior (engaged users per post
over the author's earlier posts; a team's: over its members' posts), w = 1 the tower alone, w = 0 the prior
alone. prior_scale puts the prior in the tower's units (the two agree in geometric mean over the validation
posts), so the score still reads as expected engagements whatever w is.

w is chosen on a validation slice of the training period, never the evaluation period: the posts created in its
last VALIDATION_FRACTION, each scored as a cold start at the slice's start (rank.as_new_posts; users and live
posts as of then) by the model the gate judged (trained before the cutoff), against the distinct users who
engaged with it within the window after its creation, all before the cutoff. The weight of highest ROC-AUC for
"above-median engagement" wins; ties go to the larger tower weight. That model was trained on these posts'
engagements (only its evaluation period is held out), so the slice flatters the tower if anything: a prior
chosen over it has beaten a tower that had seen the answers.

Within one team every idea has the same prior: the blend sets the level of the team's scores; their order is
always the tower's (rank.rank_ideas breaks the prior-only ties by it). An author without earlier posts has a
prior of 0 engaged users, as in the benchmark's author baseline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from teamu_assets.db import features, registry
from teamu_assets.db.connection import connect
from teamu_assets.evaluation.metrics import roc_auc, spearman
from teamu_assets.ideas.context import engagement_rates
from teamu_assets.ideas.rank import as_new_posts, log_normalizers, predicted_engagement
from teamu_assets.ideas.team import Team

# The validation slice's share of the training period: a quarter of it is as long as the evaluation period the
# default holdout (the last 20 % of the data's span) leaves, so both slices hold about as many new posts.
VALIDATION_FRACTION = 0.25
# Engagement is counted this long after a post's creation (bench_post_ideas' default for dated data).
DEFAULT_WINDOW = pd.Timedelta(days=3)
# Fewer validation posts than this (or all of them on one side of the median) choose nothing: the tower alone.
MIN_VALIDATION_POSTS = 20
TOWER_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
# The validated blend is kept beside the model it was chosen for: one computation per model, not per request.
BLEND_FILE = "ideas_ranker.json"
# log() of a tower score that underflowed to 0.
_TINY = 1e-300


@dataclass(frozen=True)
class RankerBlend:
    tower_weight: float  # w: 1 = the tower alone, 0 = the author prior alone
    prior_scale: float  # the prior's factor into the tower's units
    reason: str  # why this weight, in words
    validation: dict[str, Any] = field(default_factory=dict)  # the slice and each weight's figures

    def score(self, tower: np.ndarray, prior: np.ndarray | float) -> np.ndarray:
        """The blended score of posts with these tower scores (expected engagements) and author priors."""
        tower = np.asarray(tower, np.float64)
        if self.tower_weight == 1.0:
            return tower  # the tower's own figures, unrounded by the log and exp
        log_prior = np.log(self.prior_scale * (1.0 + np.asarray(prior, np.float64)))
        w = self.tower_weight
        return np.exp(w * np.log(np.maximum(tower, _TINY)) + (1.0 - w) * log_prior)

    @property
    def label(self) -> str:
        if self.tower_weight == 1.0:
            return "the post tower alone"
        if self.tower_weight == 0.0:
            return "the team's past engagement alone (ideas ordered by the post tower)"
        return f"the post tower (weight {self.tower_weight:g}) blended with the team's past engagement"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TOWER_ONLY = RankerBlend(1.0, 1.0, "no validation: the post tower alone")


@dataclass(frozen=True)
class ColdStart:
    """Posts new in a period, each scored as a cold start at its start, with what they really drew."""

    # post_id, user_id, created_at, engagement, tower, tower_alike (every user's share counted alike), mean_score,
    # prior, prior_total
    posts: pd.DataFrame
    users: int  # the audience: users signed up before the start
    live_posts: int  # posts live at the start (the softmax's other posts)


def author_priors(before: pd.DataFrame, live: pd.DataFrame, authors: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(engaged users per post, engaged users in all) over each author's posts in `live`, from the interactions
    `before` (distinct user and post pairs); 0 for an author without posts."""
    per_author_posts = live.groupby("user_id").size()
    pairs = before.merge(live[["post_id", "user_id"]].rename(columns={"user_id": "author"}), on="post_id")
    engaged = pairs.drop_duplicates(["post_id", "user_id"]).groupby("author").size()
    total = authors.map(engaged).fillna(0).to_numpy(np.float64)
    return total / authors.map(per_author_posts).fillna(1).to_numpy(np.float64), total


# The post mart's comments and view time as they read at a moment (features.read_post_activity_before): the mart
# gathers them without their times, and the live posts' later comments would tell the tower what came after.
PostActivityAt = Callable[[pd.Timestamp], pd.DataFrame]


def post_activity_at(url: str) -> PostActivityAt:
    return lambda moment: features.read_post_activity_before(url, moment)


def cold_start(
    model_dir: Path,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    window: pd.Timedelta,
    activity_at: PostActivityAt | None = None,
    projects: pd.DataFrame | None = None,
) -> ColdStart:
    """The posts created from `start` on and at least `window` before `end`, taken as the ideas are: embedded as
    new posts at `start` by the model at model_dir, scored against every user signed up before `start` (the
    query tower as of then) with each user's softmax over the posts live then (their counts then, and with
    `activity_at` their comments and view time then; their profiles' post titles, and with `projects`
    (features.read_projects) project titles, as of then), times the user's engagement rate then (tower;
    tower_alike without the rates). Real engagement: the distinct users in `interactions` who
    engaged within the window after creation (the caller keeps only the interactions it may see). Imports
    TensorFlow."""
    from teamu_assets.model.dataset import post_features_as_of, profile_as_of, user_features_as_of
    from teamu_assets.model.train import embed_posts, embed_users

    new = posts.loc[(posts["created_at"] >= start) & (posts["created_at"] + window <= end)].sort_values("post_id")
    engaged = interactions.merge(new[["post_id", "created_at"]], on="post_id")
    in_window = engaged.loc[engaged["occurred_at"] <= engaged["created_at"] + window]
    engagement = new["post_id"].map(in_window.groupby("post_id")["user_id"].nunique()).fillna(0).to_numpy(float)
    before = interactions.loc[interactions["occurred_at"] < start]
    live = posts.loc[posts["created_at"] < start]
    known = users.loc[users["created_at"] < start]
    frame = new[["post_id", "user_id", "created_at"]].reset_index(drop=True).assign(engagement=engagement)
    if new.empty or known.empty or live.empty:
        empty = {column: [] for column in ("tower", "tower_alike", "mean_score", "prior", "prior_total")}
        return ColdStart(frame.assign(**empty), len(known), len(live))
    user_ids, user_vectors = embed_users(
        model_dir,
        user_features_as_of(interactions, profile_as_of(known, start, posts=posts, projects=projects), start),
    )
    counts = before.groupby(["post_id", "kind"]).size().unstack(fill_value=0).reset_index()
    for kind in ("view", "upvote"):
        if kind not in counts:
            counts[kind] = 0
    activity = None if activity_at is None else activity_at(start)
    _, live_vectors = embed_posts(model_dir, post_features_as_of(counts, live, as_of=start, activity=activity))
    _, new_vectors = embed_posts(model_dir, as_new_posts(new, start), as_of=start)
    normalizers = log_normalizers(user_vectors, live_vectors)
    prior, prior_total = author_priors(before, live, new["user_id"])
    rates = engagement_rates(before, user_ids, start)
    return ColdStart(
        frame.assign(
            tower=predicted_engagement(user_vectors, new_vectors, normalizers, rates),
            tower_alike=predicted_engagement(user_vectors, new_vectors, normalizers),
            mean_score=(user_vectors.astype(np.float64) @ new_vectors.astype(np.float64).T).mean(axis=0),
            prior=prior,
            prior_total=prior_total,
        ),
        len(known),
        len(live),
    )


def choose_blend(posts: pd.DataFrame, *, slice_label: str = "the validation slice") -> RankerBlend:
    """The tower weight of highest ROC-AUC for above-median engagement over `posts` (columns engagement, tower,
    prior), ties to the larger weight; the tower alone when the posts are too few or all on one side of the
    median. validation records every weight's AUC and Spearman correlation."""
    engagement = posts["engagement"].to_numpy(np.float64)
    high = engagement > np.median(engagement) if len(engagement) else np.zeros(0, bool)
    validation: dict[str, Any] = {"slice": slice_label, "posts": len(posts), "positives": int(high.sum())}
    if len(posts) < MIN_VALIDATION_POSTS or high.all() or not high.any():
        reason = (
            f"{len(posts)} posts in {slice_label}, {int(high.sum())} above the median engagement: too few to "
            "choose on, the post tower alone"
        )
        return RankerBlend(1.0, 1.0, reason, validation)
    tower = posts["tower"].to_numpy(np.float64)
    prior = posts["prior"].to_numpy(np.float64)
    scale = float(np.exp(np.log(np.maximum(tower, _TINY)).mean() - np.log1p(prior).mean()))
    figures = {}
    for weight in TOWER_WEIGHTS:
        scores = RankerBlend(weight, scale, "").score(tower, prior)
        figures[weight] = {"auc": roc_auc(high, scores), "spearman": spearman(scores, engagement)}
    best = max(TOWER_WEIGHTS, key=lambda w: (figures[w]["auc"], w))
    # JSON has no NaN (a Spearman correlation of tied scores): None stands for it.
    validation["by_tower_weight"] = {
        f"{w:g}": {name: None if np.isnan(value) else value for name, value in figures[w].items()}
        for w in TOWER_WEIGHTS
    }
    reason = (
        f"ROC-AUC {figures[best]['auc']:.3f} for above-median engagement at tower weight {best:g} on the "
        f"{len(posts)} new posts of {slice_label} (tower alone {figures[1.0]['auc']:.3f}, team's past engagement "
        f"alone {figures[0.0]['auc']:.3f})"
    )
    return RankerBlend(best, scale, reason, validation)


def validation_slice(interactions: pd.DataFrame, cutoff: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) of the validation slice: the last VALIDATION_FRACTION of the time from the first interaction
    to the cutoff."""
    first = interactions["occurred_at"].min()
    return cutoff - (cutoff - first) * VALIDATION_FRACTION, cutoff


def validate_on_training_period(
    model_dir: Path,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    cutoff: pd.Timestamp,
    window: pd.Timedelta = DEFAULT_WINDOW,
    activity_at: PostActivityAt | None = None,
    projects: pd.DataFrame | None = None,
) -> tuple[RankerBlend, ColdStart]:
    """The blend chosen for the model at model_dir (trained before `cutoff`) on the validation slice, from the
    interactions before the cutoff only, and the slice's posts it was chosen on (activity_at, projects: see
    cold_start). Imports TensorFlow."""
    seen = interactions.loc[interactions["occurred_at"] < cutoff]
    start, end = validation_slice(seen, cutoff)
    validation = cold_start(model_dir, seen, users, posts, start, end, window, activity_at, projects)
    label = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({window / pd.Timedelta(days=1):g}-day window)"
    return choose_blend(validation.posts, slice_label=label), validation


def validated_blend(url: str, model_dir: Path, window: pd.Timedelta = DEFAULT_WINDOW) -> RankerBlend:
    """The blend for the registered model at model_dir: chosen with the model its gate judged (the refit served
    beside it has seen every period) on its dataset's training period, and kept in model_dir/BLEND_FILE. Imports
    TensorFlow the first time."""
    path = model_dir / BLEND_FILE
    if path.exists():
        return RankerBlend(**json.loads(path.read_text()))
    from teamu_assets.model.dataset import read_manifest
    from teamu_assets.model.pipeline import evaluated_model_dir

    manifest = read_manifest(Path(registry.model_version(url, model_dir.name).params["dataset"]))
    blend, _ = validate_on_training_period(
        evaluated_model_dir(model_dir),
        features.read_interactions(url),
        features.read_user_features(url),
        features.read_post_features(url),
        pd.Timestamp(manifest.cutoff),
        window,
        post_activity_at(url),
        features.read_projects(url),
    )
    path.write_text(json.dumps(blend.to_dict(), indent=2))
    return blend


def team_prior(url: str, team: Team) -> float:
    """The team's past engagement: distinct users who engaged with its members' posts, per post (0 without
    posts), from marts.interactions."""
    if not team.posts:
        return 0.0
    post_ids = [post.post_id for post in team.posts]
    with connect(url) as conn:
        engaged = conn.execute(
            "select count(*) from (select distinct user_id, post_id from marts.interactions"
            " where post_id = any(%s)) as pairs",
            (post_ids,),
        ).fetchone()[0]
    return engaged / len(post_ids)
