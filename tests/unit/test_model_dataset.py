"""Training data: temporal split, leakage-free history, the Parquet artifact and its streaming readers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from teamu_assets.model.dataset import (
    build_training_examples,
    count_posts_by_kind,
    iter_example_batches,
    profile_as_of,
    read_manifest,
    user_features_as_of,
    write_dataset,
)
from teamu_assets.model.features import UNKNOWN_H3_CELL, FeatureLayout, h3_cell
from tests.unit.model_fixtures import SyntheticWorld, make_world

T0 = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return make_world(warm_users=40, cold_users=5, posts=80, events_per_user=12)


def _features(user_ids: list[int], post_ids: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame({"user_id": user_ids})
    posts = pd.DataFrame({"post_id": post_ids})
    return users, posts


def test_history_holds_only_engagements_strictly_before_the_example_newest_first() -> None:
    interactions = pd.DataFrame(
        [
            (1, 10, "view", T0),
            (1, 11, "view", T0 + pd.Timedelta(hours=1)),
            (1, 11, "upvote", T0 + pd.Timedelta(hours=1)),  # same instant: must not see the view beside it
            (1, 10, "comment", T0 + pd.Timedelta(hours=2)),
            (1, 12, "view", T0 + pd.Timedelta(hours=3)),
            (2, 12, "view", T0 + pd.Timedelta(hours=2)),
        ],
        columns=["user_id", "post_id", "kind", "occurred_at"],
    )
    users, posts = _features([1, 2], [10, 11, 12])
    data = build_training_examples(interactions, users, posts, T0 + pd.Timedelta(days=1), validation_fraction=0.0)
    rows = data.train.set_index(["user_id", "post_id", "kind"])
    assert rows.loc[(1, 10, "view"), "history"] == []
    assert rows.loc[(1, 11, "view"), "history"] == [10]
    assert rows.loc[(1, 11, "upvote"), "history"] == [10]
    # Re-engaging with post 10 moves it to the front, once.
    assert rows.loc[(1, 10, "comment"), "history"] == [11, 10]
    assert rows.loc[(1, 12, "view"), "history"] == [10, 11]
    assert rows.loc[(2, 12, "view"), "history"] == []
    assert rows.loc[(1, 12, "view"), ["viewed_count", "upvoted_count", "commented_count"]].tolist() == [
        2,
        1,
        1,
    ]
    assert rows.loc[(1, 11, "upvote"), ["viewed_count", "upvoted_count", "commented_count"]].tolist() == [
        1,
        0,
        0,
    ]


def test_every_history_is_a_subset_of_earlier_engagements_and_capped(world: SyntheticWorld) -> None:
    data = build_training_examples(
        world.interactions, world.user_features, world.post_features, world.cutoff, history_length=5
    )
    engagements = world.interactions
    for split in ("train", "validation", "evaluation"):
        for row in data.split(split).itertuples():
            earlier = engagements.loc[
                (engagements["user_id"] == row.user_id) & (engagements["occurred_at"] < row.occurred_at)
            ]
            assert len(row.history) <= 5
            assert len(set(row.history)) == len(row.history)
            assert set(row.history) <= set(earlier["post_id"])
            expected = earlier.sort_values("occurred_at", ascending=False).drop_duplicates("post_id")["post_id"]
            assert row.history == expected.head(5).tolist()


def test_split_is_temporal_and_validation_is_each_users_last_first_engagements(world: SyntheticWorld) -> None:
    data = build_training_examples(
        world.interactions, world.user_features, world.post_features, world.cutoff, validation_fraction=0.2
    )
    assert data.validation["occurred_at"].max() < world.cutoff <= data.evaluation["occurred_at"].min()
    assert data.train["occurred_at"].max() < world.cutoff
    assert data.validation_start == data.validation["occurred_at"].min()
    training_period = len(data.train) + len(data.validation)
    assert training_period + len(data.evaluation) == len(world.interactions)
    # Every row of a held-out (user, post) pair is in validation, none in training (no popularity leak).
    held_pairs = set(zip(data.validation["user_id"], data.validation["post_id"], strict=True))
    assert not held_pairs & set(zip(data.train["user_id"], data.train["post_id"], strict=True))
    assert data.validation["first_engagement"].sum() == len(held_pairs)
    # Leave-last-out: per user, the validation posts are the last 20% of the user's first engagements (at
    # least one), and nothing the user first engaged with in training comes after them.
    firsts = data.train.loc[data.train["first_engagement"]]
    validation_firsts = data.validation.loc[data.validation["first_engagement"]]
    for user, held in validation_firsts.groupby("user_id"):
        trained = firsts.loc[firsts["user_id"] == user]
        assert len(held) == max(1, int(0.2 * (len(held) + len(trained)) + 1e-9))
        assert trained["occurred_at"].max() <= held["occurred_at"].min()
    # Users with fewer than three first engagements keep all of them for training.
    per_user = firsts.groupby("user_id").size()
    few = per_user[per_user < 2].index
    assert not set(few) & set(data.validation["user_id"])
    # Cold-start users have no example before the cutoff.
    assert not set(world.cold_user_ids) & (set(data.train["user_id"]) | set(data.validation["user_id"]))
    assert set(world.cold_user_ids) <= set(data.evaluation["user_id"])


def test_repeat_engagements_are_marked_so_training_learns_only_new_posts() -> None:
    interactions = pd.DataFrame(
        [
            (1, 10, "view", T0),
            (1, 10, "upvote", T0 + pd.Timedelta(hours=1)),
            (1, 11, "view", T0 + pd.Timedelta(hours=2)),
        ],
        columns=["user_id", "post_id", "kind", "occurred_at"],
    )
    users, posts = _features([1], [10, 11])
    data = build_training_examples(interactions, users, posts, T0 + pd.Timedelta(days=1), validation_fraction=0)
    assert data.train[["post_id", "kind", "first_engagement"]].values.tolist() == [
        [10, "view", True],
        [10, "upvote", False],
        [11, "view", True],
    ]


def test_interactions_with_unknown_users_or_posts_are_dropped() -> None:
    interactions = pd.DataFrame(
        [(1, 10, "view", T0), (3, 10, "view", T0), (1, 99, "view", T0), (1, 10, "share", T0)],
        columns=["user_id", "post_id", "kind", "occurred_at"],
    )
    users, posts = _features([1], [10])
    data = build_training_examples(interactions, users, posts, T0 + pd.Timedelta(days=1), validation_fraction=0)
    assert data.train[["user_id", "post_id", "kind"]].values.tolist() == [[1, 10, "view"]]


def test_write_dataset_records_rows_users_posts_and_positives(world: SyntheticWorld, tmp_path: Path) -> None:
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    manifest = write_dataset(data, tmp_path / "ds", row_group_rows=50)
    reread = read_manifest(tmp_path / "ds")
    assert reread == manifest
    assert manifest.rows == {
        "train": len(data.train),
        "validation": len(data.validation),
        "evaluation": len(data.evaluation),
    }
    assert manifest.users == world.interactions["user_id"].nunique()
    assert manifest.posts == world.interactions["post_id"].nunique()
    kinds = world.interactions["kind"].value_counts()
    for kind in ("view", "upvote", "comment"):
        assert sum(manifest.positives_per_kind[split][kind] for split in manifest.rows) == kinds[kind]
    assert pd.Timestamp(manifest.cutoff) == world.cutoff
    for split in manifest.rows:
        assert manifest.path(split).is_file()


def test_streaming_reader_yields_every_row_exactly_once(world: SyntheticWorld, tmp_path: Path) -> None:
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    manifest = write_dataset(data, tmp_path / "ds", row_group_rows=37)
    batches = list(iter_example_batches([manifest.path("train")], batch_rows=25, history_length=50))
    assert max(len(b) for b in batches) <= 25
    streamed = Counter(
        (int(u), int(p), str(k)) for b in batches for u, p, k in zip(b.user_ids, b.post_ids, b.kinds, strict=True)
    )
    expected = Counter(zip(data.train["user_id"], data.train["post_id"], data.train["kind"], strict=True))
    assert streamed == expected
    # Histories come back padded, in their stored order.
    stored = pd.read_parquet(manifest.path("train"))["history"].head(len(batches[0])).tolist()
    for padded, history in zip(batches[0].histories, stored, strict=True):
        assert padded[: len(history)].tolist() == list(history)
        assert (padded[len(history) :] == -1).all()


def test_tf_dataset_streams_first_engagements_once_with_features(world: SyntheticWorld, tmp_path: Path) -> None:
    from teamu_assets.model.dataset import tf_example_dataset
    from teamu_assets.model.features import PostFeatureTable, UserFeatureTable

    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    manifest = write_dataset(data, tmp_path / "ds", row_group_rows=64)
    users = UserFeatureTable(world.user_features, FeatureLayout(history_length=10))
    posts = PostFeatureTable(world.post_features)
    dataset = tf_example_dataset(
        [manifest.path("train")], users, posts, {}, batch_size=32, shuffle_buffer=100, seed=3, read_rows=50
    )
    seen: Counter[tuple[int, int]] = Counter()
    for batch in dataset:
        assert batch["history"].shape[1] == 10
        assert np.array_equal(batch["post_id"].numpy(), batch["candidate_id"].numpy())
        titles = dict(zip(world.post_features["post_id"], world.post_features["title"], strict=True))
        assert [t.decode() for t in batch["title"].numpy()] == [titles[p] for p in batch["post_id"].numpy()]
        seen.update(zip(batch["user_id"].numpy().tolist(), batch["post_id"].numpy().tolist(), strict=True))
    firsts = data.train.loc[data.train["first_engagement"]]
    assert len(firsts) < len(data.train)
    assert seen == Counter(zip(firsts["user_id"].tolist(), firsts["post_id"].tolist(), strict=True))


def test_post_counts_and_user_state_as_of_a_time(world: SyntheticWorld, tmp_path: Path) -> None:
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    manifest = write_dataset(data, tmp_path / "ds")
    counts = count_posts_by_kind([manifest.path("train"), manifest.path("validation")]).set_index("post_id")
    before = world.interactions.loc[world.interactions["occurred_at"] < world.cutoff]
    expected = before.groupby(["post_id", "kind"]).size()
    for (post, kind), count in expected.items():
        assert counts.loc[post, kind] == count
    assert counts["total"].sum() == len(before)

    as_of = user_features_as_of(world.interactions, world.user_features, world.cutoff)
    cold = as_of.loc[as_of["user_id"].isin(world.cold_user_ids)]
    assert (cold["viewed_count"] == 0).all()
    assert all(ids == [] for ids in cold["recent_post_ids"])
    warm = as_of.loc[~as_of["user_id"].isin(world.cold_user_ids)].iloc[0]
    mine = before.loc[before["user_id"] == warm["user_id"]]
    assert warm["viewed_count"] == (mine["kind"] == "view").sum()
    assert warm["recent_post_ids"][0] == mine.sort_values("occurred_at")["post_id"].iloc[-1]


def test_nothing_written_after_the_cutoff_reaches_the_features_as_of_it() -> None:
    """The marts read now: a post created after the cutoff has comments and view time, and its author's
    created_post_titles lists it. As of the cutoff none of that existed."""
    from teamu_assets.model.dataset import post_features_as_of

    cutoff = T0 + pd.Timedelta(days=10)
    posts = pd.DataFrame(
        {
            "post_id": [10, 11, 12, 13],
            "user_id": [1, 1, 1, 2],
            "title": ["Old idea", None, "New idea", "Later"],
            "created_at": [T0, T0 + pd.Timedelta(days=1), cutoff, cutoff + pd.Timedelta(days=2)],
            "comments": [["nice"], [], ["after the cutoff"], ["great"]],
            "avg_time_viewed_seconds": [12.0, None, 30.0, 45.0],
            "view_count": [5, 0, 9, 3],
            "vote_count": [1, 0, 2, 1],
        }
    )
    counts = pd.DataFrame({"post_id": [10], "view": [4], "upvote": [1]})
    at_cutoff = post_features_as_of(counts, posts, as_of=cutoff).set_index("post_id")
    assert at_cutoff["comments"].tolist() == [["nice"], [], [], []]
    assert at_cutoff.loc[10, "avg_time_viewed_seconds"] == 12.0
    assert at_cutoff.loc[[11, 12, 13], "avg_time_viewed_seconds"].isna().all()
    assert at_cutoff["view_count"].tolist() == [4, 0, 0, 0]
    # Without a cutoff (serving) the mart's values stay.
    assert post_features_as_of(counts, posts)["comments"].tolist() == posts["comments"].tolist()
    # With the activity before the cutoff (features.read_post_activity_before), an older post's later comment
    # and view times are gone too; a post the activity lacks has none.
    activity = pd.DataFrame({"post_id": [10], "comments": [["first"]], "avg_time_viewed_seconds": [8.0]})
    with_before = post_features_as_of(counts, posts, as_of=cutoff, activity=activity).set_index("post_id")
    assert with_before["comments"].tolist() == [["first"], [], [], []]
    assert with_before.loc[10, "avg_time_viewed_seconds"] == 8.0
    assert with_before.loc[[11, 12, 13], "avg_time_viewed_seconds"].isna().all()
    assert with_before["view_count"].tolist() == [4, 0, 0, 0]

    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "created_post_titles": [["Old idea", "New idea"], ["Later"], []],
            "recent_post_ids": [[], [], []],
        }
    )
    interactions = pd.DataFrame(columns=["user_id", "post_id", "kind", "occurred_at"]).astype(
        {"user_id": np.int64, "post_id": np.int64, "occurred_at": "datetime64[ns, UTC]"}
    )
    as_of = profile_as_of(users, cutoff, posts=posts)
    assert as_of["created_post_titles"].tolist() == [["Old idea"], [], []]
    assert user_features_as_of(interactions, users, cutoff)["created_post_titles"].tolist() == [
        ["Old idea", "New idea"],
        ["Later"],
        [],
    ]
    # Project titles the same way, from the projects (features.read_projects): those started after the cutoff go.
    users["project_titles"] = [["Band site", "Compiler"], ["Garden"], ["Later project"]]
    projects = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            "title": ["Band site", "Compiler", "Garden", "Later project"],
            "created_at": pd.to_datetime(
                [cutoff - pd.Timedelta(days=9), cutoff, cutoff - pd.Timedelta(days=1), cutoff + pd.Timedelta(days=2)]
            ),
        }
    )
    trimmed = profile_as_of(users, cutoff, posts=posts, projects=projects)
    assert trimmed["project_titles"].tolist() == [["Band site"], ["Garden"], []]
    assert trimmed["created_post_titles"].tolist() == [["Old idea"], [], []]
    assert profile_as_of(users, cutoff, projects=projects)["created_post_titles"].tolist() == [
        ["Old idea", "New idea"],
        ["Later"],
        [],
    ]


def test_h3_cells_at_two_resolutions_and_unknown_for_bad_coordinates() -> None:
    berlin_coarse, berlin_fine = h3_cell(52.52, 13.40, 4), h3_cell(52.52, 13.40, 6)
    assert berlin_coarse != berlin_fine
    assert h3_cell(52.53, 13.41, 4) == berlin_coarse
    assert h3_cell(48.85, 2.35, 4) != berlin_coarse
    for lat, lng in ((np.nan, 13.4), (None, None), (95.0, 0.0), (0.0, 200.0), ("x", 1.0)):
        assert h3_cell(lat, lng, 4) == UNKNOWN_H3_CELL


def test_examples_see_the_post_as_it_was_then_popularity_and_age() -> None:
    from teamu_assets.model.dataset import post_features_as_of
    from teamu_assets.model.features import PostFeatureTable

    interactions = pd.DataFrame(
        [
            (1, 10, "view", T0),
            (2, 10, "view", T0 + pd.Timedelta(hours=1)),
            (2, 10, "upvote", T0 + pd.Timedelta(hours=1)),  # same instant as the view: sees neither
            (3, 10, "view", T0 + pd.Timedelta(hours=2)),
        ],
        columns=["user_id", "post_id", "kind", "occurred_at"],
    )
    users, posts = _features([1, 2, 3], [10])
    data = build_training_examples(interactions, users, posts, T0 + pd.Timedelta(days=1), validation_fraction=0.0)
    rows = data.train.set_index(["user_id", "kind"])
    counted = ["post_view_count", "post_vote_count", "post_comment_count"]
    assert rows.loc[(1, "view"), counted].tolist() == [0, 0, 0]
    assert rows.loc[(2, "upvote"), counted].tolist() == [1, 0, 0]
    assert rows.loc[(3, "view"), counted].tolist() == [2, 1, 0]

    frame = pd.DataFrame(
        {
            "post_id": [10, 11],
            "title": ["a", "b"],
            "description": ["", ""],
            "comments": [[], []],
            "post_length": [1, 1],
            "is_local": [False, False],
            "vote_count": [5, 0],
            "view_count": [9, 0],
            "latitude": [np.nan, np.nan],
            "longitude": [np.nan, np.nan],
            "created_at": [T0 - pd.Timedelta(days=3), T0 + pd.Timedelta(days=2)],
        }
    )
    counts = pd.DataFrame({"post_id": [10], "view": [2], "upvote": [1]})
    at_t0 = PostFeatureTable(post_features_as_of(counts, frame, as_of=T0)).serving_inputs()
    # Ages at the as-of time; a post created later counts as brand new.
    np.testing.assert_allclose(at_t0["post_age_days"], [3.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(at_t0["post_numeric"][:, 3], np.log1p([2.0, 0.0]), atol=1e-6)
    later = PostFeatureTable(frame, reference_time=T0 + pd.Timedelta(days=4)).serving_inputs()
    np.testing.assert_allclose(later["post_age_days"], [7.0, 2.0], atol=1e-3)


def test_examples_see_comments_and_view_time_only_once_the_post_had_them() -> None:
    """The post table holds comments and view time as of the cutoff; an example before the post's first comment
    (first view) gets none, as a new post is served: else the towers learn that posts without them, which every
    new post is, are posts nobody engages with."""
    from teamu_assets.model.features import VIEW_TIME_INDEX, PostFeatureTable

    interactions = pd.DataFrame(
        [
            (1, 10, "view", T0),
            (2, 10, "view", T0 + pd.Timedelta(hours=1)),
            (2, 10, "comment", T0 + pd.Timedelta(hours=1)),
            (3, 10, "view", T0 + pd.Timedelta(hours=2)),
        ],
        columns=["user_id", "post_id", "kind", "occurred_at"],
    )
    users, posts = _features([1, 2, 3], [10])
    data = build_training_examples(interactions, users, posts, T0 + pd.Timedelta(days=1), validation_fraction=0.0)
    views = data.train[data.train["kind"] == "view"].sort_values("occurred_at")
    counts = views[["post_view_count", "post_vote_count", "post_comment_count"]].to_numpy()
    assert counts.tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 1]]

    table = PostFeatureTable(
        pd.DataFrame(
            {
                "post_id": [10],
                "title": ["a"],
                "description": [""],
                "comments": [["great idea"]],
                "avg_time_viewed_seconds": [40.0],
                "post_length": [1],
                "is_local": [False],
                "vote_count": [0],
                "view_count": [3],
                "latitude": [np.nan],
                "longitude": [np.nan],
                "created_at": [T0],
            }
        )
    )
    inputs = table.inputs(np.array([10, 10, 10]), popularity=counts)
    assert inputs["comments"].tolist() == ["", "", "great idea"]
    view_time = inputs["post_numeric"][:, VIEW_TIME_INDEX]
    np.testing.assert_allclose(view_time, [0.0, np.log1p(40.0), np.log1p(40.0)], rtol=1e-6)
    # Outside training (no per-row counts) the table's own comments and view time serve.
    assert table.serving_inputs()["comments"].tolist() == ["great idea"]
