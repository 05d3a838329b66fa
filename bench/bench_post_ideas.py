"""Is the post-ideas ranker worth trusting? The ideas' score (the candidate tower's predicted engagement blended
with the author's past engagement as chosen on the training period, teamu_assets.ideas.blend) of posts that
were new in the evaluation period (cold start), against the engagement they really got; beside the tower alone
and the author's record alone.

Runs against the project's own database after `make demo` (a promoted model, its dataset and marts must exist).
The model judged is the promoted version's evaluated model (trained before the cutoff: the refit served beside it
has seen the evaluation period). The posts: every post created in the evaluation period at least --window-days
before its end (so each had the whole window), taken as the ideas are (teamu_assets.ideas.blend.cold_start): an
id the model doesn't know, no comments, votes or views, age 0, only their text, place and locality. The end of the
period is the dataset's (its evaluation split's last interaction), so rows written later (benchmarks, the online
updater) change nothing.

- real engagement: distinct users who engaged with the post (view, upvote or comment) within --window-days of
  its creation; "high" = above the median of these posts;
- chosen ranker: the ideas' score, RankerBlend.score of the tower's and the author's figures below with the
  tower weight chosen by validate_on_training_period: the same measure on the posts new in the last quarter of
  the training period, scored as of its start, their engagement before the cutoff (never the evaluation
  period's);
- model, the tower alone: the expected engagements from an audience (predicted_engagement), the audience being
  every user who had signed up by the cutoff, embedded by the query tower as of the cutoff, each user's softmax
  normalised over the posts live at the cutoff (embedded with their counts then), times the user's engagement
  rate at the cutoff (teamu_assets.ideas.context.engagement_rates);
- model, every user alike: the same sum with every user's share counted once (the ranker before the rates);
- model, mean score: the mean over the same users of user . post (the raw score, unnormalised);
- author popularity: engaged users per post over the author's posts before the cutoff (0 for a first post), and
  the author's total engaged users before the cutoff;
- on synthetic data (TEAMU_HOME/synthetic/ground_truth.npz), two ceilings from the generator's truth: the
  oracle (expected views by everyone within the window, latent quality and appeal included) and the content
  oracle (the same with quality, appeal and taste appeal set to 0: topic, place and time only, the most a model
  reading a new post's content could know).
Metrics: ROC-AUC of each predictor for "high", Spearman correlation with the real engagement; a 95% bootstrap
interval over posts (1,000 resamples, seeded) for each, and a paired one for the chosen ranker minus each other
predictor.

--real runs the same measure on public data sets (bench_real_data.py's readers, teamu_assets.realdata's
mappings) instead of the demo: each whole data set goes through the raw contract into a database of its own
(<--db-prefix>_<data set>) and the product's full_refresh job (default model config, without the refit: only
the evaluated model is measured), one data set after the other; then each is measured. Last.fm's descriptions
are its tags (see descriptions_as_of): a post from the evaluation period is described by the tags of its first
tagging only. With --workdir the trained runs (TEAMU_HOME per data set, and the databases) are kept and a later
run measures them again without training; without it, both are removed. No oracle: the truth is synthetic only.

--held-out-validation also trains, per data set, the evaluated model's recipe on the interactions before the
validation slice only, and reports the ranker chosen on the slice scored by that model (held_out_validation):
how much the product's validation, scored by a model that trained on the slice, flatters the tower.

    .venv/bin/python bench/bench_post_ideas.py [--window-days 3] [--held-out-validation] [--out PATH]
    nice -n 10 .venv/bin/python bench/bench_post_ideas.py --real [lastfm se-quantumcomputing se-cardano]
        [--workdir DIR] [--db-prefix NAME] [--data-dir DIR] [--window-days D] [--held-out-validation] [--seed N]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_real_data import DATASETS, default_data_dir, read_dataset, run_full_refresh
from psycopg import sql

import teamu_assets  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is first imported)
from teamu_assets.db import bootstrap, features, registry
from teamu_assets.db.connection import connect, drop_database, ensure_pgvector, resolve_url, with_database
from teamu_assets.evaluation.metrics import roc_auc, spearman
from teamu_assets.ideas.blend import (
    RankerBlend,
    author_priors,
    choose_blend,
    cold_start,
    post_activity_at,
    validate_on_training_period,
    validation_slice,
)
from teamu_assets.model.pipeline import evaluated_model_dir
from teamu_assets.realdata import RealDataset, write_real_dataset
from teamu_assets.realdata.dataset import tag_descriptions
from teamu_assets.settings import Settings, default_landing_dir

RESAMPLES = 1_000
SEED = 0
# Engagement is counted this long after a post's creation. Last.fm's dates are months (each tagging placed
# somewhere inside its month), so its window spans three of them.
DEFAULT_WINDOW_DAYS = {"demo": 3.0, "se-quantumcomputing": 3.0, "se-cardano": 3.0, "lastfm": 90.0}


def oracles(truth_path: Path, posts: pd.DataFrame, window: pd.Timedelta) -> dict[str, np.ndarray]:
    """The generator's expected views of each post by every user within its window: with everything, and with
    the latent quality and appeal zeroed (content only). Empty when the file is missing or another world's."""
    from teamu_assets.synthetic import load_truth

    if not truth_path.exists():
        return {}
    truth = load_truth(truth_path)
    if not np.isin(posts["post_id"].to_numpy(), truth.post_ids).all():
        return {}
    content_only = dataclasses.replace(
        truth,
        post_quality=np.zeros_like(truth.post_quality),
        post_appeal=np.zeros_like(truth.post_appeal),
        post_taste_appeal=np.zeros_like(truth.post_taste_appeal),
    )
    found: dict[str, np.ndarray] = {}
    for name, world in (("oracle (truth, latent appeal included)", truth), ("content oracle (truth)", content_only)):
        values = []
        for post_id, created in zip(posts["post_id"], posts["created_at"], strict=True):
            start = int(pd.Timestamp(created).timestamp())
            window_end = start + int(window.total_seconds())
            values.append(
                world.expected_scores(
                    world.user_ids, np.array([post_id]), window_start=start, window_end=window_end
                ).sum()
            )
        found[name] = np.array(values)
    return found


