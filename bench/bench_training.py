"""Benchmark: training throughput and peak memory of the two-tower model, in one run.

The model's input frames (user_features, post_features, interactions, shaped like the dbt marts) are built with
pandas straight from a synthetic world (views from "Post Viewed" events, upvotes from votes with value +1,
comments), without a database. Measures:
  (1) training examples/s of teamu_assets.model.train (streaming from Parquet, content + id features) against
      the TFRS tutorial's id-only two-tower (user-id StringLookup+Embedding query tower, post-id
      StringLookup+Embedding candidate tower, tfrs.tasks.Retrieval, Adam at the same learning rate, examples
      held in memory, shuffled, batched and cached as the tutorial does) on the same training examples, at the
      same embedding dimension and batch size. Steady state: the first (tracing) epoch is left out. Both run in
      this process under the same seed and op-determinism settings (train() sets them);
  (2) the peak RSS (VmHWM) of a whole training run (load features, train, validate, save) at 1x and at
      --scale x the base world (users and posts times the scale), each in a fresh subprocess, so the numbers
      don't mix; also the child's RSS just before training (Python, TensorFlow and the feature frames) and the
      growth from there. The claim: memory grows far less than the data, because training streams from Parquet.

    .venv/bin/python bench/bench_training.py [--dim 512] [--batch-size 1024] [--epochs 3] [--memory-epochs 1]
        [--users 2000] [--posts 1500] [--days 60] [--scale 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import teamu_assets  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is first imported)
from teamu_assets.contract import HISTORY_LENGTH, POST_VIEWED
from teamu_assets.model.dataset import build_training_examples, read_manifest, write_dataset
from teamu_assets.model.train import TrainParams
from teamu_assets.synthetic import SyntheticConfig, SyntheticDataset, generate

USER_FEATURES_FILE = "user_features.parquet"
POST_FEATURES_FILE = "post_features.parquet"
DATASET_DIR = "dataset"
QUICK = {"users": 300, "posts": 225, "days": 30, "dim": 64, "epochs": 2, "batch_size": 256}


@dataclass(frozen=True)
class ModelInputs:
    user_features: pd.DataFrame
    post_features: pd.DataFrame
    interactions: pd.DataFrame


def _lists_by(frame: pd.DataFrame, key: str, value: str, ids: pd.Series) -> list[list]:
    grouped = frame.groupby(key)[value].agg(list)
    return [grouped.get(i, []) for i in ids]


def model_inputs(world: SyntheticDataset) -> ModelInputs:
    """The marts the model reads, computed with pandas as dbt would: interactions (view, upvote, comment),
    the user features as of the end of the period and the post features with popularity and view time."""
    views = pd.DataFrame(
        [
            (
                int(e["properties"]["distinct_id"]),
                int(e["properties"]["post_id"]),
                e["properties"]["time"],
                e["properties"]["duration_ms"],
            )
            for e in world.events
            if e["event"] == POST_VIEWED
        ],
        columns=["user_id", "post_id", "time", "duration_ms"],
    )
    views["occurred_at"] = pd.to_datetime(views["time"], unit="s", utc=True)
    upvotes = world.votes.loc[world.votes["value"] == 1]
    interactions = pd.concat(
        [
            views[["user_id", "post_id", "occurred_at"]].assign(kind="view"),
            upvotes[["user_id", "post_id", "created_at"]]
            .rename(columns={"created_at": "occurred_at"})
            .assign(kind="upvote"),
            world.comments[["user_id", "post_id", "created_at"]]
            .rename(columns={"created_at": "occurred_at"})
            .assign(kind="comment"),
        ],
        ignore_index=True,
    )
    interactions["occurred_at"] = pd.to_datetime(interactions["occurred_at"], utc=True)
    interactions = interactions.drop_duplicates(["user_id", "post_id", "kind", "occurred_at"]).reset_index(drop=True)

    users = world.users
    user_features = users[["user_id", "bio", "passions", "latitude", "longitude", "created_at", "updated_at"]].copy()
    user_features["project_titles"] = _lists_by(world.projects, "user_id", "title", users["user_id"])
    user_features["created_post_titles"] = _lists_by(world.posts, "user_id", "title", users["user_id"])
    per_kind = interactions.groupby(["user_id", "kind"]).size().unstack(fill_value=0)
    for kind, column in (("view", "viewed_count"), ("upvote", "upvoted_count"), ("comment", "commented_count")):
        user_features[column] = users["user_id"].map(per_kind[kind]).fillna(0).astype(np.int64)
    newest_first = interactions.sort_values("occurred_at", ascending=False, kind="stable")
    recent = newest_first.drop_duplicates(["user_id", "post_id"]).groupby("user_id")["post_id"].agg(list)
    user_features["recent_post_ids"] = [recent.get(u, [])[:HISTORY_LENGTH] for u in users["user_id"]]

    posts = world.posts
    post_features = posts[
        ["post_id", "user_id", "title", "description", "is_local", "latitude", "longitude", "created_at", "updated_at"]
    ].copy()
    post_features["post_length"] = posts["description"].str.len().fillna(0).astype(np.int64)
    post_features["comments"] = _lists_by(world.comments, "post_id", "body", posts["post_id"])
    post_features["vote_count"] = posts["post_id"].map(world.votes.groupby("post_id")["value"].sum()).fillna(0)
    post_features["view_count"] = posts["post_id"].map(views.groupby("post_id").size()).fillna(0).astype(np.int64)
    post_features["avg_time_viewed_seconds"] = (
        posts["post_id"].map(views.groupby("post_id")["duration_ms"].mean() / 1000.0).fillna(0.0)
    )
    return ModelInputs(user_features, post_features, interactions)


def prepare(config: SyntheticConfig, work_dir: Path) -> int:
    """Generates the world, writes the feature frames and the training dataset under work_dir; returns the
    number of training examples."""
    inputs = model_inputs(generate(config))
    data = build_training_examples(
        inputs.interactions,
        inputs.user_features,
        inputs.post_features,
        pd.Timestamp(config.cutoff),
        history_length=HISTORY_LENGTH,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest = write_dataset(data, work_dir / DATASET_DIR)
    inputs.user_features.to_parquet(work_dir / USER_FEATURES_FILE)
    inputs.post_features.to_parquet(work_dir / POST_FEATURES_FILE)
    return manifest.rows["train"]


def _params(dim: int, batch_size: int, epochs: int) -> TrainParams:
    # patience = epochs: the run never stops early, so every requested epoch is measured.
    return TrainParams(epochs=epochs, batch_size=batch_size, embedding_dim=dim, patience=epochs)


def _train_ours(work_dir: Path, params: TrainParams) -> list[dict[str, float | int | None]]:
    from teamu_assets.model.train import train

    with tempfile.TemporaryDirectory(prefix="bench_training_model_") as model_dir:
        result = train(
            work_dir / DATASET_DIR,
            pd.read_parquet(work_dir / USER_FEATURES_FILE),
            pd.read_parquet(work_dir / POST_FEATURES_FILE),
            params,
            Path(model_dir),
            log=lambda _: None,
        )
    return result.history


def _steady_rate(examples: int, epoch_seconds: list[float]) -> float:
    """Examples per second over the epochs after the first (which traces the graph)."""
    steady = epoch_seconds[1:] or epoch_seconds
    return examples * len(steady) / sum(steady)


def _train_tutorial_id_only(work_dir: Path, params: TrainParams) -> tuple[int, list[float]]:
    """The TFRS basic-retrieval tutorial's model (teamu_assets.model.baselines) on the same examples."""
    from teamu_assets.model.baselines import train_id_only_two_tower

    manifest = read_manifest(work_dir / DATASET_DIR)
    examples = pd.read_parquet(manifest.path("train"), columns=["user_id", "post_id"])
    result = train_id_only_two_tower(
        examples["user_id"].to_numpy(),
        examples["post_id"].to_numpy(),
        embedding_dim=params.embedding_dim,
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        seed=params.seed,
    )
    return result.examples, result.epoch_seconds


