"""One team's ideas end to end: team -> context -> drafts -> repeats dropped -> ranked by the post tower, blended
with the team's past engagement as validated for the model (blend.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from teamu_assets.db import registry
from teamu_assets.ideas.blend import TOWER_ONLY, RankerBlend, team_prior, validated_blend
from teamu_assets.ideas.context import DEFAULT_AUDIENCE_SIZE, ContextError, IdeaContext, build_context
from teamu_assets.ideas.generate import (
    Idea,
    IdeaGenerationError,
    IdeaGenerator,
    OfflineGenerator,
    drop_repeats,
)
from teamu_assets.ideas.rank import PostEmbedder, RankedIdea, live_log_normalizers, rank_ideas
from teamu_assets.ideas.team import read_team

DEFAULT_IDEAS = 10


@dataclass(frozen=True)
class TeamIdeas:
    context: IdeaContext
    ranked: list[RankedIdea]
    generator: str  # what wrote the ranked ideas
    dropped: list[Idea] = field(default_factory=list)  # drafts that repeated a post or each other
    # Why the configured generator's drafts were not used (its error, or every draft a repeat); None when they were.
    fallback_reason: str | None = None
    team_prior: float = 0.0  # the team's past engagement the score blends in (blend.team_prior)


@dataclass(frozen=True)
class Ranker:
    """The promoted model's candidate tower, as a PostEmbedder, its version, and the blend validated for it."""

    model_version: str
    embed: PostEmbedder
    blend: RankerBlend = TOWER_ONLY


def promoted_ranker(url: str) -> Ranker:
    """The served model (the refit the embedding tables hold), with the blend validated for it (computed on the
    first call for a model, then read back). The tower alone when its training dataset is gone. Imports
    TensorFlow."""
    from teamu_assets.model.train import embed_posts

    promoted = registry.promoted_model(url)
    if promoted is None:
        raise ContextError("no model is promoted: there are no embeddings to rank ideas with (run `make demo`)")
    model_dir = Path(promoted.artifact_path)
    try:
        blend = validated_blend(url, model_dir)
    except FileNotFoundError as exc:
        blend = RankerBlend(1.0, 1.0, f"not validated ({exc}): the post tower alone")

    def embed(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
        return embed_posts(model_dir, frame, as_of=as_of)[1]

    return Ranker(promoted.model_version, embed, blend)


def suggest_ideas(
    url: str,
    project_id: int,
    *,
    generator: IdeaGenerator,
    ranker: Ranker,
    count: int = DEFAULT_IDEAS,
    audience_size: int = DEFAULT_AUDIENCE_SIZE,
) -> TeamIdeas:
    """The team's `count` best ideas. When the generator fails (IdeaGenerationError: a malformed or slow
    endpoint, after its retries) or writes only repeats, the offline generator's drafts are ranked instead and
    fallback_reason says why: a team always gets ideas."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    context = build_context(url, read_team(url, project_id), ranker.model_version, audience_size=audience_size)
    examples = [post.title for post in (*context.successful_posts, *context.local_trends)]
    existing = [*context.existing_titles, *examples]
    name, reason, dropped = generator.name, None, []
    try:
        kept, dropped = drop_repeats(generator.generate(context, count), existing)
        if not kept:
            reason = f"{generator.name} wrote only repeats of existing posts ({len(dropped)} drafts)"
    except IdeaGenerationError as exc:
        reason = str(exc)
    if reason is not None:
        offline = OfflineGenerator()
        kept, dropped_offline = drop_repeats(offline.generate(context, count), existing)
        name, dropped = offline.name, [*dropped, *dropped_offline]
    normalizers = live_log_normalizers(url, context.audience.user_ids)
    prior = team_prior(url, context.team)
    ranked = rank_ideas(kept, context, ranker.embed, normalizers, ranker.blend, prior)[:count]
    return TeamIdeas(
        context=context, ranked=ranked, generator=name, dropped=dropped, fallback_reason=reason, team_prior=prior
    )