def metrics(engagement: np.ndarray, high: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(high, scores), "spearman": spearman(scores, engagement)}


def with_intervals(
    engagement: np.ndarray, high: np.ndarray, predictors: dict[str, np.ndarray], reference: str
) -> dict[str, dict[str, Any]]:
    """Each predictor's metrics with a bootstrap 95% interval over posts; the others also get the paired interval
    of the reference (the chosen ranker) minus them (the same resampled posts for both)."""
    rng = np.random.default_rng(SEED)
    samples = [rng.integers(0, len(engagement), len(engagement)) for _ in range(RESAMPLES)]
    draws = {name: [metrics(engagement[s], high[s], scores[s]) for s in samples] for name, scores in predictors.items()}
    results: dict[str, dict[str, Any]] = {}
    for name in (reference, *(name for name in predictors if name != reference)):
        entry: dict[str, Any] = dict(metrics(engagement, high, predictors[name]))
        for metric in ("auc", "spearman"):
            values = np.array([d[metric] for d in draws[name]])
            entry[f"{metric}_ci"] = np.nanpercentile(values, [2.5, 97.5]).tolist()
            if name != reference:
                pairs = zip(draws[reference], draws[name], strict=True)
                differences = np.array([r[metric] - d[metric] for r, d in pairs])
                entry[f"chosen_minus_{metric}"] = results[reference][metric] - entry[metric]
                entry[f"chosen_minus_{metric}_ci"] = np.nanpercentile(differences, [2.5, 97.5]).tolist()
        results[name] = entry
    return {name: results[name] for name in predictors}