def _memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc. Not ru_maxrss: on Linux a forked child starts
    with its parent's high-water mark, and execve keeps it, so it would report this benchmark's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} missing from /proc/self/status")


def child_memory_run(work_dir: Path, params: TrainParams) -> None:
    """In a fresh process: one training run; prints its RSS before training and its peak as a JSON line."""
    import tensorflow as tf  # noqa: F401  (loaded before the first reading, so that it counts as baseline)

    from teamu_assets.model.train import train

    user_features = pd.read_parquet(work_dir / USER_FEATURES_FILE)
    post_features = pd.read_parquet(work_dir / POST_FEATURES_FILE)
    before = _memory_mib("VmRSS")
    # train() logs once when its setup is done (vocabularies, feature tables, model built) and once after each
    # epoch (fit and validation): the peak at those moments splits the run into setup, epochs and saving.
    peaks_at_log: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_training_model_") as model_dir:
        result = train(
            work_dir / DATASET_DIR,
            user_features,
            post_features,
            params,
            Path(model_dir),
            log=lambda _: peaks_at_log.append(_memory_mib("VmHWM")),
        )
    summary = {
        "examples": result.train_examples,
        "rss_before_mib": before,
        "peak_after_setup_mib": peaks_at_log[0],
        "peak_after_epochs_mib": peaks_at_log[-1],
        "peak_rss_mib": _memory_mib("VmHWM"),
    }
    print(json.dumps(summary))


