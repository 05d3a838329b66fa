"""AI-driven post ideas for teams: the served embeddings choose the context (the team's audience, what did well
with it, what the team cares about and already posted), a language model (or the offline generator) writes
ideas, and the post tower ranks them by the engagement it predicts from the audience.

No Dagster here, and no TensorFlow at import: only pipeline.promoted_ranker loads the model.
"""

from teamu_assets.ideas.context import ContextError, IdeaContext, build_context
from teamu_assets.ideas.generate import (
    ChatCompletionsGenerator,
    Idea,
    IdeaGenerationError,
    IdeaGenerator,
    OfflineGenerator,
    generator_from_settings,
)
from teamu_assets.ideas.pipeline import (
    DEFAULT_IDEAS,
    DEFAULT_TEAMS,
    NoTeamIdeas,
    PostIdeasRefresh,
    Ranker,
    TeamIdeas,
    promoted_ranker,
    refresh_post_ideas,
    suggest_ideas,
)
from teamu_assets.ideas.rank import RankedIdea
from teamu_assets.ideas.store import read_post_ideas, write_post_ideas
from teamu_assets.ideas.team import Team, TeamNotFound, active_teams, read_team

__all__ = [
    "DEFAULT_IDEAS",
    "DEFAULT_TEAMS",
    "ChatCompletionsGenerator",
    "ContextError",
    "Idea",
    "IdeaContext",
    "IdeaGenerationError",
    "IdeaGenerator",
    "NoTeamIdeas",
    "OfflineGenerator",
    "PostIdeasRefresh",
    "RankedIdea",
    "Ranker",
    "Team",
    "TeamIdeas",
    "TeamNotFound",
    "active_teams",
    "build_context",
    "generator_from_settings",
    "promoted_ranker",
    "read_post_ideas",
    "read_team",
    "refresh_post_ideas",
    "suggest_ideas",
    "write_post_ideas",
]