def held_out_validation(
    out_dir: Path,
    url: str,
    model_dir: Path,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    cutoff: pd.Timestamp,
    window: pd.Timedelta,
) -> RankerBlend:
    """The blend chosen on the validation slice scored by a model that never trained on it: the recipe of the
    model at model_dir (its registered parameters) trained on the interactions before the slice's start only
    (the dataset cut there, early stopping on its last engagements as the product's). Trained once into out_dir,
    then reused. The product's choice has no such model (one more training per model): this says how much the
    slice flatters the tower the product validates."""
    from teamu_assets.model.dataset import build_training_examples, write_dataset
    from teamu_assets.model.params import TrainParams
    from teamu_assets.model.train import MODEL_CONFIG_FILE, train

    seen = interactions.loc[interactions["occurred_at"] < cutoff]
    start, end = validation_slice(seen, cutoff)
    model = out_dir / "model"
    if not (model / MODEL_CONFIG_FILE).exists():
        params = registry.model_version(url, model_dir.name).params
        names = {field.name for field in dataclasses.fields(TrainParams)}
        recipe = TrainParams(**{name: value for name, value in params.items() if name in names})
        _log(f"training the held-out validation model (cutoff {start:%Y-%m-%d %H:%M}) into {model} ...")
        data = build_training_examples(seen, users, posts, start, history_length=recipe.history_length)
        write_dataset(data, out_dir / "dataset")
        train(out_dir / "dataset", users, posts, recipe, model, log=_log)
    table = cold_start(
        model, seen, users, posts, start, end, window, post_activity_at(url), features.read_projects(url)
    ).posts
    return choose_blend(table, slice_label=f"the same slice, scored by a model trained before {start:%Y-%m-%d %H:%M}")


def measure(
    url: str, model_dir: Path, window: pd.Timedelta, truth_path: Path | None, held_out_dir: Path | None = None
) -> dict[str, Any]:
    """The bench on one database: the model at model_dir (the one the gate judged) against the real engagement
    of the posts new in its dataset's evaluation period, and the ideas' ranker chosen on its training period
    (with held_out_dir, also the one chosen with a model that never trained on the validation slice, see
    held_out_validation). The summary as written to JSON."""
    evaluation = registry.latest_evaluation(url, model_dir.name)
    promoted = registry.promoted_model(url)
    evaluated_dir = evaluated_model_dir(model_dir)
    manifest = read_manifest_of(url, model_dir)
    cutoff = pd.Timestamp(manifest.cutoff)
    end = pd.read_parquet(manifest.path("evaluation"), columns=["occurred_at"])["occurred_at"].max()

    interactions = features.read_interactions(url)
    interactions = interactions.loc[interactions["occurred_at"] <= end]
    users, posts = features.read_user_features(url), features.read_post_features(url)
    # The choice sees the interactions before the cutoff only (validate_on_training_period cuts them there).
    activity_at, projects = post_activity_at(url), features.read_projects(url)
    blend, validation = validate_on_training_period(
        evaluated_dir, interactions, users, posts, cutoff, window, activity_at, projects
    )
    evaluated = cold_start(evaluated_dir, interactions, users, posts, cutoff, end, window, activity_at, projects)
    new = evaluated.posts
    engagement = new["engagement"].to_numpy(float)
    high = engagement > np.median(engagement)
    tower, prior = new["tower"].to_numpy(), new["prior"].to_numpy()
    live_authors = set(posts.loc[posts["created_at"] < cutoff, "user_id"].tolist())

    chosen = f"chosen ranker (tower weight {blend.tower_weight:g})"
    predictors = {
        chosen: blend.score(tower, prior),
        "model: expected engagements (the tower alone)": tower,
        "model: expected engagements, every user alike": new["tower_alike"].to_numpy(),
        "model: mean score": new["mean_score"].to_numpy(),
        "author popularity: engaged users per post": prior,
        "author popularity: engaged users in all": new["prior_total"].to_numpy(),
        **(oracles(truth_path, new, window) if truth_path is not None else {}),
    }
    held_out = None
    if held_out_dir is not None:
        held_out = held_out_validation(held_out_dir, url, model_dir, interactions, users, posts, cutoff, window)
        predictors[f"ranker chosen with the held-out model (tower weight {held_out.tower_weight:g})"] = held_out.score(
            tower, prior
        )
    return {
        "model_version": model_dir.name,
        "promoted": promoted is not None and promoted.model_version == model_dir.name,
        "gate": evaluation.gate if evaluation is not None else {},
        "evaluated_model": str(evaluated_dir),
        "cutoff": str(cutoff),
        "end": str(end),
        "window_days": window / pd.Timedelta(days=1),
        "posts": len(new),
        "authors": int(new["user_id"].nunique()),
        "first_posts": int((~new["user_id"].isin(live_authors)).sum()),
        "users": evaluated.users,
        "live_posts": evaluated.live_posts,
        "engagement_median": float(np.median(engagement)),
        "engagement_mean": float(engagement.mean()),
        "ranker": blend.to_dict(),
        "held_out_ranker": held_out.to_dict() if held_out is not None else None,
        "validation_oracles": validation_oracles(validation.posts, truth_path, window),
        "author_prior_by_period": author_prior_by_period(interactions, posts, window),
        "results": with_intervals(engagement, high, predictors, chosen),
    }


