"""One team's ideas end to end: team -> context -> drafts -> repeats dropped -> ranked by the post tower, blended
with the team's past engagement as validated for the model (blend.py); refresh_post_ideas does it for several
teams and writes them to ml.post_ideas, as the ml/post_ideas asset runs it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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
    generator_from_settings,
)
from teamu_assets.ideas.rank import PostEmbedder, RankedIdea, live_log_normalizers, rank_ideas
from teamu_assets.ideas.store import write_post_ideas
from teamu_assets.ideas.team import TeamNotFound, active_teams, read_team
from teamu_assets.settings import LanguageModelSettings

DEFAULT_IDEAS = 10
# Teams a refresh writes ideas for when none is named: the most active ones.
DEFAULT_TEAMS = 5


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


class NoTeamIdeas(RuntimeError):
    """Not one of the teams asked for got ideas (each unknown or without a context): nothing was written."""

    def __init__(self, skipped: dict[str, str]) -> None:
        super().__init__("no team got ideas")
        self.skipped = skipped  # project id -> why


@dataclass(frozen=True)
class PostIdeasRefresh:
    """What refresh_post_ideas wrote: each team's ideas, the teams skipped and why, and when."""

    generator: str  # the configured generator (a team's TeamIdeas.generator says which one wrote its ideas)
    results: list[TeamIdeas]
    skipped: dict[str, str]  # project id -> why it got no ideas
    generated_at: datetime | None  # None when no team was asked for

    @property
    def ideas(self) -> int:
        return sum(len(result.ranked) for result in self.results)

    @property
    def dropped_repeats(self) -> int:
        return sum(len(result.dropped) for result in self.results)

    @property
    def fallbacks(self) -> dict[str, str]:
        """project id -> why the offline generator's ideas were used, for the teams where they were."""
        return {str(r.context.team.project_id): r.fallback_reason for r in self.results if r.fallback_reason}

    @property
    def contexts(self) -> dict[str, dict[str, Any]]:
        return {str(result.context.team.project_id): result.context.summary() for result in self.results}


def refresh_post_ideas(
    url: str,
    ranker: Ranker,
    language_model: LanguageModelSettings | None,
    log: logging.Logger,
    *,
    project_ids: Sequence[int] = (),
    teams: int = DEFAULT_TEAMS,
    ideas_per_team: int = DEFAULT_IDEAS,
    audience_size: int = DEFAULT_AUDIENCE_SIZE,
) -> PostIdeasRefresh:
    """suggest_ideas for the teams named (none: the `teams` most active ones) with the ranker given (usually
    promoted_ranker's), written to ml.post_ideas in one transaction; the keywords are the asset's PostIdeasConfig.
    A team that is unknown or has no context is skipped with a warning, so the others still get theirs;
    NoTeamIdeas when every team asked for was skipped, before anything is written."""
    # A team named twice gets its ideas once (ml.post_ideas holds one list per team).
    project_ids = list(dict.fromkeys(project_ids)) or [project_id for project_id, *_ in active_teams(url, teams)]
    generator = generator_from_settings(language_model)
    results: list[TeamIdeas] = []
    skipped: dict[str, str] = {}
    for project_id in project_ids:
        try:
            result = suggest_ideas(
                url, project_id, generator=generator, ranker=ranker, count=ideas_per_team, audience_size=audience_size
            )
        except (TeamNotFound, ContextError) as exc:
            skipped[str(project_id)] = str(exc)
            log.warning(f"project {project_id}: {exc}")
            continue
        if result.fallback_reason:
            log.warning(f"project {project_id}: offline ideas instead: {result.fallback_reason}")
        results.append(result)
    if project_ids and not results:
        raise NoTeamIdeas(skipped)
    generated_at = write_post_ideas(
        url, [(r.context.team.project_id, r.ranked, r.generator) for r in results], ranker.model_version
    )
    return PostIdeasRefresh(generator.name, results, skipped, generated_at)