def _memory_in_subprocess(work_dir: Path, params: TrainParams) -> dict[str, float]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(work_dir),
        "--dim",
        str(params.embedding_dim),
        "--batch-size",
        str(params.batch_size),
        "--memory-epochs",
        str(params.epochs),
    ]
    completed = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension of both models")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="throughput epochs; the first is not counted")
    parser.add_argument("--memory-epochs", type=int, default=1, help="epochs of each memory run")
    parser.add_argument("--users", type=int, default=SyntheticConfig.users, help="users of the 1x world")
    parser.add_argument("--posts", type=int, default=SyntheticConfig.posts, help="posts of the 1x world")
    parser.add_argument("--days", type=int, default=SyntheticConfig.days)
    parser.add_argument("--scale", type=int, default=10, help="the large world is this many times the 1x one")
    parser.add_argument("--quick", action="store_true", help=f"a small smoke run: {QUICK}")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_memory_run(args.child, _params(args.dim, args.batch_size, args.memory_epochs))
        return
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces and is not counted")

    with tempfile.TemporaryDirectory(prefix="bench_training_") as scratch:
        base = SyntheticConfig(users=args.users, posts=args.posts, days=args.days)
        large = SyntheticConfig(users=args.users * args.scale, posts=args.posts * args.scale, days=args.days)
        base_dir, large_dir = Path(scratch) / "1x", Path(scratch) / f"{args.scale}x"
        _log(f"preparing the 1x world ({base.users} users, {base.posts} posts, {base.days} days)")
        base_examples = prepare(base, base_dir)

        params = _params(args.dim, args.batch_size, args.epochs)
        _log(f"throughput: our model, {args.epochs} epochs")
        history = _train_ours(base_dir, params)
        ours = _steady_rate(base_examples, [float(h["train_seconds"]) for h in history])
        _log(f"throughput: TFRS tutorial id-only model, {args.epochs} epochs")
        tutorial_examples, tutorial_seconds = _train_tutorial_id_only(base_dir, params)
        tutorial = _steady_rate(tutorial_examples, tutorial_seconds)

        memory_params = _params(args.dim, args.batch_size, args.memory_epochs)
        _log("memory: 1x training run in a subprocess")
        small = _memory_in_subprocess(base_dir, memory_params)
        _log(f"preparing the {args.scale}x world ({large.users} users, {large.posts} posts)")
        prepare(large, large_dir)
        _log(f"memory: {args.scale}x training run in a subprocess")
        big = _memory_in_subprocess(large_dir, memory_params)

    print(
        f"training throughput, {base_examples} examples, dim {args.dim}, batch {args.batch_size}, "
        f"epochs 2-{args.epochs} of {args.epochs}:"
    )
    print(f"  ours (content + ids, streamed from Parquet)  {ours:10,.0f} examples/s")
    print(f"  TFRS tutorial id-only two-tower (in memory)  {tutorial:10,.0f} examples/s")
    print(f"  ratio ours/tutorial                          {ours / tutorial:10.2f}")
    print(f"peak RSS of a training run ({args.memory_epochs} epoch(s), dim {args.dim}, fresh process each):")
    for label, run in (("1x", small), (f"{args.scale}x", big)):
        print(
            f"  {label:>4}: {int(run['examples']):9,d} examples  peak {run['peak_rss_mib']:7,.0f} MiB  "
            f"(before training {run['rss_before_mib']:5,.0f}, peak after setup {run['peak_after_setup_mib']:5,.0f}, "
            f"after epochs {run['peak_after_epochs_mib']:5,.0f})"
        )
    growth_small = small["peak_rss_mib"] - small["rss_before_mib"]
    growth_big = big["peak_rss_mib"] - big["rss_before_mib"]
    print(
        f"  ratio {args.scale}x/1x: examples {big['examples'] / small['examples']:.1f}, "
        f"peak RSS {big['peak_rss_mib'] / small['peak_rss_mib']:.2f}, "
        f"growth above the pre-training RSS {growth_big / growth_small:.2f}"
    )


if __name__ == "__main__":
    main()