def validation_oracles(posts: pd.DataFrame, truth_path: Path | None, window: pd.Timedelta) -> dict[str, float]:
    """The oracles' ROC-AUC on the validation slice's posts (synthetic data only): the tower scoring them there
    was trained on their engagement, so a tower above the content oracle there is reading more than content."""
    found = oracles(truth_path, posts, window) if truth_path is not None and len(posts) else {}
    high = posts["engagement"].to_numpy() > np.median(posts["engagement"]) if len(posts) else np.zeros(0, bool)
    return {name: roc_auc(high, scores) for name, scores in found.items()}


def author_prior_by_period(
    interactions: pd.DataFrame, posts: pd.DataFrame, window: pd.Timedelta, periods: int = 10
) -> list[dict[str, Any]]:
    """The author baseline (engaged users per earlier post) on the posts created in each of `periods` equal slices
    of the data's time span (each with its whole window before the data's end), training and evaluation periods
    alike: whether its figure on the evaluation period is the usual one. No model involved (the tower's would be
    scored on what it trained on)."""
    first, last = interactions["occurred_at"].min(), interactions["occurred_at"].max()
    rows = []
    for index in range(periods):
        start, end = first + (last - first) * index / periods, first + (last - first) * (index + 1) / periods
        created = posts["created_at"]
        new = posts.loc[(created >= start) & (created < end) & (created + window <= last)]
        engaged = interactions.merge(new[["post_id", "created_at"]], on="post_id")
        engaged = engaged.loc[engaged["occurred_at"] <= engaged["created_at"] + window]
        engagement = new["post_id"].map(engaged.groupby("post_id")["user_id"].nunique()).fillna(0).to_numpy(float)
        before = interactions.loc[interactions["occurred_at"] < start]
        prior, _ = author_priors(before, posts.loc[posts["created_at"] < start], new["user_id"])
        auc = roc_auc(engagement > np.median(engagement), prior) if len(new) else float("nan")
        rows.append({"start": str(start), "end": str(end), "posts": len(new), "auc": auc})
    return rows


# --- the real data sets ------------------------------------------------------------------------------------


def descriptions_as_of(dataset: RealDataset, cutoff: pd.Timestamp) -> RealDataset:
    """A data set whose descriptions come from its tags (Last.fm) with each description as it stood when it could
    be known: a post from before the cutoff gets the tags given before it (what training may see), a post from
    the cutoff on only those given with its first tagging (what its "author" wrote on publishing it). The
    adapter's descriptions count every tag ever given, so a new post's would carry its later popularity."""
    if not dataset.descriptions_from_tags:
        return dataset
    created = dataset.comments["post_id"].map(dataset.posts.set_index("post_id")["created_at"])
    known = dataset.comments["created_at"] < cutoff
    known |= (created >= cutoff) & (dataset.comments["created_at"] <= created)
    posts = dataset.posts.assign(description=tag_descriptions(dataset.posts, dataset.comments.loc[known]))
    return dataclasses.replace(dataset, posts=posts)


def product_cutoff(dataset: RealDataset, holdout_fraction: float) -> pd.Timestamp:
    """The cutoff training_dataset will pick (assets/ml.py: the last holdout_fraction of the interactions'
    time span, floored to the hour), from the rows that become marts.interactions: views, votes, comments."""
    times = pd.concat(
        [dataset.views["occurred_at"], dataset.votes["created_at"], dataset.comments["created_at"]], ignore_index=True
    )
    start, end = times.min(), times.max()
    return (end - (end - start) * holdout_fraction).floor("h")


