"""Post ideas without a database: team locality, the offline generator, repeats, the prompt, the chat-completions
client against a fake server on loopback (retries, clear errors, no secret sent or shown), and the ranking."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from teamu_assets.ideas.context import (
    Audience,
    ContextPost,
    IdeaContext,
    choose_audience,
    engagement_rates,
    team_direction,
)
from teamu_assets.ideas.generate import (
    MAX_RESPONSE_BYTES,
    ChatCompletionsGenerator,
    Idea,
    IdeaGenerationError,
    OfflineGenerator,
    build_prompt,
    drop_repeats,
    generator_from_settings,
    parse_ideas,
    repeats,
)
from teamu_assets.ideas.rank import idea_posts, log_normalizers, predicted_engagement, rank_ideas
from teamu_assets.ideas.team import Member, Team, TeamPost, locality
from teamu_assets.model.features import PostFeatureTable
from teamu_assets.settings import LanguageModelSettings, Settings
from tests.fakes.llm_server import Reply, fake_chat_completions

SECRET = "sk-test-5f1e0c9a7b"
BERLIN, PARIS = (52.52, 13.40), (48.85, 2.35)
AS_OF = pd.Timestamp("2026-06-01", tz="UTC")
DIM = 8  # 6 content dimensions + freshness + quality


def member(user_id: int, passions: tuple[str, ...], at: tuple[float, float] | None, role: str = "member") -> Member:
    lat, lng = at if at else (None, None)
    return Member(user_id, role, f"user{user_id}", passions, (f"project of {user_id}",), lat, lng)


def post(post_id: int, title: str, *, is_local: bool = False, at: tuple[float, float] | None = None) -> TeamPost:
    lat, lng = at if at else (None, None)
    return TeamPost(post_id, 1, title, f"about {title.lower()}", is_local, lat, lng)


def make_team(*, local: bool = False) -> Team:
    home = BERLIN if local else None
    members = (
        member(1, ("robotics", "coding"), home or BERLIN, role="owner"),
        member(2, ("robotics", "music"), home or PARIS),
        member(3, ("electronics",), home),
    )
    posts = (post(11, "Building a robot arm with a servo"), post(12, "Our sensor kit, part one"))
    is_local, lat, lng = locality(members, posts)
    return Team(7, "Robot lab", members, posts, is_local, lat, lng)


# The content of make_context's successful posts, embedded as new posts for the reasons (rank.successful_as_new):
# Drone racing along content dimension 0, Arduino along 1.
SUCCESSFUL_CONTENTS = {"Drone racing night": [1, 0, 0, 0, 0, 0], "Arduino for beginners": [0, 1, 0, 0, 0, 0]}


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def make_context(*, local: bool = False, audience: int = 5) -> IdeaContext:
    rng = np.random.default_rng(0)
    user_content = np.array([unit(rng.normal(size=DIM - 2)) for _ in range(audience)])
    user_vectors = np.hstack([user_content / 0.1, rng.normal(size=(audience, 1)), np.ones((audience, 1))])
    successful = (
        ContextPost(101, "Drone racing night", "fast drones and firmware", 300, 40, 12, 30.0, False, 0.8),
        ContextPost(102, "Arduino for beginners", "first arduino steps", 200, 25, 5, 20.0, False, 0.7),
    )
    return IdeaContext(
        team=make_team(local=local),
        as_of=AS_OF,
        model_version="tt-test",
        audience=Audience(
            user_ids=np.arange(100, 100 + audience, dtype=np.int64),
            affinity=np.linspace(5, 1, audience),
            is_local=np.zeros(audience, dtype=bool),
            vectors=user_vectors.astype(np.float32),
        ),
        passions=(("robotics", 2), ("coding", 1), ("electronics", 1), ("music", 1)),
        projects=("Robot lab", "project of 1"),
        successful_posts=successful,
    )


# --- team and audience ---------------------------------------------------------------------------------------------


def test_a_team_living_together_is_local_and_one_spread_over_cities_is_not() -> None:
    local, spread = make_team(local=True), make_team()
    assert local.is_local and local.latitude == pytest.approx(BERLIN[0]) and local.longitude == pytest.approx(BERLIN[1])
    assert not spread.is_local and spread.latitude is None
    # Mostly local posts make a team local whatever its members' homes.
    posts = tuple(post(20 + i, f"Meetup {i}", is_local=True, at=PARIS) for i in range(3))
    is_local, lat, _ = locality(spread.members, posts)
    assert is_local and lat == pytest.approx(PARIS[0])
    # One located member is not a local team.
    assert locality((member(1, (), BERLIN), member(2, (), None)), ())[0] is False


def test_the_audience_is_the_nearest_users_with_local_ones_first_for_a_local_team() -> None:
    ids = np.array([5, 6, 7, 8, 9], dtype=np.int64)
    affinity = np.array([9.0, 8.0, 7.0, 7.0, 1.0])
    lat = np.array([PARIS[0], PARIS[0], BERLIN[0], BERLIN[0], BERLIN[0]])
    lng = np.array([PARIS[1], PARIS[1], BERLIN[1], BERLIN[1], BERLIN[1]])
    chosen, local = choose_audience(ids, affinity, lat, lng, make_team(local=True), 4)
    assert ids[chosen].tolist() == [7, 8, 9, 5] and local.tolist() == [True, True, True, False]
    chosen, local = choose_audience(ids, affinity, lat, lng, make_team(), 3)
    assert ids[chosen].tolist() == [5, 6, 7] and not local.any()


def test_the_team_direction_weighs_members_and_posts_equally() -> None:
    # Four content dimensions, then the score terms (user: appetite, 1, new-user prior; post: freshness,
    # quality, log views / 10), which the direction leaves out.
    members = np.array([[10.0, 0, 0, 0, 0.5, 1, 4], [10.0, 0, 0, 0, -0.5, 1, 0]])
    posts = np.array([[0, 1.0, 0, 0, 3, 1, 0.6]] * 5)
    direction = team_direction(members, posts)
    assert direction == pytest.approx(np.array([1, 1, 0, 0]) / np.sqrt(2))
    assert team_direction(members, np.zeros((0, 7))) == pytest.approx(np.array([1, 0, 0, 0]))


# --- drafts and repeats --------------------------------------------------------------------------------------------


def test_repeats_are_dropped_by_normalised_title_and_by_word_overlap() -> None:
    assert repeats("Building a robot ARM with a servo!", "building a robot arm with a servo")
    assert repeats("Our sensor kit part one", "Our sensor kit, part one.")
    assert not repeats("Our sensor kit, part two", "Our sensor kit, part one")
    # Apostrophes and hyphens inside words, Unicode forms and scripts other than Latin.
    assert repeats("Beginner's guide to Rust", "Beginners guide to rust")
    assert repeats("E-mail tips for makers", "Email tips for makers")
    assert repeats("Our 3D printer", "our 3-D printer")
    assert repeats("Привет мир", "привет, мир!") and not repeats("Привет мир", "Пока мир")
    assert repeats("ＣＡＦÉ meetup", "café meetup")
    ideas = [
        Idea("Building a robot arm with a servo", "again"),
        Idea("Servo tuning night", "new"),
        Idea("servo tuning night", "a repeat of the idea before"),
        Idea("   ", "no title"),
    ]
    kept, dropped = drop_repeats(ideas, [p.title for p in make_team().posts])
    assert [idea.description for idea in kept] == ["new"]
    assert len(dropped) == 3


def test_the_offline_generator_recombines_the_context_deterministically() -> None:
    context = make_context()
    drafts = OfflineGenerator().generate(context, 4)
    assert drafts == OfflineGenerator().generate(context, 4)
    assert len(drafts) == 12
    text = " ".join(f"{d.title} {d.description}" for d in drafts).lower()
    for theme in ("robotics", "coding", "drone", "arduino"):
        assert theme in text
    assert all(d.title and d.description for d in drafts)
    kept, _ = drop_repeats(drafts, context.existing_titles)
    assert len(kept) >= 4
    local = OfflineGenerator().generate(make_context(local=True), 4)
    assert any("near" in d.title.lower() for d in local)


def test_offline_drafts_read_as_varied_sentences_pairing_the_team_with_its_audience() -> None:
    context = make_context()
    drafts = OfflineGenerator().generate(context, 4)
    team_themes = {"robotics", "coding", "electronics", "music", "robot", "lab", "project"}
    audience_themes = {"drone", "drones", "racing", "arduino", "beginners", "firmware", "steps"}
    for draft in drafts:
        assert draft.title[0].isupper() and not {"{", "}"} & set(draft.title + draft.description)
        text = set(re.findall(r"[a-z]+", f"{draft.title} {draft.description}".lower()))
        assert text & team_themes and text & audience_themes, draft
        # A description is sentences: an opening, a tie to the project or a liked post, a call to the reader.
        assert draft.description.count(". ") + draft.description.count("? ") >= 2 and draft.description[-1] in ".?!"
    # Varied: the titles' frames (themes blanked out) and the descriptions' openings differ from draft to draft.
    frames = {re.sub(r"\b(" + "|".join(team_themes | audience_themes) + r")\b", "_", d.title.lower()) for d in drafts}
    openings = {d.description.split(". ")[0] for d in drafts}
    assert len(frames) >= 8 and len(openings) >= 6
    # A pair of words its posts keep writing together stays a pair: never "deep" alone; a past tense is no theme.
    learning = tuple(
        ContextPost(103 + i, title, "a deep learning model finished, food and drones", 90, 9, 3, 10.0, False, 0.6)
        for i, title in enumerate(("Deep learning on a budget", "Our deep learning night"))
    )
    texts = [
        f"{d.title} {d.description}".lower()
        for d in OfflineGenerator().generate(replace(context, successful_posts=learning), 4)
    ]
    assert any("deep learning" in text for text in texts)
    assert not any(re.search(r"\bdeep\b(?! learning)", text) for text in texts)
    assert not any("finished" in text for text in texts)
    # Another team with the same context gets other wording, as deterministically.
    other = replace(context, team=replace(context.team, project_id=8))
    assert OfflineGenerator().generate(other, 4) != drafts
    assert OfflineGenerator().generate(other, 4) == OfflineGenerator().generate(other, 4)


def test_the_prompt_holds_the_chosen_context_and_nothing_else() -> None:
    context = make_context()
    prompt = build_prompt(context, 5)
    for expected in (
        "Robot lab",
        "robotics (2)",
        "project of 1",
        "Drone racing night (300, 40, 12)",
        "Arduino for beginners",
        "Building a robot arm with a servo",  # what the team already posted: do not repeat
        "Audience: 5 people",
        "Write 5 new post ideas",
    ):
        assert expected in prompt
    assert SECRET not in prompt


def test_ideas_are_parsed_from_json_in_a_fence_or_prose_and_refused_without() -> None:
    fenced = 'Sure!\n```json\n{"ideas": [{"title": "A", "description": "b"}, {"title": " "}]}\n```'
    assert parse_ideas(fenced) == [Idea("A", "b")]
    assert parse_ideas('[{"title": "T"}]') == [Idea("T", "")]
    for bad, reason in (("no json here", "no JSON"), ('{"ideas": [}', "malformed"), ('{"x": 1}', 'no "ideas"')):
        with pytest.raises(ValueError, match=reason):
            parse_ideas(bad)


# --- the chat-completions client against the fake server ----------------------------------------------------------

GOOD = [
    {"title": "Servo tuning night", "description": "Bring a servo."},
    {"title": "Firmware clinic", "description": ""},
]


def client(url: str, *, timeout: float = 5.0, key: str | None = SECRET) -> ChatCompletionsGenerator:
    settings = LanguageModelSettings(url=url, model="fake-model", api_key=key, timeout_seconds=timeout)
    return ChatCompletionsGenerator(settings, backoff_seconds=0.0)


def test_the_client_speaks_chat_completions_with_the_key_only_in_its_header() -> None:
    with fake_chat_completions(SECRET, [], Reply.ideas(GOOD)) as fake:
        ideas = client(fake.base_url).generate(make_context(), 2)
    assert ideas == [Idea(**GOOD[0]), Idea(**GOOD[1])]
    (request,) = fake.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = request["body"]
    assert body["model"] == "fake-model" and [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Drone racing night" in body["messages"][1]["content"]
    assert SECRET not in json.dumps(body)
    assert SECRET not in repr(client(fake.base_url)) and SECRET not in repr(Settings.from_env({"TEAMU_LLM_URL": "x"}))


def test_a_malformed_or_slow_answer_is_retried() -> None:
    script = [
        Reply.raw(b"<html>502 bad gateway</html>"),
        Reply.answer("I would rather not answer in JSON."),
        Reply.ideas(GOOD, delay_seconds=2.0),  # past the client's timeout
        Reply.error(503, "overloaded"),
    ]
    with fake_chat_completions(SECRET, script, Reply.ideas(GOOD)) as fake:
        generator = ChatCompletionsGenerator(
            LanguageModelSettings(fake.base_url, "fake-model", SECRET, 0.5), attempts=5, backoff_seconds=0.0
        )
        assert generator.generate(make_context(), 2) == [Idea(**GOOD[0]), Idea(**GOOD[1])]
    assert len(fake.requests) == 5


def test_a_body_cut_short_or_nested_too_deep_is_retried_not_a_crash() -> None:
    # The second answer cut short is a whole completion of other ideas, but fewer bytes than it promised.
    other = Reply.ideas([{"title": "Not this one", "description": ""}]).body
    script = [
        Reply.cut_short(Reply.ideas(GOOD).body[:40]),
        Reply.cut_short(other),
        Reply.raw(b"[" * 100_000),
        Reply.answer("[" * 100_000),
    ]
    with fake_chat_completions(SECRET, script, Reply.ideas(GOOD)) as fake:
        generator = ChatCompletionsGenerator(
            LanguageModelSettings(fake.base_url, "fake-model", SECRET, 5.0), attempts=5, backoff_seconds=0.0
        )
        assert generator.generate(make_context(), 2) == [Idea(**GOOD[0]), Idea(**GOOD[1])]
    assert len(fake.requests) == 5


def test_an_answer_too_large_or_never_finished_is_retried_not_read_forever() -> None:
    """A server that streams more than MAX_RESPONSE_BYTES, or sends its answer a byte at a time (each byte well
    within the socket's timeout, the whole far past it), is cut off and asked again."""
    huge = Reply.raw(b" " * (MAX_RESPONSE_BYTES + 1) + Reply.ideas(GOOD).body)
    dripping = Reply.dripping(Reply.ideas(GOOD).body, drip_seconds=0.05)
    with fake_chat_completions(SECRET, [huge, dripping], Reply.raw(b"{not")) as fake:
        generator = ChatCompletionsGenerator(
            LanguageModelSettings(fake.base_url, "fake-model", SECRET, 1.0), attempts=3, backoff_seconds=0.0
        )
        started = time.monotonic()
        with pytest.raises(IdeaGenerationError) as error:
            generator.generate(make_context(), 2)
    message = str(error.value)
    assert f"the answer is larger than {MAX_RESPONSE_BYTES} bytes" in message
    assert "no complete answer within 1 s" in message
    assert time.monotonic() - started < 10, "the dripping answer (about 30 s at its pace) was cut off"
    assert len(fake.requests) == 3


def test_answers_that_stay_unusable_give_one_clear_error() -> None:
    slow_then_malformed = fake_chat_completions(SECRET, [Reply.ideas(GOOD, delay_seconds=1.0)], Reply.raw(b"{not"))
    with slow_then_malformed as fake, pytest.raises(IdeaGenerationError) as error:
        client(fake.base_url, timeout=0.3).generate(make_context(), 2)
    message = str(error.value)
    assert "gave no usable ideas in 3 attempts" in message
    assert "no answer within 0.3 s" in message and "not a chat completion" in message
    assert SECRET not in message
    assert len(fake.requests) == 3


def test_a_refused_key_fails_at_once_without_showing_it() -> None:
    refused = pytest.raises(IdeaGenerationError, match="HTTP 401: Incorrect API key provided. \\(check TEAMU_LLM")
    with fake_chat_completions("another-key", [], Reply.ideas(GOOD)) as fake, refused:
        client(fake.base_url).generate(make_context(), 2)
    assert len(fake.requests) == 1
    # A server that quotes the key back gets it masked.
    quoting = fake_chat_completions(SECRET, [Reply.error(400, f"bad key {SECRET} for model")], Reply.ideas(GOOD))
    with quoting as fake, pytest.raises(IdeaGenerationError) as error:
        client(fake.base_url).generate(make_context(), 2)
    assert SECRET not in str(error.value) and "bad key *** for model" in str(error.value)


def test_no_server_is_a_clear_error() -> None:
    with fake_chat_completions(SECRET, [], Reply.ideas(GOOD)) as fake:
        url = fake.base_url  # the port is free again once the block ends
    with pytest.raises(IdeaGenerationError, match="connection failed"):
        client(url).generate(make_context(), 2)


def test_settings_choose_the_generator() -> None:
    assert isinstance(generator_from_settings(Settings.from_env({}).language_model), OfflineGenerator)
    settings = Settings.from_env({"TEAMU_LLM_URL": "http://127.0.0.1:9/v1", "TEAMU_LLM_API_KEY": SECRET})
    llm = settings.language_model
    assert llm is not None and llm.model == "gpt-4o-mini" and llm.timeout_seconds == 60.0
    assert isinstance(generator_from_settings(llm), ChatCompletionsGenerator)
    assert SECRET not in repr(settings)


# --- ranking -------------------------------------------------------------------------------------------------------


def test_engagement_is_the_audience_softmax_share_summed() -> None:
    rng = np.random.default_rng(1)
    users, posts, ideas = rng.normal(size=(7, DIM)), rng.normal(size=(50, DIM)), rng.normal(size=(3, DIM))
    normalizers = log_normalizers(users, posts, block=16)
    assert normalizers == pytest.approx(np.log(np.exp(users @ posts.T).sum(axis=1)))
    expected = (np.exp(users @ ideas.T) / np.exp(users @ posts.T).sum(axis=1, keepdims=True)).sum(axis=0)
    assert predicted_engagement(users, ideas, normalizers) == pytest.approx(expected)


def test_engagement_rates_count_each_post_once_from_its_first_engagement_halved_every_30_days() -> None:
    day = pd.Timedelta(days=1)
    interactions = pd.DataFrame(
        [
            (1, 10, AS_OF - 30 * day),  # first engagement with post 10: half a post
            (1, 10, AS_OF),  # the same post again: not a second one
            (1, 11, AS_OF),
            (2, 10, AS_OF - 60 * day),
        ],
        columns=["user_id", "post_id", "occurred_at"],
    )
    rates = engagement_rates(interactions, np.array([3, 1, 2]), AS_OF)
    assert rates == pytest.approx([0.0, 1.5, 0.25])
    assert engagement_rates(interactions, np.array([7, 8]), AS_OF).tolist() == [0.0, 0.0]
    assert engagement_rates(interactions.iloc[:0], np.array([1]), AS_OF).tolist() == [0.0]


def test_the_users_who_engage_decide_the_expected_engagement() -> None:
    rng = np.random.default_rng(2)
    users, posts, ideas = rng.normal(size=(4, DIM)), rng.normal(size=(30, DIM)), rng.normal(size=(3, DIM))
    normalizers = log_normalizers(users, posts)
    shares = np.exp(users @ ideas.T - normalizers[:, np.newaxis])
    rates = np.array([0.0, 0.0, 2.0, 0.5])
    assert predicted_engagement(users, ideas, normalizers, rates) == pytest.approx(2.0 * shares[2] + 0.5 * shares[3])
    # Nobody engaged: every user alike, not every idea expected to draw nothing.
    assert predicted_engagement(users, ideas, normalizers, np.zeros(4)) == pytest.approx(shares.sum(axis=0))
    # Four idle accounts lean to content dimension 1, the one user who engages to dimension 0: the ideas follow
    # what that user engages with, where counting everyone alike follows the idle ones.
    context = make_context()
    lean = np.zeros((5, DIM))
    lean[:4, 1] = lean[4, 0] = 10.0
    lean[:, -1] = 1.0
    active = replace(context.audience, vectors=lean.astype(np.float32), rates=np.array([0.0, 0.0, 0.0, 0.0, 3.0]))
    contents = {"Zero": [1, 0, 0, 0, 0, 0], "One": [0, 1, 0, 0, 0, 0], **SUCCESSFUL_CONTENTS}

    def embed(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
        return np.array([[*contents[title], 1.0, 0.0] for title in frame["title"]], np.float32)

    ideas_ = [Idea("One", ""), Idea("Zero", "")]
    ranked = rank_ideas(ideas_, replace(context, audience=active), embed, np.zeros(5))
    assert [r.idea.title for r in ranked] == ["Zero", "One"]
    assert ranked[0].score == pytest.approx(3.0 * np.exp(10.0)) and ranked[1].score == pytest.approx(3.0)
    alike = rank_ideas(ideas_, replace(context, audience=replace(active, rates=None)), embed, np.zeros(5))
    assert [r.idea.title for r in alike] == ["One", "Zero"]


def test_ideas_are_embedded_as_new_posts() -> None:
    context = make_context(local=True)
    frame = idea_posts([Idea("A title", "Some words"), Idea("B", "")], context)
    assert frame["post_id"].tolist() == [-1, -2]
    table = PostFeatureTable(frame, reference_time=context.as_of)
    inputs = table.serving_inputs()
    assert inputs["post_age_days"].tolist() == [0.0, 0.0]
    numeric = dict(zip(("length", "local", "votes", "views", "seconds"), inputs["post_numeric"].T, strict=True))
    assert numeric["votes"].tolist() == [0, 0] and numeric["views"].tolist() == [0, 0]
    assert numeric["local"].tolist() == [1, 1] and inputs["comments"].tolist() == ["", ""]
    assert frame["latitude"].tolist() == [pytest.approx(BERLIN[0])] * 2
    assert idea_posts([Idea("C", "")], make_context())["latitude"].isna().all()


def test_ideas_rank_by_predicted_engagement_with_the_nearest_successful_posts_as_reasons() -> None:
    context = make_context()
    # The audience all points along content dimension 0: ideas there engage it most.
    direction = np.zeros(DIM)
    direction[0] = 10.0
    direction[-1] = 1.0
    audience = replace(context.audience, vectors=np.tile(direction, (5, 1)).astype(np.float32))
    context = replace(context, audience=audience)
    ideas = [Idea("Far", ""), Idea("Near", ""), Idea("Middle", "")]
    contents = {"Far": [0, 1, 0, 0, 0, 0], "Near": [1, 0, 0, 0, 0, 0], "Middle": [0.6, 0.8, 0, 0, 0, 0]}
    contents |= SUCCESSFUL_CONTENTS
    embedded: list[list[int]] = []

    def embed(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
        assert as_of == AS_OF and (frame["post_id"] < 0).all() and (frame["view_count"] == 0).all()
        embedded.append(frame["post_id"].tolist())
        return np.array([[*contents[title], 1.0, 0.0] for title in frame["title"]], np.float32)

    ranked = rank_ideas(ideas, context, embed, np.zeros(5))
    assert [r.idea.title for r in ranked] == ["Near", "Middle", "Far"]
    assert [r.rank for r in ranked] == [1, 2, 3]
    assert ranked[0].score == pytest.approx(5 * np.exp(10.0))
    assert ranked[0].reasons[0].post_id == 101 and ranked[0].reasons[0].similarity == pytest.approx(1.0)
    assert ranked[2].reasons[0].post_id == 102
    assert "Drone racing night" in str(ranked[0].reasons[0])
    # One embedding of the ideas, one of the successful posts (as new posts), whatever the number of ideas.
    assert embedded == [[-1, -2, -3], [-1, -2]]
    assert rank_ideas([], context, embed, np.zeros(5)) == []


def test_the_ideas_command_takes_a_team_and_a_count() -> None:
    from teamu_assets.cli import build_parser

    args = build_parser().parse_args(["ideas", "--team", "109"])
    assert (args.team, args.n, args.audience, args.save, args.context) == (109, 10, 200, False, False)
    args = build_parser().parse_args(["ideas", "--team", "3", "-n", "4", "--save"])
    assert (args.n, args.save) == (4, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ideas", "--team", "3", "-n", "0"])
