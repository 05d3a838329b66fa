"""Post ideas on a real Postgres: hand-made marts and embeddings of a three-topic world, a fake post tower (content
from the topic words of a text) and the fake chat-completions server on loopback. The team, its audience and
context, generation with its fallbacks, ranking, ml.post_ideas, and the post_ideas asset."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from teamu_assets.db import schema
from teamu_assets.db.connection import connect
from teamu_assets.db.embeddings import write_embeddings
from teamu_assets.ideas import (
    NoTeamIdeas,
    OfflineGenerator,
    Ranker,
    active_teams,
    build_context,
    read_post_ideas,
    read_team,
    refresh_post_ideas,
    suggest_ideas,
    write_post_ideas,
)
from teamu_assets.ideas.blend import RankerBlend, team_prior
from teamu_assets.ideas.generate import ChatCompletionsGenerator, Idea
from teamu_assets.ideas.rank import RankedIdea, live_log_normalizers, log_normalizers
from teamu_assets.ideas.team import TeamPost
from teamu_assets.settings import LanguageModelSettings
from tests.fakes.llm_server import Reply, fake_chat_completions

pytestmark = pytest.mark.integration

SECRET = "sk-integration-0b5d"
VERSION = "tt-fake"
CONTENT_DIM = 6
TOPIC_WORDS = (("robot", "servo", "arduino"), ("compost", "garden", "seed"), ("guitar", "synth", "melody"))
BERLIN, PARIS = (52.52, 13.40), (48.85, 2.35)
NOW = pd.Timestamp("2026-05-31", tz="UTC")
USERS = 60
LOCAL_TEAM, GLOBAL_TEAM = 1, 2


def topic_direction(topic: int) -> np.ndarray:
    direction = np.zeros(CONTENT_DIM)
    direction[topic] = 1.0
    return direction


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def text_content(text: str) -> np.ndarray:
    """The fake tower's content: the topics whose words the text uses (a neutral direction when none)."""
    words = text.lower().split()
    mix = sum(
        sum(word.strip('.,:!?"') in topic for word in words) * topic_direction(i) for i, topic in enumerate(TOPIC_WORDS)
    )
    return unit(mix if np.any(mix) else np.eye(CONTENT_DIM)[-1])