def database_name(prefix: str, dataset: str) -> str:
    return f"{prefix}_{dataset.replace('-', '_')}"


def drop_databases(server_url: str, names: list[str]) -> None:
    for name in names:
        drop_database(server_url, name)


def prepare_real(
    name: str, data_dir: Path, server_url: str, workdir: Path, db_prefix: str, seed: int | None = None
) -> tuple[str, Path, dict[str, Any]]:
    """The whole data set through the product: its raw contract into the database <db_prefix>_<name>, then the
    full_refresh job (ingest, dbt, training with the default model config without the refit, its seed `seed`
    when given, the gate, embeddings) with TEAMU_HOME workdir/<name>. A workdir that already holds a finished
    run is reused (the training is the slow part). Returns the database URL, the model directory and how the
    training went."""
    from teamu_assets.assets.ml import DatasetConfig

    home = workdir / name
    done = home / "prepared.json"
    database = database_name(db_prefix, name)
    url = with_database(server_url, database)
    if done.exists():
        _log(f"{name}: reusing {home} and database {database}")
        training = json.loads(done.read_text())
        return url, Path(training["model_dir"]), training
    home.mkdir(parents=True, exist_ok=True)
    drop_databases(server_url, [database])
    with connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    ensure_pgvector(url)
    dataset = read_dataset(name, data_dir)
    cutoff = product_cutoff(dataset, DatasetConfig().holdout_fraction)
    bootstrap.prepare_app_database(url)
    write_real_dataset(url, descriptions_as_of(dataset, cutoff), default_landing_dir(home))
    _log(f"{name}: full_refresh in {database} (cutoff {cutoff:%Y-%m-%d %H:%M}) ...")
    started = time.perf_counter()
    product = run_full_refresh(home, url, {"refit": False} | ({} if seed is None else {"seed": seed}))
    model_dir = Path(registry.model_version(url, product.model_version).artifact_path)
    manifest_cutoff = pd.Timestamp(read_manifest_of(url, model_dir).cutoff)
    if manifest_cutoff != cutoff:
        # The descriptions were cut at the predicted cutoff: any other one would leak (or hide) tags.
        raise RuntimeError(f"{name}: the product cut at {manifest_cutoff}, the descriptions at {cutoff}")
    training = {
        "model_dir": str(model_dir),
        "promoted": product.promoted,
        "failed_steps": product.failed_steps,
        "seconds": round(time.perf_counter() - started, 1),
    }
    done.write_text(json.dumps(training))
    _log(f"{name}: trained {product.model_version} in {training['seconds']:.0f} s")
    return url, model_dir, training


