"""write_supabase against the real Postgres: idempotent, complete, faithful to the frames."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from teamu_assets.cli import main
from teamu_assets.db.connection import connect
from teamu_assets.synthetic import SyntheticConfig, generate, load_truth, write_supabase

pytestmark = pytest.mark.integration

SMALL = SyntheticConfig(users=120, posts=90, days=20, seed=5, bad_fraction=0.05)
VOTES_DIGEST = "select md5(string_agg(v::text, ',' order by vote_id)) from raw_supabase.votes v"
ODDITIES = """
select (select count(*) from raw_supabase.users where passions is null),
       (select count(*) from raw_supabase.posts where title = ''),
       (select pg_typeof(value)::text from raw_supabase.votes limit 1)
"""


def test_write_supabase_twice_gives_the_same_rows(db_url: str) -> None:
    dataset = generate(SMALL)
    expected = {name: len(frame) for name, frame in dataset.tables.items()}
    first = write_supabase(db_url, dataset)
    assert first == expected
    with connect(db_url) as conn:
        votes_digest = conn.execute(VOTES_DIGEST).fetchone()[0]
    assert write_supabase(db_url, dataset) == first
    with connect(db_url) as conn:
        assert conn.execute(VOTES_DIGEST).fetchone()[0] == votes_digest


def test_write_supabase_keeps_values_types_and_oddities(db_url: str) -> None:
    dataset = generate(SMALL)
    write_supabase(db_url, dataset)
    users = dataset.users.set_index("user_id")
    with connect(db_url) as conn:
        rows = conn.execute(
            "select user_id, username, bio, passions, latitude, created_at from raw_supabase.users"
        ).fetchall()
        null_passions, empty_titles, value_type = conn.execute(ODDITIES).fetchone()
    assert len(rows) == len(users)
    for user_id, username, bio, passions, latitude, created_at in rows:
        expected = users.loc[user_id]
        assert username == expected["username"] and bio == expected["bio"]
        assert passions == expected["passions"]
        assert latitude == expected["latitude"]
        assert created_at == expected["created_at"].to_pydatetime()
    assert null_passions == dataset.quality_issues["users.null_passions"]
    assert empty_titles == dataset.quality_issues["posts.empty_title"]
    assert value_type == "smallint"


def test_a_smaller_dataset_replaces_a_larger_one(db_url: str) -> None:
    write_supabase(db_url, generate(SMALL))
    smaller = generate(dataclasses.replace(SMALL, users=40, posts=30, seed=6))
    counts = write_supabase(db_url, smaller)
    assert counts == {name: len(frame) for name, frame in smaller.tables.items()}
    with connect(db_url) as conn:
        (max_user,) = conn.execute("select max(user_id) from raw_supabase.users").fetchone()
    assert max_user == 40


def test_teamu_seed_flags_shape_the_world_it_writes(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`teamu seed` with every world flag: two accounts write half the posts over a 400-day span, a few posts
    gather hundreds of comments, and the saved ground truth holds the heavy-tailed appeal."""
    monkeypatch.setenv("TEAMU_HOME", str(tmp_path))
    monkeypatch.setenv("TEAMU_DATABASE_URL", db_url)
    flags = "--users 150 --posts 120 --days 400 --seed 5 --active-days 90 --popularity-tail 1.5 --taste-scale 0.5"
    flags += " --latent-tastes 4 --prolific-authors 2 --prolific-share 0.5 --long-thread-share 0.05"
    assert main(["seed", *flags.split()]) == 0
    with connect(db_url) as conn:
        by_author = conn.execute(
            "select count(*) from raw_supabase.posts group by user_id order by count(*) desc limit 2"
        ).fetchall()
        (span_days,) = conn.execute(
            "select extract(day from max(created_at) - min(created_at)) from raw_supabase.posts"
        ).fetchone()
        threads = conn.execute(
            "select count(*) from raw_supabase.comments group by post_id having count(*) >= 200"
        ).fetchall()
    assert sum(count for (count,) in by_author) >= 60
    assert span_days > 390
    assert len(threads) == 6
    truth = load_truth(tmp_path / "synthetic" / "ground_truth.npz")
    assert truth.post_taste_appeal.shape == (120, 4)
    assert 1.2 < truth.post_appeal.std() < 1.8
    assert (truth.user_active_until < truth.end).any()
    assert np.isfinite(truth.expected_scores(truth.user_ids, truth.post_ids)).all()