def fake_embed(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    assert (frame["view_count"] == 0).all() and (frame["created_at"] == as_of).all()
    rows = [
        [*text_content(f"{title} {description}"), 1.0, 0.0]
        for title, description in zip(frame["title"], frame["description"], strict=True)
    ]
    return np.array(rows, np.float32)


@dataclass(frozen=True)
class World:
    url: str
    user_vectors: np.ndarray
    post_vectors: np.ndarray


def user_topic(user_id: int) -> int:
    return (user_id - 1) % 3


def post_topic(post_id: int) -> int:
    return (post_id - 1001) % 3


def user_home(user_id: int) -> tuple[float, float]:
    return BERLIN if user_id <= USERS // 2 else PARIS


@pytest.fixture(scope="module")
def world(module_db_url: str) -> Iterator[World]:
    url = module_db_url
    rng = np.random.default_rng(3)
    schema.apply(url, "ml")
    users = []
    for user_id in range(1, USERS + 1):
        topic = user_topic(user_id)
        users.append(
            (
                user_id,
                f"user{user_id}",
                [TOPIC_WORDS[topic][0] + "s"],
                [f"{TOPIC_WORDS[topic][1]} club"],
                *user_home(user_id),
            )
        )
    posts = []
    for index in range(90):
        post_id, topic, author = 1001 + index, index % 3, 10 + index % 50
        words = TOPIC_WORDS[topic]
        title = f"{words[index % 3].title()} night number {index}"
        is_local = index % 10 == 0
        home = user_home(author)
        posts.append(
            (
                post_id,
                author,
                title,
                f"all about {words[(index + 1) % 3]}",
                int(rng.integers(0, 300)),
                int(rng.integers(-2, 40)),
                ["nice"] * (index % 4),
                is_local,
                *(home if is_local else (None, None)),
                NOW - pd.Timedelta(days=90 - index),
            )
        )
    # The local team already posted about servos.
    posts.append(
        (2001, 1, "Servo night number 1", "our servo", 5, 1, [], False, None, None, NOW - pd.Timedelta(days=3))
    )
    with connect(url) as conn:
        conn.execute("create schema if not exists marts")
        conn.execute(
            "create table marts.user_features (user_id bigint primary key, username text, passions text[],"
            " project_titles text[], latitude float8, longitude float8)"
        )
        conn.execute(
            "create table marts.post_features (post_id bigint primary key, user_id bigint, title text,"
            " description text, view_count bigint, vote_count bigint, comments text[], is_local bool,"
            " latitude float8, longitude float8, created_at timestamptz, avg_time_viewed interval default '10 seconds')"
        )
        conn.execute(
            "create table marts.interactions (user_id bigint, post_id bigint, kind text, occurred_at timestamptz)"
        )
        conn.execute(
            "create table marts.teams (project_id bigint primary key, title text, member_ids bigint[],"
            " member_roles text[])"
        )
        cursor = conn.cursor()
        cursor.executemany("insert into marts.user_features values (%s, %s, %s, %s, %s, %s)", users)
        cursor.executemany(
            "insert into marts.post_features (post_id, user_id, title, description, view_count, vote_count, comments,"
            " is_local, latitude, longitude, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            posts,
        )
        # Team 1: three topic-0 members in Berlin. Team 2: topic-1 members in Berlin and Paris.
        cursor.executemany(
            "insert into marts.teams values (%s, %s, %s, %s)",
            [
                (LOCAL_TEAM, "Robot garage", [1, 4, 7], ["owner", "member", "member"]),
                (GLOBAL_TEAM, "Seed swap", [2, 35], ["owner", "member"]),
                (3, "Quiet band", [3], ["owner"]),
            ],
        )
        # Team 2's members were busy lately, team 1's a while ago.
        interactions = [(2, 1001 + i, "view", NOW - pd.Timedelta(days=1)) for i in range(5)]
        interactions += [(1, 1001 + i, "view", NOW - pd.Timedelta(days=40)) for i in range(8)]
        interactions += [(3, 1002, "view", NOW)]
        cursor.executemany("insert into marts.interactions values (%s, %s, %s, %s)", interactions)
    user_vectors = np.array(
        [
            [*(unit(topic_direction(user_topic(u)) + rng.normal(0, 0.15, CONTENT_DIM)) / 0.1), 0.5, 1.0]
            for u in range(1, USERS + 1)
        ]
    )
    post_vectors = np.array(
        [[*unit(topic_direction(i % 3) + rng.normal(0, 0.3, CONTENT_DIM)), 1.0, 0.1] for i in range(90)]
        + [[*topic_direction(0), 1.0, 0.0]]
    )
    write_embeddings(url, "user", np.arange(1, USERS + 1), user_vectors, VERSION, mode="full")
    write_embeddings(url, "post", np.array([p[0] for p in posts]), post_vectors, VERSION, mode="full")
    yield World(url, user_vectors, post_vectors)


RANKER = Ranker(VERSION, fake_embed)


def test_a_local_team_its_audience_and_its_context(world: World) -> None:
    team = read_team(world.url, LOCAL_TEAM)
    assert team.member_ids == [1, 4, 7] and team.is_local
    assert [post.title for post in team.posts] == ["Servo night number 1"]
    context = build_context(world.url, team, VERSION, audience_size=40)
    audience = context.audience
    assert not set(audience.user_ids.tolist()) & {1, 4, 7}
    # Local users first, and among them the topic-0 ones (nearest the team) first.
    assert audience.is_local.tolist() == sorted(audience.is_local.tolist(), reverse=True)
    local_ids = audience.user_ids[audience.is_local]
    assert all(user_home(u) == BERLIN for u in local_ids.tolist())
    assert [user_topic(u) for u in local_ids[:5].tolist()] == [0] * 5
    assert audience.is_local.sum() == USERS // 2 - 3 and audience.vectors.shape == (40, CONTENT_DIM + 2)
    # Successful posts: near the audience, in the top quarter by engagement, not the team's own.
    assert context.successful_posts and all(p.post_id != 2001 for p in context.successful_posts)
    topics = [post_topic(p.post_id) for p in context.successful_posts]
    assert topics.count(0) > len(topics) / 2
    assert context.passions[0] == ("robots", 3)
    assert context.projects[0] == "Robot garage"
    json.dumps(context.summary())
    assert build_context(world.url, team, VERSION, audience_size=40).summary() == context.summary()


def test_the_audience_weighs_in_by_how_much_each_engages(world: World) -> None:
    context = build_context(world.url, read_team(world.url, GLOBAL_TEAM), VERSION)
    rates = dict(zip(context.audience.user_ids.tolist(), context.audience.rates.tolist(), strict=True))
    # The fixture's interactions: user 1 engaged with 8 posts 40 days before the data's clock, user 3 with one at
    # it; user 2, who engaged most lately, is a member (not in the audience); nobody else engaged.
    assert rates[1] == pytest.approx(8 * 0.5 ** (40 / 30)) and rates[3] == pytest.approx(1.0)
    assert sum(rate > 0 for rate in rates.values()) == 2 and 2 not in rates
    assert context.summary()["audience"]["engaged"] == 2


def test_the_most_active_teams_come_first(world: World) -> None:
    assert active_teams(world.url, 3) == [(GLOBAL_TEAM, 5, 5), (3, 1, 1), (LOCAL_TEAM, 0, 8)]


def test_normalizers_in_the_database_equal_numpy_ones(world: World) -> None:
    ids = np.array([5, 1, 33])
    expected = log_normalizers(world.user_vectors[ids - 1], world.post_vectors)
    assert live_log_normalizers(world.url, ids) == pytest.approx(expected, rel=1e-5)


def test_ideas_from_the_fake_llm_are_ranked_for_the_audience_and_repeats_dropped(world: World) -> None:
    answer = [
        {"title": "Synth and melody jam", "description": "guitar loops"},
        {"title": "Servo night, number 1!", "description": "a repeat of the team's post"},
        {"title": "Arduino robot clinic", "description": "bring your servo"},
        {"title": "Compost basics", "description": "garden soil"},
    ]
    with fake_chat_completions(SECRET, [Reply.raw(b"not json")], Reply.ideas(answer)) as fake:
        generator = ChatCompletionsGenerator(
            LanguageModelSettings(fake.base_url, "fake-model", SECRET, 5.0), backoff_seconds=0.0
        )
        result = suggest_ideas(world.url, LOCAL_TEAM, generator=generator, ranker=RANKER, count=3, audience_size=10)
    assert result.generator == "chat-completions (fake-model)" and result.fallback_reason is None
    assert [idea.title for idea in result.dropped] == ["Servo night, number 1!"]
    titles = [ranked.idea.title for ranked in result.ranked]
    assert titles[0] == "Arduino robot clinic" and set(titles) == {
        "Arduino robot clinic",
        "Synth and melody jam",
        "Compost basics",
    }
    scores = [ranked.score for ranked in result.ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    assert post_topic(result.ranked[0].reasons[0].post_id) == 0
    # The malformed first answer was retried; the prompt held the context and no secret.
    assert len(fake.requests) == 2
    prompt = fake.requests[-1]["body"]["messages"][1]["content"]
    for expected in ("Robot garage", "robots (3)", "Servo night number 1", result.context.successful_posts[0].title):
        assert expected in prompt
    assert all(SECRET not in json.dumps(request["body"]) for request in fake.requests)


def test_a_failing_llm_gives_the_offline_ideas_with_the_reason(world: World) -> None:
    with fake_chat_completions(SECRET, [], Reply.error(500, "upstream exploded")) as fake:
        generator = ChatCompletionsGenerator(
            LanguageModelSettings(fake.base_url, "fake-model", SECRET, 5.0), backoff_seconds=0.0
        )
        result = suggest_ideas(world.url, GLOBAL_TEAM, generator=generator, ranker=RANKER, count=4)
    assert result.generator == "offline"
    assert "HTTP 500: upstream exploded" in result.fallback_reason and SECRET not in result.fallback_reason
    assert len(result.ranked) == 4
    again = suggest_ideas(world.url, GLOBAL_TEAM, generator=OfflineGenerator(), ranker=RANKER, count=4)
    assert [(r.idea, r.score) for r in again.ranked] == [(r.idea, r.score) for r in result.ranked]
    assert not again.context.team.is_local and not again.context.audience.is_local.any()


def test_the_score_blends_in_the_teams_past_engagement(world: World) -> None:
    team = read_team(world.url, GLOBAL_TEAM)
    assert team_prior(world.url, team) == 0.0  # nobody engaged with its members' posts
    # Posts 1001 and 1003 drew users 1 and 2, post 1002 users 1, 2 and 3 (the fixture's interactions).
    posts = tuple(TeamPost(post_id, 2, "t", "", False, None, None) for post_id in (1001, 1002, 1003))
    assert team_prior(world.url, replace(team, posts=posts)) == pytest.approx(7 / 3)
    assert team_prior(world.url, replace(team, posts=())) == 0.0

    blended = Ranker(VERSION, fake_embed, RankerBlend(0.5, 2.0, "fixture"))
    result = suggest_ideas(world.url, GLOBAL_TEAM, generator=OfflineGenerator(), ranker=blended, count=4)
    tower = suggest_ideas(world.url, GLOBAL_TEAM, generator=OfflineGenerator(), ranker=RANKER, count=4)
    assert result.team_prior == 0.0 and [r.idea for r in result.ranked] == [r.idea for r in tower.ranked]
    # Half the tower's log score, half the prior's in its units (2 x (1 + 0)).
    assert [r.score for r in result.ranked] == pytest.approx([np.sqrt(r.score * 2.0) for r in tower.ranked])
    assert [r.tower_score for r in result.ranked] == [r.score for r in tower.ranked]


def test_post_ideas_are_replaced_per_team_in_one_transaction(world: World) -> None:
    url = world.url
    with connect(url) as conn:
        conn.execute("drop table if exists ml.post_ideas")

    def ranked(*titles: str | None) -> list[RankedIdea]:
        return [RankedIdea(i, Idea(t, "d"), 1.0 / i, 0.0, ()) for i, t in enumerate(titles, start=1)]  # type: ignore[arg-type]

    first = write_post_ideas(
        url, [(LOCAL_TEAM, ranked("a", "b"), "offline"), (GLOBAL_TEAM, ranked("c"), "offline")], VERSION
    )
    assert [i.title for i in read_post_ideas(url, LOCAL_TEAM)] == ["a", "b"]
    second = write_post_ideas(url, [(LOCAL_TEAM, ranked("x"), "chat-completions (m)")], VERSION)
    assert second > first
    assert [(i.title, i.generator, i.generated_at) for i in read_post_ideas(url, LOCAL_TEAM)] == [
        ("x", "chat-completions (m)", second)
    ]
    assert [i.title for i in read_post_ideas(url, GLOBAL_TEAM)] == ["c"]
    # A write that fails half-way leaves every team's previous ideas.
    with pytest.raises(Exception, match="null value"):
        write_post_ideas(
            url, [(GLOBAL_TEAM, ranked("new"), "offline"), (LOCAL_TEAM, ranked("y", None), "offline")], VERSION
        )
    assert [i.title for i in read_post_ideas(url, LOCAL_TEAM)] == ["x"]
    assert [i.title for i in read_post_ideas(url, GLOBAL_TEAM)] == ["c"]


def test_two_writers_of_one_team_run_one_after_the_other(world: World) -> None:
    """A write that starts while another writer's transaction holds new rows for the team waits for it, then
    replaces them (before, it failed on the (project_id, rank) key once the other committed)."""
    url = world.url
    schema.apply(url, "ml")
    written: list[object] = []

    def write() -> None:
        try:
            written.append(
                write_post_ideas(
                    url, [(LOCAL_TEAM, [RankedIdea(1, Idea("second", "d"), 1.0, 0.0, ())], "offline")], VERSION
                )
            )
        except Exception as exc:  # surfaced by the assertion below
            written.append(exc)

    with connect(url) as other:
        other.execute("delete from ml.post_ideas where project_id = %s", (LOCAL_TEAM,))
        other.execute(
            "insert into ml.post_ideas (project_id, rank, title, description, score, generator, model_version,"
            " generated_at) values (%s, 1, 'first', 'd', 1.0, 'offline', %s, now())",
            (LOCAL_TEAM, VERSION),
        )
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive(), "the second writer waits for the first"
    writer.join(timeout=30)
    assert len(written) == 1 and not isinstance(written[0], Exception), written
    assert [i.title for i in read_post_ideas(url, LOCAL_TEAM)] == ["second"]


def test_a_refresh_writes_the_most_active_teams_and_nothing_when_no_team_gets_ideas(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test_refresh_post_ideas")
    refresh = refresh_post_ideas(world.url, RANKER, None, log, teams=1, ideas_per_team=3)
    assert [result.context.team.project_id for result in refresh.results] == [GLOBAL_TEAM]
    assert (refresh.generator, refresh.ideas, refresh.skipped, refresh.fallbacks) == ("offline", 3, {}, {})
    stored = read_post_ideas(world.url, GLOBAL_TEAM)
    assert [idea.generated_at for idea in stored] == [refresh.generated_at] * 3

    with caplog.at_level(logging.WARNING, logger=log.name), pytest.raises(NoTeamIdeas) as refused:
        refresh_post_ideas(world.url, RANKER, None, log, project_ids=[999])
    assert list(refused.value.skipped) == ["999"]
    assert [record.getMessage() for record in caplog.records] == [f"project 999: {refused.value.skipped['999']}"]
    assert read_post_ideas(world.url, GLOBAL_TEAM) == stored, "nothing written"

    # A team named twice gets its list once (the second list broke ml.post_ideas' key before).
    twice = refresh_post_ideas(world.url, RANKER, None, log, project_ids=[GLOBAL_TEAM, GLOBAL_TEAM], ideas_per_team=3)
    assert [result.context.team.project_id for result in twice.results] == [GLOBAL_TEAM]
    assert [idea.rank for idea in read_post_ideas(world.url, GLOBAL_TEAM)] == [1, 2, 3]


def test_the_asset_survives_a_slow_language_model_and_an_unknown_team(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import materialize

    import teamu_assets.ideas
    from teamu_assets.assets.ideas import POST_IDEAS, post_ideas
    from teamu_assets.resources import LanguageModel, TeamuDatabase

    monkeypatch.setattr(teamu_assets.ideas, "promoted_ranker", lambda url: RANKER)
    # Every answer comes after the client's timeout.
    with fake_chat_completions(SECRET, [], Reply.ideas([{"title": "Too late"}], delay_seconds=0.6)) as fake:
        result = materialize(
            [post_ideas],
            resources={
                "database": TeamuDatabase(teamu_home=str(tmp_path), database_url=world.url),
                "language_model": LanguageModel(
                    url=fake.base_url, model="fake-model", api_key=SECRET, timeout_seconds=0.3
                ),
            },
            run_config={"ops": {"ml__post_ideas": {"config": {"project_ids": [LOCAL_TEAM, 999], "ideas_per_team": 4}}}},
        )
    assert result.success
    assert len(fake.requests) == 3  # one team, three attempts
    metadata = result.asset_materializations_for_node("ml__post_ideas")[0].metadata
    assert metadata["teams"].value == 1 and metadata["ideas"].value == 4
    assert "no answer within 0.3 s" in metadata["fallbacks"].value[str(LOCAL_TEAM)]
    assert "999" in metadata["skipped"].value
    table = metadata["ranked_ideas"].value
    assert "| # | expected engagements | idea | because |" in table and "Robot garage" in table
    assert "scored by the post tower alone" in table and metadata["ranker"].value == RANKER.blend.reason
    assert all(SECRET not in str(value.value) for value in metadata.values())
    stored = read_post_ideas(world.url, LOCAL_TEAM)
    assert [idea.rank for idea in stored] == [1, 2, 3, 4] and {idea.generator for idea in stored} == {"offline"}
    assert stored[0].model_version == VERSION and POST_IDEAS.path == ["ml", "post_ideas"]