def read_manifest_of(url: str, model_dir: Path) -> Any:
    """The manifest of the training dataset the model at model_dir (named by its version) was trained on."""
    from teamu_assets.model.dataset import read_manifest

    return read_manifest(Path(registry.model_version(url, model_dir.name).params["dataset"]))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_summary(title: str, summary: dict[str, Any]) -> None:
    print(
        f"{title}: {summary['model_version']} (evaluated model"
        f"{'' if summary['promoted'] else ', not promoted'}), cutoff {pd.Timestamp(summary['cutoff']):%Y-%m-%d}, "
        f"end {pd.Timestamp(summary['end']):%Y-%m-%d %H:%M}: {summary['posts']} new posts by {summary['authors']} "
        f"authors ({summary['first_posts']} first posts of their author), engagement in "
        f"{summary['window_days']:g} days: median {summary['engagement_median']:g}, "
        f"mean {summary['engagement_mean']:.1f}; {summary['users']} users, {summary['live_posts']} live posts"
    )
    print(f"ranker chosen on the training period: {summary['ranker']['reason']}")
    if summary["held_out_ranker"] is not None:
        print(f"ranker chosen with the held-out model: {summary['held_out_ranker']['reason']}")
    for name, auc in summary["validation_oracles"].items():
        print(f"  {name} on the validation slice: ROC-AUC {auc:.3f}")
    periods = summary["author_prior_by_period"]
    print(
        "author popularity per post, ROC-AUC by tenth of the data's span (posts): "
        + ", ".join(f"{row['auc']:.3f} ({row['posts']})" for row in periods)
    )
    results = summary["results"]
    print(f"{'predictor':<48} {'ROC-AUC [95% CI]':<24} {'Spearman [95% CI]':<24}")
    for name, entry in results.items():
        auc = f"{entry['auc']:.3f} [{entry['auc_ci'][0]:.3f}, {entry['auc_ci'][1]:.3f}]"
        rho = f"{entry['spearman']:.3f} [{entry['spearman_ci'][0]:.3f}, {entry['spearman_ci'][1]:.3f}]"
        print(f"{name:<48} {auc:<24} {rho:<24}")
    for name, entry in results.items():
        if "chosen_minus_auc" in entry:
            print(
                f"chosen minus {name}: AUC {entry['chosen_minus_auc']:+.3f} "
                f"[{entry['chosen_minus_auc_ci'][0]:+.3f}, {entry['chosen_minus_auc_ci'][1]:+.3f}], Spearman "
                f"{entry['chosen_minus_spearman']:+.3f} "
                f"[{entry['chosen_minus_spearman_ci'][0]:+.3f}, {entry['chosen_minus_spearman_ci'][1]:+.3f}]"
            )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--window-days", type=float, default=None, help="engagement window after creation (default: 3, Last.fm 90)"
    )
    parser.add_argument(
        "--real", nargs="+", choices=DATASETS, default=None, help="the real data sets instead of the demo"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: TEAMU_REAL_DATA_DIR or ../shared/data")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="--real: keep each trained run here (reused by the next run)"
    )
    parser.add_argument("--db-prefix", default="bench_post_ideas", help="--real: databases <prefix>_<data set>")
    parser.add_argument(
        "--seed", type=int, default=None, help="--real: the training seed (default: the model config's)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON results (default TEAMU_HOME/bench/post_ideas[_real].json)"
    )
    parser.add_argument(
        "--held-out-validation",
        action="store_true",
        help="also train a model before the validation slice and report the ranker chosen with it (kept in "
        "TEAMU_HOME/bench/post_ideas_held_out/<model>, or --workdir/<data set>/held_out)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    settings = Settings.from_env()
    url = resolve_url(settings.database_url, settings.pgdata)
    report: dict[str, Any] = {"command": " ".join(["bench/bench_post_ideas.py", *sys.argv[1:]])}
    if args.real is None:
        promoted = registry.promoted_model(url)
        if promoted is None:
            raise SystemExit("no promoted model: run `make demo` first")
        window = pd.Timedelta(days=args.window_days or DEFAULT_WINDOW_DAYS["demo"])
        held_out_dir = settings.home / "bench" / "post_ideas_held_out" / promoted.model_version
        report["demo"] = measure(
            url,
            Path(promoted.artifact_path),
            window,
            settings.home / "synthetic" / "ground_truth.npz",
            held_out_dir if args.held_out_validation else None,
        )
        print_summary("demo", report["demo"])
        out = args.out or settings.home / "bench" / "post_ideas.json"
    else:
        data_dir = (args.data_dir or default_data_dir()).resolve()
        out = args.out or settings.home / "bench" / "post_ideas_real.json"
        names = args.real or list(DATASETS)
        with contextlib.ExitStack() as stack:
            if args.workdir is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_post_ideas_")))
                stack.callback(drop_databases, url, [database_name(args.db_prefix, name) for name in names])
            else:
                workdir = args.workdir
            # Every data set is trained first: the slow part, done once per workdir.
            prepared = {name: prepare_real(name, data_dir, url, workdir, args.db_prefix, args.seed) for name in names}
            for name, (database_url, model_dir, training) in prepared.items():
                window = pd.Timedelta(days=args.window_days or DEFAULT_WINDOW_DAYS[name])
                held_out_dir = workdir / name / "held_out" if args.held_out_validation else None
                summary = measure(database_url, model_dir, window, None, held_out_dir)
                report[name] = {**summary, "training": training}
                print_summary(name, report[name])
    report["seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"{report['seconds']:.1f} s; results in {out}")


if __name__ == "__main__":
    main()
