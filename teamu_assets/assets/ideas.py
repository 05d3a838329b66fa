"""Post ideas for the most active teams (teamu_assets.ideas), written to ml.post_ideas.

Thin glue: the core chooses the context, generates and ranks; TensorFlow is imported inside the asset's body.
Not part of the full_refresh job: with TEAMU_LLM_URL set it calls an outside service, so it runs when asked
(the UI, or `teamu ideas --team ID --save` for one team).
"""

from dagster import AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult, MetadataValue, asset

from teamu_assets.ideas import DEFAULT_IDEAS, DEFAULT_TEAMS, TeamIdeas
from teamu_assets.ideas.blend import RankerBlend
from teamu_assets.ideas.context import DEFAULT_AUDIENCE_SIZE
from teamu_assets.resources import LanguageModel, TeamuDatabase

POST_IDEAS = AssetKey(["ml", "post_ideas"])
# Ideas per team shown in the asset's metadata (all of them are in ml.post_ideas).
SHOWN_PER_TEAM = 10


class PostIdeasConfig(Config):
    teams: int = DEFAULT_TEAMS
    """How many teams: the most active ones (interactions made and received by their members lately)."""
    project_ids: list[int] = []
    """These teams instead of the most active ones."""
    ideas_per_team: int = DEFAULT_IDEAS
    audience_size: int = DEFAULT_AUDIENCE_SIZE
    """Users in a team's audience: those whose embeddings sit nearest the team's (local ones first)."""


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def ideas_markdown(result: TeamIdeas, blend: RankerBlend, shown: int = SHOWN_PER_TEAM) -> str:
    """One team's ranked ideas as a markdown table, under a heading that says who and for whom, and what scored
    them."""
    team, audience = result.context.team, result.context.audience
    where = f"local team, {int(audience.is_local.sum())} of its audience nearby" if team.is_local else "not local"
    lines = [
        f"### {_cell(team.label)}: {len(team.members)} members, {where}, audience {len(audience.user_ids)}",
        f"written by {result.generator}"
        + (f" (fallback: {_cell(result.fallback_reason)})" if result.fallback_reason else ""),
        f"scored by {blend.label}; the team's past engagement: {result.team_prior:.2f} engaged users per post",
        "",
        "| # | expected engagements | idea | because |",
        "|---|---|---|---|",
    ]
    for ranked in result.ranked[:shown]:
        reasons = "; ".join(_cell(str(reason)) for reason in ranked.reasons) or "no successful post nearby"
        idea = f"**{_cell(ranked.idea.title)}**: {_cell(ranked.idea.description)}"
        lines.append(f"| {ranked.rank} | {ranked.score:.3f} | {idea} | {reasons} |")
    return "\n".join(lines)


@asset(
    key=POST_IDEAS,
    group_name="ideas",
    kinds={"python", "postgres"},
    deps=[AssetKey(["marts", "teams"]), AssetKey(["ml", "post_embeddings"]), AssetKey(["ml", "user_embeddings"])],
)
def post_ideas(
    context: AssetExecutionContext, config: PostIdeasConfig, database: TeamuDatabase, language_model: LanguageModel
) -> MaterializeResult:
    """Ranked post ideas for the most active teams (or the teams named) in ml.post_ideas, one transaction: the
    served embeddings choose each team's audience and context, the language model (offline generator when none
    is configured) writes, the promoted model's candidate tower ranks by the engagement it predicts. A failing
    language model doesn't fail the asset: that team gets the offline ideas and the metadata says why. The score
    blends the tower's prediction with the team's past engagement as validated for the model (ranker metadata:
    the weight, why, and the validation's figures)."""
    from teamu_assets.ideas import NoTeamIdeas, promoted_ranker, refresh_post_ideas

    url = database.url()
    ranker = promoted_ranker(url)
    try:
        refresh = refresh_post_ideas(url, ranker, language_model.settings(), context.log, **config.model_dump())
    except NoTeamIdeas as exc:
        raise Failure("no team got ideas", metadata={"skipped": MetadataValue.json(exc.skipped)}) from None
    ranked_ideas = "\n\n".join(ideas_markdown(result, ranker.blend) for result in refresh.results)
    return MaterializeResult(
        metadata={
            "teams": len(refresh.results),
            "ideas": refresh.ideas,
            "model_version": ranker.model_version,
            "ranker": ranker.blend.reason,
            "ranker_validation": MetadataValue.json(ranker.blend.to_dict()),
            "generator": refresh.generator,
            "generated_at": str(refresh.generated_at),
            "fallbacks": MetadataValue.json(refresh.fallbacks),
            "skipped": MetadataValue.json(refresh.skipped),
            "dropped_repeats": refresh.dropped_repeats,
            "ranked_ideas": MetadataValue.md(ranked_ideas or "(no teams)"),
            "contexts": MetadataValue.json(refresh.contexts),
        }
    )
