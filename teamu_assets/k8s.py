"""Running the graph on Kubernetes: every step of a run in a pod of its own (dagster-k8s' k8s_job_executor),
sized per step. The deployment itself (code server, run launcher, instance database, secrets) is the Helm values
in deploy/values.yaml; docs/SCALING.md says what runs where and why these sizes.

Only the `full_refresh_k8s` job uses this executor: the other jobs keep their executors (the incremental refresh
runs in-process on purpose: one pod start per step would cost more than its whole latency budget).

dagster-k8s is imported only when a run of that job starts: with the Kubernetes client it imports it adds ~0.6 s
to every process that loads the code location, the run process of each sensor-launched incremental refresh
included (docs/BENCHMARKS.md, Freshness).
"""

from __future__ import annotations

from typing import Any

from dagster import (
    DagsterInvalidConfigError,
    Executor,
    InitExecutorContext,
    define_asset_job,
    executor,
    multiple_process_executor_requirements,
)
from dagster._config import process_config

from teamu_assets.jobs import WRITES_MARTS_AND_EMBEDDINGS, full_refresh_job

# Requests are what the scheduler reserves; the memory limit stops a runaway step before it starves its node.
# CPU has no limit: a throttled step only runs slower, and idle cores of the node are free to use.
SMALL: dict[str, Any] = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
# Evaluation scores every evaluated user against every post (in blocks) and bootstraps intervals.
MEDIUM: dict[str, Any] = {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "24Gi"}}
# Training reads the whole dataset through tf.data and holds every post's features; TensorFlow uses every core
# it is given (docs/SCALING.md: examples/s scale with cores until the input pipeline binds).
LARGE: dict[str, Any] = {"requests": {"cpu": "16", "memory": "64Gi"}, "limits": {"memory": "96Gi"}}


def _container(resources: dict[str, Any]) -> dict[str, Any]:
    return {"container_config": {"resources": resources}}


# Keyed by op name: an asset's op is its key joined by "__".
STEP_RESOURCES: dict[str, dict[str, Any]] = {
    "two_tower_model": LARGE,
    "evaluation_report": MEDIUM,
}

K8S_EXECUTOR_CONFIG: dict[str, Any] = {
    # dbt, ingestion and the embedding writes get the small size; the steps above override it.
    "step_k8s_config": _container(SMALL),
    "per_step_k8s_config": {op: _container(resources) for op, resources in STEP_RESOURCES.items()},
    # The step pods inherit the run launcher's secrets (deploy/values.yaml envSecrets). At most this many step
    # pods of one run at a time: the steps write to one database.
    "max_concurrent": 4,
}


@executor(name="teamu_k8s", requirements=multiple_process_executor_requirements())
def k8s_executor(init_context: InitExecutorContext) -> Executor:
    """dagster-k8s' k8s_job_executor with K8S_EXECUTOR_CONFIG (its schema's defaults filled in, as Dagster does
    for the executor of a run), imported here rather than at the code location's load."""
    from dagster_k8s import k8s_job_executor

    processed = process_config(k8s_job_executor.config_schema.config_type, K8S_EXECUTOR_CONFIG)
    if not processed.success:
        raise DagsterInvalidConfigError("K8S_EXECUTOR_CONFIG", processed.errors, K8S_EXECUTOR_CONFIG)
    config = InitExecutorContext(
        job=init_context.job,
        executor_def=k8s_job_executor,
        executor_config=processed.value,
        instance=init_context.instance,
    )
    return k8s_job_executor.executor_creation_fn(config)  # type: ignore[misc]  # the decorator always sets it


full_refresh_k8s_job = define_asset_job(
    "full_refresh_k8s",
    selection=full_refresh_job.selection,
    executor_def=k8s_executor,
    tags=WRITES_MARTS_AND_EMBEDDINGS,
    description="full_refresh on Kubernetes: each step a pod of its own, sized per step (teamu_assets/k8s.py).",
)
