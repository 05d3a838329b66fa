"""Training on Vertex AI: the CustomJob that runs the project's own train() in the project's image, and the
folder of training inputs it reads from Cloud Storage.

The job is plain JSON in the shape of Vertex AI's REST API (the body of projects.locations.customJobs.create),
which the Python SDK's types parse as they are; tests/unit/test_vertex.py validates it against the SDK's
CustomJob type. Inside the job, Vertex mounts Cloud Storage at /gcs (Cloud Storage FUSE): gs://bucket/path is
/gcs/bucket/path, so the training code reads and writes plain files, as it does locally.

Training inputs (write_training_inputs): the training_dataset asset's folder (train/validation/evaluation Parquet,
manifest.json) under dataset/, and the marts' user and post features as the training step reads them from
Postgres, as Parquet snapshots (the job has no route to the database). No TensorFlow or Dagster at import.
"""

from __future__ import annotations

import shutil
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from teamu_assets.model.params import TrainParams

GCS_FUSE_ROOT = PurePosixPath("/gcs")
DATASET_DIR = "dataset"
USER_FEATURES_FILE = "user_features.parquet"
POST_FEATURES_FILE = "post_features.parquet"


class VertexJobError(ValueError):
    """The job can't be built as asked."""


def gcs_fuse_path(uri: str) -> str:
    """gs://bucket/path -> /gcs/bucket/path, where a Vertex training container sees it."""
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise VertexJobError(f"expected a gs://bucket/path URI, got {uri!r}")
    return str(GCS_FUSE_ROOT / uri[len("gs://") :].rstrip("/"))


@dataclass(frozen=True)
class VertexTrainingJob:
    """One training run on Vertex AI. machine_type and accelerator_type are Vertex's names (n1-highmem-16,
    NVIDIA_TESLA_T4, NVIDIA_L4, ...); an accelerator needs a machine type that takes it (g2-* for L4)."""

    image: str  # the project's image (Dockerfile), pushed to Artifact Registry
    inputs_uri: str  # gs://...: a folder written by write_training_inputs and copied to Cloud Storage
    output_uri: str  # gs://...: the job's base output directory; the model lands under model/
    machine_type: str = "n1-highmem-16"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    display_name: str = "teamu-two-tower"
    boot_disk_gb: int = 100
    timeout_hours: int = 24
    params: TrainParams = field(default_factory=TrainParams)
    refit: bool = True

    def model_uri(self) -> str:
        # Vertex sets AIP_MODEL_DIR to <base output directory>/model/ for custom training; the job writes there.
        return f"{self.output_uri.rstrip('/')}/model"


def custom_job(job: VertexTrainingJob) -> dict[str, Any]:
    """The CustomJob resource (REST JSON, camelCase) for `job`: one worker running `teamu vertex train` in the
    project's image, which calls teamu_assets.model.train.train() (and refit(), as the two_tower_model asset
    does) on the inputs from Cloud Storage and saves the model beside the job's other outputs."""
    if (job.accelerator_type is None) != (job.accelerator_count == 0):
        raise VertexJobError("give both an accelerator type and a count of at least 1, or neither")
    gcs_fuse_path(job.output_uri)  # validates the URI
    machine: dict[str, Any] = {"machineType": job.machine_type}
    if job.accelerator_type is not None:
        machine |= {"acceleratorType": job.accelerator_type, "acceleratorCount": job.accelerator_count}
    params = {name: str(value) for name, value in asdict(job.params).items()}
    args = ["vertex", "train", "--inputs", gcs_fuse_path(job.inputs_uri), "--out", gcs_fuse_path(job.model_uri())]
    args += [argument for name, value in sorted(params.items()) for argument in ("--param", f"{name}={value}")]
    if not job.refit:
        args.append("--no-refit")
    return {
        "displayName": job.display_name,
        "jobSpec": {
            "workerPoolSpecs": [
                {
                    "machineSpec": machine,
                    "replicaCount": "1",
                    "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": job.boot_disk_gb},
                    "containerSpec": {
                        "imageUri": job.image,
                        # The image's entrypoint starts the whole single-box platform; the job runs the CLI.
                        "command": ["teamu"],
                        "args": args,
                        "env": [
                            {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "3"},
                            {"name": "TEAMU_HOME", "value": "/tmp/teamu"},
                        ],
                    },
                }
            ],
            "baseOutputDirectory": {"outputUriPrefix": job.output_uri},
            "scheduling": {"timeout": f"{job.timeout_hours * 3600}s"},
        },
        "labels": {"app": "teamu", "step": "two-tower-training"},
    }


def parse_params(assignments: list[str]) -> TrainParams:
    """name=value pairs (as custom_job writes them) -> TrainParams, each value of its field's type."""
    kinds = typing.get_type_hints(TrainParams)
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or name not in kinds:
            raise VertexJobError(f"expected NAME=VALUE with NAME a TrainParams field, got {assignment!r}")
        values[name] = _parse_value(text, kinds[name])
    return TrainParams(**values)


def _parse_value(text: str, kind: Any) -> Any:
    """A field's value from str(value): bool from "True"/"False", an optional field's None from "None"."""
    if kind is bool:
        return text == "True"
    options = [option for option in typing.get_args(kind) if option is not type(None)]
    if options:  # `X | None`
        return None if text == "None" else options[0](text)
    return kind(text)


def write_training_inputs(
    dataset_dir: Path, user_features: pd.DataFrame, post_features: pd.DataFrame, out_dir: Path
) -> Path:
    """The folder a Vertex job trains from: the dataset's files under dataset/, the feature frames as Parquet.
    Copy it to Cloud Storage as it is (gcloud storage cp -r out_dir gs://...)."""
    out_dir = Path(out_dir)
    shutil.copytree(dataset_dir, out_dir / DATASET_DIR, dirs_exist_ok=True)
    user_features.to_parquet(out_dir / USER_FEATURES_FILE, index=False)
    post_features.to_parquet(out_dir / POST_FEATURES_FILE, index=False)
    return out_dir


def train_from_inputs(
    inputs_dir: Path, out_dir: Path, params: TrainParams, *, refit: bool = True, log: Callable[[str], None] = print
) -> Path:
    """What the Vertex job runs: the same train() (and refit()) as the two_tower_model asset, on the inputs
    folder. With refit the served model is out_dir and the judged one out_dir/evaluated. Returns out_dir."""
    from teamu_assets.model import train as training
    from teamu_assets.model.pipeline import EVALUATED_MODEL_DIR

    inputs_dir, out_dir = Path(inputs_dir), Path(out_dir)
    dataset_dir = inputs_dir / DATASET_DIR
    users = pd.read_parquet(inputs_dir / USER_FEATURES_FILE)
    posts = pd.read_parquet(inputs_dir / POST_FEATURES_FILE)
    evaluated_dir = out_dir / EVALUATED_MODEL_DIR if refit else out_dir
    result = training.train(dataset_dir, users, posts, params, evaluated_dir, log=log)
    if refit:
        training.refit(dataset_dir, users, posts, result, out_dir, log=log)
    return out_dir
