"""teamu_assets.realdata on tiny handcrafted Stack Exchange and Last.fm files: the mapping onto the raw contract,
the own-question rule, tie-free times and the per-user holdout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from teamu_assets.ingest.validation import validate_line
from teamu_assets.realdata import RealDataset, per_user_holdout, read_lastfm, read_stackexchange
from teamu_assets.realdata.dataset import ENGAGEMENT_COLUMNS, VIEW_COLUMNS, contract_frame, typed_frame
from teamu_assets.realdata.lastfm import month_slot_times
from teamu_assets.synthetic import CONTRACT_COLUMNS
from teamu_assets.synthetic.generator import POST_ID_OFFSET
from tests.unit.realdata_fixtures import write_lastfm, write_stackexchange_site

Q10, Q11, Q12 = (POST_ID_OFFSET + question for question in (10, 11, 12))


def _time(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["post_id"].tolist(), strict=True))


@pytest.fixture
def site(tmp_path: Path) -> RealDataset:
    return read_stackexchange(write_stackexchange_site(tmp_path / "se"), "se-test")


@pytest.fixture
def lastfm(tmp_path: Path) -> RealDataset:
    return read_lastfm(write_lastfm(tmp_path / "lastfm"))


def _assert_contract_shapes(dataset: RealDataset) -> None:
    for name, frame in dataset.tables.items():
        assert list(frame.columns) == list(CONTRACT_COLUMNS[name]), name
        for column, dtype in CONTRACT_COLUMNS[name].items():
            if column != "passions":
                assert frame[column].dtype == pd.Series([], dtype=dtype).dtype, (name, column)
    assert list(dataset.views.columns) == list(VIEW_COLUMNS)
    assert list(dataset.engagements.columns) == list(ENGAGEMENT_COLUMNS)
    users = set(dataset.users["user_id"])
    posts = set(dataset.posts["post_id"])
    for frame in (dataset.posts, dataset.comments, dataset.votes, dataset.views, dataset.engagements):
        assert set(frame["user_id"]) <= users
    for frame in (dataset.comments, dataset.votes, dataset.views, dataset.engagements):
        assert set(frame["post_id"]) <= posts


def test_stackexchange_maps_users_questions_answers_comments_and_favourites(site: RealDataset) -> None:
    _assert_contract_shapes(site)
    users = site.users.set_index("user_id")
    assert list(users.index) == [1, 2, 3, 4], "the Community bot is no user"
    assert users.loc[1, "bio"] == "Quantum & optics Berlin"
    assert np.isnan(users.loc[1, "latitude"]) and users.loc[1, "passions"] == []
    assert users.loc[2, "created_at"] == _time("2019-12-03 08:00")

    posts = site.posts.set_index("post_id")
    assert list(posts.index) == [Q10, Q11, Q12], "the deleted user's question is skipped"
    assert posts.loc[Q10, "title"] == "What is a qubit?"
    assert posts.loc[Q10, "description"] == "What is a qubit , really? quantum gate qubit"
    assert posts.loc[Q11, "description"] == "Why noise? noise"
    assert posts.loc[Q12, "user_id"] == 3 and not posts["is_local"].any()
    assert (posts["updated_at"] == posts["created_at"]).all()

    # Answers and comments (on a question or on its answers) are comments on the question, in time order.
    comments = site.comments
    assert list(comments["comment_id"]) == [1, 2, 3, 4, 5, 6]
    assert list(zip(comments["user_id"], comments["post_id"], comments["body"], strict=True)) == [
        (2, Q10, "A two-level system."),
        (1, Q10, "Nice & clear"),
        (1, Q10, "Thanks, got it."),
        (3, Q10, "agreed"),
        (3, Q11, "which noise?"),
        (2, Q12, "CNOT"),
    ]
    # Only favourites have a voter; each is an upvote.
    votes = site.votes
    assert list(votes["vote_id"]) == [3, 4, 5] and set(votes["value"]) == {1}
    dave = votes.loc[votes["user_id"] == 4, "created_at"].item()
    assert _time("2020-01-03 10:00") < dave < _time("2020-01-04"), "inside its day, after the question was posted"


def test_stackexchange_own_questions_are_no_engagement(site: RealDataset) -> None:
    engagements = site.engagements
    assert list(zip(engagements["user_id"], engagements["post_id"], engagements["occurred_at"], strict=True)) == [
        (2, Q10, _time("2020-01-01 11:00")),
        (2, Q12, _time("2020-01-03 15:00")),
        (3, Q10, _time("2020-01-01 13:00")),  # the comment, not the later favourite
        (3, Q11, _time("2020-01-02 12:00")),
        (4, Q12, site.votes.loc[site.votes["user_id"] == 4, "created_at"].item()),
    ]
    owner = site.posts.set_index("post_id")["user_id"]
    assert (site.views["post_id"].map(owner) != site.views["user_id"]).all()
    # One view per engagement action: bob's answer and comment, carol's two comments and favourite, dave's favourite.
    assert sorted(_pairs(site.views)) == sorted(_pairs(engagements))
    assert len(site.views) == 6 and (site.views["duration_ms"] > 0).all()


def test_views_are_valid_mixpanel_events_in_time_order(site: RealDataset) -> None:
    events = site.events
    assert len(events) == len(site.views)
    times = [event["properties"]["time"] for event in events]
    assert times == sorted(times)
    for event in events:
        valid = validate_line(json.dumps(event))
        assert valid.event == "Post Viewed"
    assert len({event["properties"]["$insert_id"] for event in events}) == len(events)
    assert [event["properties"]["$insert_id"] for event in site.events] == [
        event["properties"]["$insert_id"] for event in events
    ], "the same data gives the same insert ids"
    first = events[0]["properties"]
    assert first["time"] == _time("2020-01-01 11:00").timestamp() and first["distinct_id"] == "2"


def test_lastfm_maps_artists_to_catalogue_posts_and_taggings_to_engagements(lastfm: RealDataset) -> None:
    _assert_contract_shapes(lastfm)
    users = lastfm.users.set_index("user_id")
    catalogue = 5
    assert list(users.index) == [2, 3, 4, catalogue]
    assert users["bio"].isna().all() and (users["passions"].map(len) == 0).all()
    posts = lastfm.posts.set_index("post_id")
    a1, a2, a3 = (POST_ID_OFFSET + artist for artist in (1, 2, 3))
    assert list(posts.index) == [a1, a2, a3] and set(posts["user_id"]) == {catalogue}
    assert posts.loc[a1, "title"] == 'The "One"'
    # Most used first, ties by name; the Latin-1 tag file is read as such.
    assert posts.loc[a1, "description"] == "rock, rock français"
    assert posts.loc[a2, "description"] == "jazz, rock, rock français"
    assert posts.loc[a3, "description"] == "bebop, jazz"
    assert posts.loc[a3, "created_at"] == lastfm.engagements.query("post_id == @a3")["occurred_at"].min()

    # One comment per tag assignment (the clock error and the unknown artist skipped).
    assert len(lastfm.comments) == 8
    assert sorted(_pairs(lastfm.engagements)) == sorted([(2, a1), (2, a2), (2, a3), (3, a1), (3, a2), (4, a3)])
    # The first tagging is the engagement, a view and an upvote; Beta's second month adds only a comment.
    for frame, time in ((lastfm.views, "occurred_at"), (lastfm.votes, "created_at")):
        merged = frame.merge(lastfm.engagements, on=["user_id", "post_id"], suffixes=("", "_first"))
        assert len(merged) == len(frame) == len(lastfm.engagements)
        assert (merged[time] == merged["occurred_at" if time == "created_at" else "occurred_at_first"]).all()
    beta = lastfm.comments.query("user_id == 2 and post_id == @a2")["created_at"]
    assert beta.min().month == 4 and beta.max().month == 7
    april = lastfm.engagements.query("user_id == 2 and occurred_at.dt.month == 4")["occurred_at"]
    assert len(april) == 2 and april.nunique() == 2


def test_month_slot_times_are_distinct_per_user_inside_the_month_and_reproducible() -> None:
    artists = np.arange(1, 2001)
    users = np.repeat([7, 8], 1000)
    months = pd.Series([_time("2009-02-01")] * 2000)
    times = month_slot_times(users, artists, months)
    assert times.index.equals(months.index)
    assert (times >= _time("2009-02-01")).all() and (times < _time("2009-03-01")).all()
    for user in (7, 8):
        assert times[users == user].is_unique
    assert times.equals(month_slot_times(users, artists, months))
    # The order inside a month is the hash's, not the artist ids'.
    assert not times[users == 7].is_monotonic_increasing


def test_holdout_cuts_each_users_last_items_and_removes_every_row_of_them(site: RealDataset) -> None:
    train, holdout = per_user_holdout(site, fraction=0.2, min_items=2)
    # bob (2 items) and carol (2 items) hold out their later one; dave (1 item) keeps his.
    assert list(zip(holdout["user_id"], holdout["post_id"], strict=True)) == [(2, Q12), (3, Q11)]
    held = _pairs(holdout)
    for frame in (train.views, train.votes, train.comments, train.engagements):
        assert not _pairs(frame) & held
    assert len(train.comments) == len(site.comments) - 2
    assert len(train.votes) == len(site.votes), "carol's favourite of question 10 is not held out"
    assert _pairs(train.engagements) | held == _pairs(site.engagements)
    assert train.users.equals(site.users) and train.posts.equals(site.posts)


def _engagements_only(items_per_user: dict[int, int]) -> RealDataset:
    rows = [
        (user, POST_ID_OFFSET + item, _time("2020-01-01") + pd.Timedelta(hours=item))
        for user, count in items_per_user.items()
        for item in range(count)
    ]
    engagements = typed_frame(ENGAGEMENT_COLUMNS, pd.DataFrame(rows, columns=list(ENGAGEMENT_COLUMNS)))
    empty = {name: contract_frame(name, {c: [] for c in columns}) for name, columns in CONTRACT_COLUMNS.items()}
    views = typed_frame(VIEW_COLUMNS, engagements.assign(duration_ms=1))
    return RealDataset(name="sizes", views=views, engagements=engagements, **empty)


@pytest.mark.parametrize(("fraction", "min_items"), [(0.2, 2), (0.5, 3)])
def test_holdout_sizes(fraction: float, min_items: int) -> None:
    items_per_user = {user: user for user in range(1, 13)}
    train, holdout = per_user_holdout(_engagements_only(items_per_user), fraction=fraction, min_items=min_items)
    held = holdout.groupby("user_id").size().to_dict()
    for user, items in items_per_user.items():
        expected = 0 if items < min_items else min(items - 1, max(1, int(np.floor(fraction * items + 1e-9))))
        assert held.get(user, 0) == expected, user
        # The held-out items are the user's latest.
        mine = holdout.loc[holdout["user_id"] == user, "post_id"]
        assert set(mine) == {POST_ID_OFFSET + item for item in range(items - expected, items)}
    assert held[10] == 2 if fraction == 0.2 else held[10] == 5
    assert len(train.engagements) + len(holdout) == sum(items_per_user.values())
    assert len(train.views) == len(train.engagements)


def test_holdout_rejects_bad_arguments(site: RealDataset) -> None:
    with pytest.raises(ValueError, match="fraction"):
        per_user_holdout(site, fraction=1.0)
    with pytest.raises(ValueError, match="min_items"):
        per_user_holdout(site, min_items=1)


def test_lastfm_holdout_descriptions_come_from_training_tags_only(lastfm: RealDataset) -> None:
    train, holdout = per_user_holdout(lastfm)
    a3 = POST_ID_OFFSET + 3
    assert (2, a3) in _pairs(holdout), "user 2's last artist is held out"
    assert lastfm.posts.set_index("post_id").loc[a3, "description"] == "bebop, jazz"
    assert train.posts.set_index("post_id").loc[a3, "description"] == "jazz", "the held-out tag is gone"
    assert "bebop" not in set(train.comments["body"])
    # User 3 tagged two artists in one month: the later by its in-month time is held out.
    user3 = lastfm.engagements.query("user_id == 3").sort_values("occurred_at")
    assert holdout.query("user_id == 3")["post_id"].tolist() == [user3["post_id"].iloc[-1]]
