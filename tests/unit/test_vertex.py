"""Vertex AI, without the network: the training CustomJob validated by the SDK's own types, the job's command
accepted by the `teamu` parser, and the towers exported for Vertex's prebuilt TensorFlow serving answering a
Vertex-shaped request with the same embeddings as the local batch path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from teamu_assets.cli import build_parser
from teamu_assets.model.params import TrainParams
from teamu_assets.vertex import VertexJobError, VertexTrainingJob, custom_job, gcs_fuse_path, parse_params

PARAMS = TrainParams(epochs=2, batch_size=64, embedding_dim=16, feature_dim=16, hidden_units=32, shuffle_buffer=500)


def _job(**overrides: object) -> VertexTrainingJob:
    fields: dict[str, object] = {
        "image": "europe-docker.pkg.dev/teamu/images/teamu-recommender:0.1.0",
        "inputs_uri": "gs://teamu-ml/inputs/ds-1",
        "output_uri": "gs://teamu-ml/runs/tt-1",
        "params": PARAMS,
    }
    return VertexTrainingJob(**(fields | overrides))  # type: ignore[arg-type]


def test_custom_job_parses_as_the_sdks_custom_job_with_its_gpu() -> None:
    from google.cloud.aiplatform_v1.types import AcceleratorType, CustomJob

    spec = custom_job(_job(machine_type="n1-standard-8", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1))
    # from_json refuses unknown fields and values of the wrong type or outside an enum.
    parsed = CustomJob.from_json(json.dumps(spec))
    pool = parsed.job_spec.worker_pool_specs[0]
    assert pool.machine_spec.machine_type == "n1-standard-8"
    assert pool.machine_spec.accelerator_type == AcceleratorType.NVIDIA_TESLA_T4
    assert pool.machine_spec.accelerator_count == 1
    assert pool.replica_count == 1
    assert pool.container_spec.image_uri.endswith("teamu-recommender:0.1.0")
    assert parsed.job_spec.base_output_directory.output_uri_prefix == "gs://teamu-ml/runs/tt-1"
    assert parsed.job_spec.scheduling.timeout.total_seconds() == 24 * 3600


def test_a_cpu_job_has_no_accelerator_and_a_bad_one_is_refused_by_the_sdk() -> None:
    from google.cloud.aiplatform_v1.types import AcceleratorType, CustomJob

    parsed = CustomJob.from_json(json.dumps(custom_job(_job())))
    assert (
        parsed.job_spec.worker_pool_specs[0].machine_spec.accelerator_type
        == AcceleratorType.ACCELERATOR_TYPE_UNSPECIFIED
    )
    bad = custom_job(_job(accelerator_type="NVIDIA_TESLA_NONEXISTENT", accelerator_count=1))
    with pytest.raises(Exception, match="NVIDIA_TESLA_NONEXISTENT"):
        CustomJob.from_json(json.dumps(bad))
    with pytest.raises(VertexJobError, match="accelerator"):
        custom_job(_job(accelerator_type="NVIDIA_L4"))
    with pytest.raises(VertexJobError, match="gs://"):
        custom_job(_job(output_uri="/local/folder"))


def test_the_jobs_command_is_teamu_vertex_train_on_the_mounted_inputs_with_the_same_params() -> None:
    spec = custom_job(_job(refit=False))
    container = spec["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert container["command"] == ["teamu"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.vertex_action) == ("vertex", "train")
    assert args.inputs == "/gcs/teamu-ml/inputs/ds-1"
    assert args.out == gcs_fuse_path(_job().model_uri()) == "/gcs/teamu-ml/runs/tt-1/model"
    assert args.no_refit
    assert parse_params(args.param) == PARAMS
    # An optional field round-trips its None (the batch size then chosen on validation).
    chosen = custom_job(_job(params=TrainParams(batch_size=None)))["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert parse_params(build_parser().parse_args(chosen["args"]).param).batch_size is None


@pytest.mark.slow
def test_vertex_export_answers_a_vertex_request_with_the_local_embeddings(tmp_path: Path) -> None:
    import tensorflow as tf

    from teamu_assets.model.dataset import build_training_examples, write_dataset
    from teamu_assets.model.export import VERTEX_OUTPUT, export_vertex_towers, vertex_instances
    from teamu_assets.model.features import PostFeatureTable, UserFeatureTable
    from teamu_assets.model.towers import post_input_signature, user_input_signature
    from teamu_assets.model.train import _layout, embed_posts, embed_users
    from teamu_assets.vertex import train_from_inputs, write_training_inputs
    from tests.unit.model_fixtures import make_world

    world = make_world(warm_users=60, cold_users=10, posts=120, events_per_user=15)
    data = build_training_examples(world.interactions, world.user_features, world.post_features, world.cutoff)
    write_dataset(data, tmp_path / "dataset")
    # The job's own path: staged inputs (Parquet snapshots of the feature frames) -> train() -> a model folder.
    inputs = write_training_inputs(tmp_path / "dataset", world.user_features, world.post_features, tmp_path / "in")
    model_dir = train_from_inputs(inputs, tmp_path / "model", PARAMS, refit=False, log=lambda _: None)
    exported = export_vertex_towers(model_dir, tmp_path / "vertex")
    assert (exported["query"] / "saved_model.pb").is_file()

    as_of = world.cutoff
    cases = [
        (
            "query",
            UserFeatureTable(world.user_features, _layout(model_dir)).serving_inputs(),
            embed_users(model_dir, world.user_features)[1],
            user_input_signature(),
        ),
        (
            "candidate",
            PostFeatureTable(world.post_features, reference_time=as_of).serving_inputs(),
            embed_posts(model_dir, world.post_features, as_of=as_of)[1],
            post_input_signature(),
        ),
    ]
    for name, inputs_by_feature, local, signature in cases:
        serving_default = tf.saved_model.load(str(exported[name])).signatures["serving_default"]
        specs = serving_default.structured_input_signature[1]
        assert set(specs) == set(signature)
        # The request as it travels: JSON text, one object per user or post.
        request = json.loads(json.dumps({"instances": vertex_instances(inputs_by_feature)}))
        assert len(request["instances"]) == len(local)
        # TF Serving's row format: each input is the instances' values of that name, stacked.
        tensors = {
            feature: tf.constant([row[feature] for row in request["instances"]], dtype=spec.dtype)
            for feature, spec in specs.items()
        }
        predictions = serving_default(**tensors)[VERTEX_OUTPUT].numpy()
        np.testing.assert_allclose(predictions, local, rtol=1e-5, atol=1e-5)
        assert not np.allclose(predictions[0], predictions[1])


def test_training_inputs_round_trip_the_feature_frames(tmp_path: Path) -> None:
    from teamu_assets.vertex import POST_FEATURES_FILE, USER_FEATURES_FILE, write_training_inputs
    from tests.unit.model_fixtures import make_world

    world = make_world(warm_users=20, cold_users=5, posts=40, events_per_user=5)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "manifest.json").write_text("{}")
    out = write_training_inputs(tmp_path / "dataset", world.user_features, world.post_features, tmp_path / "in")
    assert (out / "dataset" / "manifest.json").read_text() == "{}"
    pd.testing.assert_frame_equal(pd.read_parquet(out / USER_FEATURES_FILE), world.user_features, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / POST_FEATURES_FILE), world.post_features, check_dtype=False)
