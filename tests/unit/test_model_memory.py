"""Training memory stays bounded at real shapes: a prolific author and a long comment thread.

A brand account that authored thousands of posts has a profile text (its created post titles) hundreds of
thousands of characters long, and a long thread gives one post thousands of comments. Training once allocated a
fixed-width string array sized by the longest text for every text, which took 20 GiB on such data. The run
happens in a child process, so its peak RSS is its own (TensorFlow included).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

PROLIFIC_POSTS = 10_000
THREAD_COMMENTS = 5_000
PEAK_RSS_LIMIT_MIB = 2048


def _train_with_prolific_author_and_long_thread(work_dir: Path) -> dict[str, float]:
    from teamu_assets.model.dataset import build_training_examples, write_dataset
    from teamu_assets.model.train import TrainParams, train
    from tests.unit.model_fixtures import make_world

    world = make_world(warm_users=120, cold_users=10, posts=200)
    posts, users = world.post_features.copy(), world.user_features.copy()
    author = int(users["user_id"].iloc[0])
    first_id = int(posts["post_id"].max()) + 1
    brand_posts = pd.DataFrame(
        {
            "post_id": range(first_id, first_id + PROLIFIC_POSTS),
            "user_id": author,
            "title": [f"catalogue entry number {i} with a long descriptive title" for i in range(PROLIFIC_POSTS)],
            "description": "a catalogue item",
            "post_length": 16,
            "comments": [[] for _ in range(PROLIFIC_POSTS)],
            "vote_count": 0,
            "view_count": 0,
            "is_local": False,
            "latitude": None,
            "longitude": None,
            "created_at": world.cutoff - pd.Timedelta(days=30),
        }
    )
    posts = pd.concat([posts, brand_posts.astype({"latitude": float, "longitude": float})], ignore_index=True)
    users.at[0, "created_post_titles"] = list(brand_posts["title"])
    thread = [f"comment {i}: I have thoughts on this project and some more words" for i in range(THREAD_COMMENTS)]
    posts.at[0, "comments"] = thread

    data = build_training_examples(world.interactions, users, posts, world.cutoff)
    dataset_dir = write_dataset(data, work_dir / "dataset").directory
    params = TrainParams(epochs=1, batch_size=128, embedding_dim=16, feature_dim=16, hidden_units=32)
    train(Path(dataset_dir), users, posts, params, work_dir / "model", log=lambda _: None)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mib": peak_kib / 1024, "posts": len(posts), "profile_chars": sum(map(len, brand_posts["title"]))}


def test_prolific_author_and_long_thread_train_in_bounded_memory(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert figures["posts"] > PROLIFIC_POSTS
    assert figures["profile_chars"] > 500_000
    assert figures["peak_rss_mib"] < PEAK_RSS_LIMIT_MIB, figures


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    print(json.dumps(_train_with_prolific_author_and_long_thread(Path(sys.argv[1]))))
