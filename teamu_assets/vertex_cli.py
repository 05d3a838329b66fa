"""`teamu vertex ...`: training on Vertex AI and the export its prebuilt TensorFlow serving containers load.

teamu vertex stage  --dataset DIR --out DIR        the training inputs (dataset + feature snapshots) to upload
teamu vertex job    --image I --inputs gs://... --output gs://... [--machine-type M] [--gpu TYPE:COUNT]
                                                   print the CustomJob (REST JSON) that trains on them
teamu vertex train  --inputs DIR --out DIR         what the job runs in the container: train() (+ refit())
teamu vertex export --model DIR --out DIR          both towers as Vertex-servable SavedModels
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from teamu_assets.vertex import (
    VertexJobError,
    VertexTrainingJob,
    custom_job,
    parse_params,
    train_from_inputs,
    write_training_inputs,
)


def _gpu(text: str) -> tuple[str, int]:
    """TYPE[:COUNT], e.g. NVIDIA_L4 or NVIDIA_TESLA_T4:2."""
    kind, _, count = text.partition(":")
    try:
        return kind, int(count or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TYPE[:COUNT], got {text!r}") from None


def _job(args: argparse.Namespace) -> int:
    accelerator, count = args.gpu if args.gpu else (None, 0)
    job = VertexTrainingJob(
        image=args.image,
        inputs_uri=args.inputs,
        output_uri=args.output,
        machine_type=args.machine_type,
        accelerator_type=accelerator,
        accelerator_count=count,
        display_name=args.display_name,
        params=parse_params(args.param),
        refit=not args.no_refit,
    )
    print(json.dumps(custom_job(job), indent=2))
    return 0


def _stage(args: argparse.Namespace) -> int:
    from teamu_assets.cli import _app_url, _settings
    from teamu_assets.db import features

    url = _app_url(_settings())
    out = write_training_inputs(
        Path(args.dataset), features.read_user_features(url), features.read_post_features(url), Path(args.out)
    )
    print(f"training inputs in {out}: copy the folder to Cloud Storage and pass its gs:// URI as --inputs")
    return 0


def _train(args: argparse.Namespace) -> int:
    train_from_inputs(Path(args.inputs), Path(args.out), parse_params(args.param), refit=not args.no_refit)
    return 0


def _export(args: argparse.Namespace) -> int:
    from teamu_assets.model.export import export_vertex_towers

    for name, path in export_vertex_towers(Path(args.model), Path(args.out)).items():
        print(f"{name} tower: {path}")
    return 0


def _request(args: argparse.Namespace) -> int:
    """What the app sends the deployed query tower: the users' features as the marts hold them now."""
    from teamu_assets.cli import _app_url, _settings
    from teamu_assets.db import features
    from teamu_assets.model.export import vertex_instances
    from teamu_assets.model.features import FeatureLayout, UserFeatureTable
    from teamu_assets.model.train import read_model_config

    layout = FeatureLayout(**read_model_config(Path(args.model))["layout"])
    users = UserFeatureTable(features.read_user_features(_app_url(_settings()), args.user), layout)
    print(json.dumps({"instances": vertex_instances(users.serving_inputs())}))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return args.vertex_func(args)
    except VertexJobError as exc:
        print(f"teamu vertex: {exc}", file=sys.stderr)
        return 2


def add_vertex_parser(commands: Any) -> None:
    """`teamu vertex` and its subcommands, on the `teamu` parser's subparsers."""
    vertex = commands.add_parser("vertex", help="train on Vertex AI; export the towers for Vertex AI serving")
    actions = vertex.add_subparsers(dest="vertex_action", required=True)

    stage = actions.add_parser("stage", help="write the training inputs: a dataset folder + feature snapshots")
    stage.add_argument("--dataset", required=True, help="a training_dataset folder (artifacts/datasets/<version>)")
    stage.add_argument("--out", required=True, help="the folder to write (then copy it to Cloud Storage)")
    stage.set_defaults(vertex_func=_stage)

    job = actions.add_parser("job", help="print the Vertex AI CustomJob (REST JSON) that trains the model")
    job.add_argument("--image", required=True, help="the project's image in Artifact Registry")
    job.add_argument("--inputs", required=True, help="gs:// URI of the staged training inputs")
    job.add_argument("--output", required=True, help="gs:// URI of the job's base output directory")
    job.add_argument("--machine-type", default="n1-highmem-16", help="Vertex machine type (default n1-highmem-16)")
    job.add_argument("--gpu", type=_gpu, help="accelerator as TYPE[:COUNT], e.g. NVIDIA_TESLA_T4 or NVIDIA_L4:1")
    job.add_argument("--display-name", default="teamu-two-tower")
    job.set_defaults(vertex_func=_job)

    train = actions.add_parser("train", help="train from staged inputs (what the CustomJob runs)")
    train.add_argument("--inputs", required=True, help="the staged inputs folder (/gcs/bucket/... on Vertex)")
    train.add_argument("--out", required=True, help="where the model is saved")
    train.set_defaults(vertex_func=_train)

    for sub in (job, train):
        sub.add_argument("--param", action="append", default=[], help="a TrainParams field as NAME=VALUE")
        sub.add_argument("--no-refit", action="store_true", help="serve the evaluated model, without the refit")

    export = actions.add_parser("export", help="both towers as SavedModels Vertex AI's TensorFlow containers serve")
    export.add_argument("--model", required=True, help="a trained model's folder (artifacts/models/<version>)")
    export.add_argument("--out", required=True, help="where query_tower/ and candidate_tower/ are written")
    export.set_defaults(vertex_func=_export)

    request = actions.add_parser("request", help="print the query tower's Vertex prediction request for users")
    request.add_argument("--model", required=True, help="the trained model's folder the endpoint serves")
    request.add_argument("--user", type=int, action="append", required=True, help="a user id (repeatable)")
    request.set_defaults(vertex_func=_request)

    vertex.set_defaults(func=_run)
