"""Benchmark: peak memory of the training data build and of a training run at 1x, 10x and 100x the demo's
interactions and over a 20-year span. The aim: 10x the data costs at most 2x the memory.

Worlds (teamu_assets.synthetic, the demo's knobs otherwise):
  1x    the demo world: 2,000 users, 1,500 posts, 60 days (about 62k interactions);
  10x   users and posts times 10 over the same 60 days (interactions grow with users, so about 10x);
  100x  users and posts times 100;
  20y   the demo population (2,000 users, 1,500 posts) over 7,300 days, each user active 365 days on average
        (active_days): users come and go across twenty years (about 380k interactions).

Stages, each in a fresh child process so that its peak RSS is its own (TensorFlow included):
  world    generate the world and compute the marts the model reads (interactions, user_features,
           post_features) with pandas as dbt would (bench_training.model_inputs): the Supabase/Mixpanel load, dbt
           and the Postgres read of the product are skipped; the frames are written to Parquet;
  dataset  what the training_dataset asset does after reading the marts: the cutoff at the last 20% of the
           interaction span, build_training_examples and write_dataset (Python without TensorFlow, as the asset);
  train    teamu_assets.model.train.train() with the product's default TrainParams except epochs=1.
The figure is VmHWM from /proc/self/status, the peak RSS of the child alone: ru_maxrss is not, because on Linux
a child started by subprocess (vfork + exec) inherits its parent's high-water mark. "loaded" is the child's RSS
after reading its inputs (and importing TensorFlow, for train): the figures above it are the stage's own.

With --max-train-batches N (and --max-validation-batches M), the training stage of the worlds named by --bound
(default 100x) trains on the first N batches of the epoch (the training dataset's take(N)), and each of train()'s
validation passes reads the first M record batches (1,024 rows each) of the validation split: every batch has
the product's size and the setup (vocabularies, feature tables, towers, all posts embedded for each validation
pass) is the full world's; only the number of batches is cut, so the peak is the product's unless it grows over
the batches. Such rows are labelled "bounded". The product's defaults are never changed.

    .venv/bin/python bench/bench_training_memory.py [--scales 1x,10x,100x,20y]
        [--max-train-batches 200 --max-validation-batches 20 --bound 100x]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from teamu_assets.contract import HISTORY_LENGTH

BENCH_DIR = Path(__file__).resolve().parent
INTERACTIONS_FILE = "interactions.parquet"
USER_FEATURES_FILE = "user_features.parquet"
POST_FEATURES_FILE = "post_features.parquet"
DATASET_DIR = "dataset"
# The training_dataset asset's defaults (teamu_assets/assets/ml.py DatasetConfig; the history length is the
# contract's).
HOLDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class World:
    name: str
    users: int
    posts: int
    days: int
    active_days: float = 0.0


DEMO = World("1x", users=2000, posts=1500, days=60)
WORLDS: dict[str, World] = {
    "1x": DEMO,
    "10x": World("10x", users=DEMO.users * 10, posts=DEMO.posts * 10, days=DEMO.days),
    "100x": World("100x", users=DEMO.users * 100, posts=DEMO.posts * 100, days=DEMO.days),
    "20y": World("20y", users=DEMO.users, posts=DEMO.posts, days=7300, active_days=365.0),
}


def _memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _stage_world(world: World, work_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH_DIR))
    from bench_training import model_inputs

    from teamu_assets.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(users=world.users, posts=world.posts, days=world.days, active_days=world.active_days)
    inputs = model_inputs(generate(config))
    work_dir.mkdir(parents=True, exist_ok=True)
    inputs.interactions.to_parquet(work_dir / INTERACTIONS_FILE)
    inputs.user_features.to_parquet(work_dir / USER_FEATURES_FILE)
    inputs.post_features.to_parquet(work_dir / POST_FEATURES_FILE)
    return {"interactions": len(inputs.interactions)}


def _stage_dataset(work_dir: Path) -> dict[str, Any]:
    from teamu_assets.model.dataset import build_training_examples, write_dataset

    interactions = pd.read_parquet(work_dir / INTERACTIONS_FILE)
    user_features = pd.read_parquet(work_dir / USER_FEATURES_FILE)
    post_features = pd.read_parquet(work_dir / POST_FEATURES_FILE)
    loaded = _memory_mib("VmRSS")
    # As the training_dataset asset: the cutoff leaves the last HOLDOUT_FRACTION of the span for evaluation.
    start, end = interactions["occurred_at"].min(), interactions["occurred_at"].max()
    cutoff = (end - (end - start) * HOLDOUT_FRACTION).floor("h")
    data = build_training_examples(
        interactions,
        user_features,
        post_features,
        cutoff,
        history_length=HISTORY_LENGTH,
        validation_fraction=VALIDATION_FRACTION,
    )
    manifest = write_dataset(data, work_dir / DATASET_DIR)
    return {"loaded_mib": loaded, "examples": sum(manifest.rows.values()), "rows": manifest.rows}


def _bounded(function: Callable[..., Any], limit: int, wrap: Callable[[Any, int], Any]) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        return wrap(function(*args, **kwargs), limit)

    return bounded


def _first(batches: Iterator[Any], limit: int) -> Iterator[Any]:
    for index, batch in enumerate(batches):
        if index == limit:
            return
        yield batch


def _stage_train(work_dir: Path, max_train_batches: int | None, max_validation_batches: int | None) -> dict[str, Any]:
    import tensorflow as tf  # noqa: F401  (imported before the "loaded" reading: it is the stage's baseline)

    from teamu_assets.model import train as training
    from teamu_assets.model.params import TrainParams

    if max_train_batches is not None:
        # The training dataset train() builds, cut to its first batches (bench-only; see the module docstring).
        training.tf_example_dataset = _bounded(training.tf_example_dataset, max_train_batches, lambda d, n: d.take(n))
    if max_validation_batches is not None:
        training.iter_example_batches = _bounded(training.iter_example_batches, max_validation_batches, _first)
    user_features = pd.read_parquet(work_dir / USER_FEATURES_FILE)
    post_features = pd.read_parquet(work_dir / POST_FEATURES_FILE)
    loaded = _memory_mib("VmRSS")
    # Each training logs "training on ..." when its setup is done (vocabularies, feature tables, towers): the peak
    # then is the setup's. (The default trains once per batch size tried: the first setup is the one reported.)
    peaks_at_log: list[float] = []

    def log(message: str) -> None:
        if message.startswith("training on "):
            peaks_at_log.append(_memory_mib("VmHWM"))
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_training_memory_model_") as model_dir:
        result = training.train(
            work_dir / DATASET_DIR, user_features, post_features, TrainParams(epochs=1), Path(model_dir), log
        )
    return {"loaded_mib": loaded, "setup_peak_mib": peaks_at_log[0], "train_examples": result.train_examples}


def _child(stage: str, world: World, work_dir: Path, args: argparse.Namespace) -> None:
    """Runs one stage in this (fresh) process and prints its figures as the last line of stdout."""
    started = time.perf_counter()
    if stage == "world":
        figures = _stage_world(world, work_dir)
    elif stage == "dataset":
        figures = _stage_dataset(work_dir)
    else:
        figures = _stage_train(work_dir, args.max_train_batches, args.max_validation_batches)
    figures.update(peak_mib=_memory_mib("VmHWM"), seconds=time.perf_counter() - started)
    print(json.dumps(figures))


def _run_child(stage: str, world: World, work_dir: Path, args: argparse.Namespace, bounded: bool) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--world", world.name]
    command += ["--work-dir", str(work_dir)]
    if bounded:
        for flag in ("max_train_batches", "max_validation_batches"):
            if getattr(args, flag) is not None:
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    completed = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1x,10x,100x,20y", help=f"comma-separated, of {', '.join(WORLDS)}")
    parser.add_argument("--max-train-batches", type=int, help="bound the training of the large worlds (see above)")
    parser.add_argument("--max-validation-batches", type=int, help="bound their validation likewise")
    parser.add_argument("--bound", default="100x", help="comma-separated worlds the two bounds apply to")
    parser.add_argument("--child", choices=("world", "dataset", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--world", choices=list(WORLDS), help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, WORLDS[args.world], args.work_dir, args)
        return
    names = [name.strip() for name in args.scales.split(",")]
    bounded_worlds = {name.strip() for name in args.bound.split(",")}
    unknown = sorted(set(names) - set(WORLDS)) + sorted(bounded_worlds - set(WORLDS))
    if unknown:
        parser.error(f"unknown scales {unknown}; known: {list(WORLDS)}")
    bounds = args.max_train_batches is not None or args.max_validation_batches is not None

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_training_memory_") as scratch:
        for name in names:
            world, work_dir = WORLDS[name], Path(scratch) / name
            bounded = bounds and name in bounded_worlds
            _log(f"{name}: {asdict(world)}: generating the world and its marts")
            built = _run_child("world", world, work_dir, args, bounded)
            _log(f"{name}: {built['interactions']:,} interactions; building the training data")
            dataset = _run_child("dataset", world, work_dir, args, bounded)
            _log(f"{name}: {dataset['rows']}; training one epoch{' (bounded)' if bounded else ''}")
            trained = _run_child("train", world, work_dir, args, bounded)
            results[name] = {"world": built, "dataset": dataset, "train": trained, "bounded": bounded}
            _log(json.dumps({name: results[name]}))
    _report(results)


def _report(results: dict[str, dict[str, Any]]) -> None:
    print("peak RSS (VmHWM) of each stage in a fresh process, MiB; 'loaded': RSS after reading the inputs;")
    print("'setup': train()'s peak once its vocabularies, feature tables and towers are built; s: wall seconds")
    print(
        f"{'scale':>6} {'interactions':>12} {'examples':>10} {'trained on':>10} | {'dataset loaded':>14} "
        f"{'peak':>6} {'s':>6} | {'train loaded':>12} {'setup':>6} {'peak':>6} {'s':>6} | {'world peak':>10}"
    )
    for name, run in results.items():
        dataset, trained = run["dataset"], run["train"]
        label = "bounded" if run["bounded"] else f"{trained['train_examples']:,}"
        print(
            f"{name:>6} {run['world']['interactions']:>12,} {dataset['examples']:>10,} {label:>10} | "
            f"{dataset['loaded_mib']:>14,.0f} {dataset['peak_mib']:>6,.0f} {dataset['seconds']:>6.1f} | "
            f"{trained['loaded_mib']:>12,.0f} {trained['setup_peak_mib']:>6,.0f} {trained['peak_mib']:>6,.0f} "
            f"{trained['seconds']:>6.1f} | {run['world']['peak_mib']:>10,.0f}"
        )
    base = results.get("1x")
    if base is None:
        return
    for name, run in results.items():
        if name == "1x":
            continue
        ratio = run["world"]["interactions"] / base["world"]["interactions"]
        print(
            f"ratio {name}/1x: interactions {ratio:.1f}, peak RSS dataset "
            f"{run['dataset']['peak_mib'] / base['dataset']['peak_mib']:.2f}, train "
            f"{run['train']['peak_mib'] / base['train']['peak_mib']:.2f}"
            + (" (training bounded)" if run["bounded"] else "")
        )


if __name__ == "__main__":
    main()
