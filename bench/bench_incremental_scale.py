"""Benchmark: the incremental refresh costs what changed, not what is stored.

For each size in --sizes (users; posts = --posts-per-user x users; --days of synthetic activity) the benchmark
builds, in a scratch database of its own on the running server and a temporary TEAMU_HOME:
  raw_supabase tables and Mixpanel export files (teamu_assets.synthetic), the files ingested
  (teamu_assets.ingest), a full dbt build of the staging/intermediate/marts models (through Dagster, without
  the dbt tests), a promoted model in the registry (a copy of the newest trained model under
  TEAMU_HOME/artifacts/models, or --model: nothing is trained here), and full user and post embeddings with it.
Before the dbt build each event's load time is set to 01:00 UTC the day after its day, as if each day's export
file had been loaded the next morning (the live export's cadence): int_interactions re-reads every event loaded
within dbt's incremental_lookback (1 hour) of the newest load, so with the whole history loaded at once every
refresh would re-read all of it (measured: int_interactions 7.6 s a refresh at 100k users, 0.8 s at 10k); with
daily files it re-reads the last day's file.
All worlds are built first; then --trials + 1 trials per world, the first untimed (it warms the process, and moves
the Supabase watermarks from the synthetic period's end to now, which re-touches the users and posts active in that
period's last hour), the others in turns over the sizes (a burst of other work on the shared machine then slows
every size alike). dbt's partial-parse state is kept per database (teamu_assets/assets/dbt.py), so each world
parses only once. Each trial inserts one upvote by each of --changed distinct existing users
on a random post by someone else (one transaction, created_at now()) and runs incremental_refresh_job from
teamu_assets.jobs (its own selection, config and in-process executor) with execute_in_process. Reported: the
run's wall time, each step's time (Dagster's STEP_SUCCESS durations), each dbt model's time, the rows each
embedding step re-embedded; and, per figure, the median over the trials of each size divided by that of the first
size (the baseline, measured in the same run). A ratio near 1 means the cost does not grow with the tables. All
runs are in this one process, so the per-run process start-up and TensorFlow import that a daemon-launched run also
pays (constant in the table size) are not in the figures.
Scratch databases are dropped at the end (also on error) unless --keep.

    nice -n 19 .venv/bin/python bench/bench_incremental_scale.py [--sizes 10000 100000] [--trials 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    materialize,
)

from teamu_assets import definitions
from teamu_assets.db import bootstrap, features, registry
from teamu_assets.db.connection import connect, resolve_url, scratch_database
from teamu_assets.db.store import EmbeddingStore
from teamu_assets.ingest import load_landing_folder
from teamu_assets.jobs import incremental_refresh_job
from teamu_assets.settings import Settings, default_landing_dir
from teamu_assets.synthetic import SyntheticConfig, generate, write_mixpanel_files, write_supabase

EMBEDDING_STEPS = {"user": AssetKey(["ml", "user_embeddings"]), "post": AssetKey(["ml", "post_embeddings"])}
# Every dbt model, without the dbt tests: the incremental job selects only the incremental models, which read the
# staging views.
SETUP_SELECTION = AssetSelection.groups("staging", "intermediate", "marts").without_checks()


@dataclass
class Trial:
    total_seconds: float
    steps: dict[str, float]  # step key -> seconds, in execution order
    dbt_models: dict[str, float]  # model -> dbt's execution seconds
    reembedded: dict[str, int]  # "user"/"post" -> rows written


@dataclass
class SizeResult:
    users: int
    posts: int
    interactions: int
    setup_seconds: dict[str, float]
    trials: list[Trial] = field(default_factory=list)


def newest_model(settings: Settings) -> Path:
    # Model versions are UTC timestamps (tt-YYYYmmddTHHMMSSZ): the last name is the newest.
    models = sorted(path for path in (settings.artifacts_dir / "models").glob("tt-*") if path.is_dir())
    if not models:
        raise SystemExit(f"no trained model under {settings.artifacts_dir / 'models'}: run `make demo` or pass --model")
    return models[-1]


def build_world(url: str, home: Path, model_dir: Path, users: int, posts: int, args: argparse.Namespace) -> SizeResult:
    """Everything incremental_refresh_job needs, built the way the full refresh would, except the training."""
    from teamu_assets.model.train import embed_posts, embed_users, read_model_config

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    bootstrap.prepare_app_database(url)
    dataset = generate(SyntheticConfig(users=users, posts=posts, days=args.days, seed=args.seed))
    write_supabase(url, dataset)
    write_mixpanel_files(dataset, default_landing_dir(home), seed=args.seed)
    seconds["seed"] = time.perf_counter() - started

    started = time.perf_counter()
    load_landing_folder(url, default_landing_dir(home))
    with connect(url) as conn:  # each day's file as if loaded the next morning (see the module's docstring)
        conn.execute(
            "update raw_mixpanel.events set loaded_at = date_trunc('day', event_time, 'UTC') + interval '25 hours'"
        )
    built = materialize(
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        selection=SETUP_SELECTION,
        resources=definitions.build_resources(home, url),
        instance=DagsterInstance.ephemeral(),
    )
    if not built.success:
        raise RuntimeError("dbt build failed")
    seconds["ingest+dbt"] = time.perf_counter() - started

    started = time.perf_counter()
    # A copy: the registry points at it, and nothing under the project's TEAMU_HOME may change.
    model_copy = home / "artifacts" / "models" / model_dir.name
    shutil.copytree(model_dir, model_copy)
    config = read_model_config(model_copy)
    registry.register_model_version(url, model_dir.name, dict(config.get("params", {})), str(model_copy))
    # What the evaluation gate records when it approves; the metrics are not the point here.
    registry.record_evaluation(url, model_dir.name, metrics={}, baselines={}, segments={}, promote=True, report_path="")
    user_ids, user_vectors = embed_users(model_copy, features.read_user_features(url))
    post_ids, post_vectors = embed_posts(model_copy, features.read_post_features(url), as_of=features.data_clock(url))
    # As the full refresh's embedding steps do: both kinds staged, then published with the promotion.
    with EmbeddingStore(url) as store:
        store.install(int(config["tower"]["embedding_dim"]))
        store.write("user", user_ids, user_vectors, model_dir.name, mode="publish")
        store.write("post", post_ids, post_vectors, model_dir.name, mode="publish")
    seconds["embeddings"] = time.perf_counter() - started
    return SizeResult(
        users=features.row_count(url, "marts.user_features"),
        posts=features.row_count(url, "marts.post_features"),
        interactions=features.row_count(url, "marts.interactions"),
        setup_seconds=seconds,
    )


def insert_upvotes(url: str, rng: np.random.Generator, changed: int) -> None:
    """One upvote by each of `changed` distinct users, each on a random post by someone else, in one transaction."""
    with connect(url) as conn:
        users = np.array([row[0] for row in conn.execute("select user_id from raw_supabase.users")])
        posts = np.array(conn.execute("select post_id, user_id from raw_supabase.posts").fetchall())
        voters = rng.choice(users, size=changed, replace=False)
        targets = posts[rng.integers(0, len(posts), size=changed)]
        own = targets[:, 1] == voters
        while own.any():  # a vote on one's own post is rejected by dbt (self_interaction): draw again
            targets[own] = posts[rng.integers(0, len(posts), size=int(own.sum()))]
            own = targets[:, 1] == voters
        first_id = conn.execute("select coalesce(max(vote_id), 0) + 1 from raw_supabase.votes").fetchone()[0]
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into raw_supabase.votes (vote_id, post_id, user_id, value, created_at) "
                "values (%s, %s, %s, 1, now())",
                [
                    (first_id + i, int(post), int(voter))
                    for i, (post, voter) in enumerate(zip(targets[:, 0], voters, strict=True))
                ],
            )


def incremental_job(home: Path, url: str) -> JobDefinition:
    """incremental_refresh_job as the code location defines it, with resources pointing at the scratch world."""
    defs = Definitions(
        assets=definitions.defs.assets,
        asset_checks=definitions.defs.asset_checks,
        jobs=[incremental_refresh_job],
        resources=definitions.build_resources(home, url),
    )
    return defs.resolve_job_def(incremental_refresh_job.name)


def run_once(job: JobDefinition) -> Trial:
    started = time.perf_counter()
    result: ExecuteInProcessResult = job.execute_in_process(instance=DagsterInstance.ephemeral())
    total = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("incremental_refresh failed")
    steps = {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_SUCCESS
    }
    dbt_models: dict[str, float] = {}
    reembedded = {kind: 0 for kind in EMBEDDING_STEPS}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = {name: value.value for name, value in materialization.metadata.items()}
        if "Execution Duration" in metadata:
            dbt_models[materialization.asset_key.to_user_string()] = float(metadata["Execution Duration"])
        for kind, key in EMBEDDING_STEPS.items():
            if materialization.asset_key == key:
                reembedded[kind] = int(metadata.get("rows", 0))
    return Trial(total, steps, dbt_models, reembedded)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def figures(result: SizeResult) -> dict[str, float]:
    """Median over the trials of every reported figure, keyed by its row label."""
    out = {"total (wall)": median([t.total_seconds for t in result.trials])}
    for step in result.trials[0].steps:
        out[f"step {step}"] = median([t.steps.get(step, float("nan")) for t in result.trials])
    for model in result.trials[0].dbt_models:
        out[f"dbt {model}"] = median([t.dbt_models.get(model, float("nan")) for t in result.trials])
    return out


def report(results: list[SizeResult], args: argparse.Namespace) -> str:
    lines = [
        f"changed users per trial: {args.changed}; trials per size: {args.trials}; days: {args.days}; "
        f"posts per user: {args.posts_per_user}",
        "",
        "| users | posts | interactions | setup (seed / ingest+dbt / embeddings) |",
        "|---:|---:|---:|---|",
    ]
    for r in results:
        setup = " / ".join(f"{seconds:.0f} s" for seconds in r.setup_seconds.values())
        lines.append(f"| {r.users:,} | {r.posts:,} | {r.interactions:,} | {setup} |")
    step_names = list(results[0].trials[0].steps)
    lines += ["", "Each trial (seconds):", ""]
    lines.append("| users | trial | total | " + " | ".join(step_names) + " | re-embedded users / posts |")
    lines.append("|---:|---:|---:|" + "---:|" * len(step_names) + "---:|")
    for r in results:
        for number, trial in enumerate(r.trials, 1):
            steps = " | ".join(f"{trial.steps.get(step, float('nan')):.2f}" for step in step_names)
            lines.append(
                f"| {r.users:,} | {number} | {trial.total_seconds:.2f} | {steps} | "
                f"{trial.reembedded['user']} / {trial.reembedded['post']} |"
            )
    baseline = figures(results[0])
    header = " | ".join(f"{r.users:,} users (s)" for r in results)
    ratios = " | ".join(f"ratio {r.users:,} / {results[0].users:,}" for r in results[1:])
    lines += ["", "Medians over the trials, and the ratio to the smallest size:", ""]
    lines.append(f"| figure | {header} | {ratios} |")
    lines.append("|---|" + "---:|" * (len(results) * 2 - 1))
    per_size = [figures(r) for r in results]
    for label in baseline:
        values = " | ".join(f"{f.get(label, float('nan')):.2f}" for f in per_size)
        shares = " | ".join(f"{f.get(label, float('nan')) / baseline[label]:.2f}x" for f in per_size[1:])
        lines.append(f"| {label} | {values} | {shares} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="users per world")
    parser.add_argument("--posts-per-user", type=float, default=0.75)
    parser.add_argument("--days", type=int, default=14, help="days of synthetic activity")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--changed", type=int, default=100, help="distinct users with a new upvote per trial")
    parser.add_argument("--model", type=Path, help="a trained model folder (default: the newest in TEAMU_HOME)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()

    settings = Settings.from_env()
    server_url = resolve_url(settings.database_url, settings.pgdata)
    model_dir = args.model or newest_model(settings)
    print(f"model: {model_dir}")
    results: list[SizeResult] = []
    with ExitStack() as cleanup:
        worlds: list[tuple[SizeResult, str, JobDefinition, np.random.Generator]] = []
        for size in args.sizes:
            home = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="teamu_bench_scale_")))
            url = cleanup.enter_context(scratch_database(server_url, f"teamu_bench_scale_{size}", keep=args.keep))
            result = build_world(url, home, model_dir, size, max(1, round(size * args.posts_per_user)), args)
            setup = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.setup_seconds.items())
            print(f"{size} users: {result.posts} posts, {result.interactions} interactions; setup {setup}", flush=True)
            worlds.append((result, url, incremental_job(home, url), np.random.default_rng([args.seed, size])))
            results.append(result)
        for _, url, job, rng in worlds:
            insert_upvotes(url, rng, args.changed)
            run_once(job)  # untimed: see the module's docstring
        # Round robin over the sizes: on a shared machine a burst of other work then slows every size alike.
        for number in range(1, args.trials + 1):
            for result, url, job, rng in worlds:
                insert_upvotes(url, rng, args.changed)
                trial = run_once(job)
                result.trials.append(trial)
                steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in trial.steps.items())
                print(
                    f"  {result.users} users, trial {number}: {trial.total_seconds:.2f} s ({steps}); re-embedded "
                    f"{trial.reembedded['user']} users, {trial.reembedded['post']} posts",
                    flush=True,
                )
    print()
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
