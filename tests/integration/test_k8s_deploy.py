"""deploy/values.yaml against the real dagster-k8s, without a cluster: the instance the Helm chart renders from
the values (K8sRunLauncher, Postgres storage) loads, with its storage on a scratch database of the real server;
the code location loads under that instance; the k8s_job_executor's config validates and gives each step the
pod size meant for it.

The chart's templates aren't in this repository (Helm renders them at install time): _instance_yaml mirrors
its helpers dagsterYaml.runLauncher.k8s and dagsterYaml.postgresql.config for the values used here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from teamu_assets.db.connection import scratch_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / "deploy" / "values.yaml").read_text())
RELEASE, NAMESPACE = "teamu", "teamu"


def _instance_yaml(values: dict[str, Any], postgres: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """dagster.yaml as the chart renders it. For the test the Postgres address is the scratch database's and
    the launcher reads a kubeconfig pointing at loopback instead of the in-cluster service account (which
    exists only inside a pod); everything else comes from the values as they are."""
    pg = values["postgresql"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    storage = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": postgres["host"],
            "db_name": postgres["dbname"],
            "port": int(postgres["port"]),
            # The values ask for TLS (Supabase); the embedded test server speaks plain TCP on loopback, and a
            # secured one names its password file (libpq reads it when the password is empty).
            "params": {
                **pg["postgresqlParams"],
                "sslmode": "disable",
                **({"passfile": postgres["passfile"]} if postgres.get("passfile") else {}),
            },
            "scheme": pg["postgresqlScheme"],
        }
    }
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "load_incluster_config": False,
                "kubeconfig_file": str(kubeconfig),
                "job_namespace": NAMESPACE,
                "service_account_name": RELEASE,
                "dagster_home": "/opt/dagster/dagster_home",  # the chart's global.dagsterHome default
                "instance_config_map": f"{RELEASE}-dagster-instance",
                "postgres_password_secret": values["global"]["postgresqlSecretName"],
                "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
                "run_k8s_config": {
                    "container_config": launcher["runK8sConfig"]["containerConfig"],
                },
            },
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


@pytest.fixture
def dagster_home(tmp_path: Path, server_url: str) -> Iterator[Path]:
    with scratch_database(server_url, "k8s17_instance") as instance_url:
        yield _write_dagster_home(tmp_path, instance_url)


def _write_dagster_home(tmp_path: Path, instance_url: str) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    # A cluster nobody calls: loading the launcher reads this file and opens no connection.
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(_instance_yaml(VALUES, conninfo_to_dict(instance_url), kubeconfig))
    )
    return home


@pytest.fixture
def chart_env(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the chart gives the Dagster pods."""
    # DAGSTER_PG_PASSWORD comes from the secret global.postgresqlSecretName; the test server trusts loopback or
    # names its password file in the instance's params (_instance_yaml).
    env = {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_PASSWORD": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_the_rendered_instance_loads_a_k8s_run_launcher_with_the_values_secrets(chart_env: dict[str, str]) -> None:
    from dagster import DagsterInstance
    from dagster_k8s import K8sRunLauncher

    with DagsterInstance.get() as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == NAMESPACE
        assert launcher.env_secrets == ["teamu-secrets"]
        assert launcher.postgres_password_secret == "dagster-postgresql-secret"
        run_pod = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
        assert launcher.run_k8s_config["container_config"]["resources"] == run_pod["resources"]
        # The storage is the Postgres of the values' shape: runs are written and read back.
        assert instance.get_runs_count() == 0


def test_the_code_location_loads_under_the_rendered_instance(chart_env: dict[str, str]) -> None:
    """As the user-code deployment starts it (`dagster api grpc` + the values' dagsterApiGrpcArgs), through
    `dagster definitions validate`, which loads the module under the instance of DAGSTER_HOME."""
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    module = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("--module-name") + 1]
    dagster = str(Path(sys.executable).parent / "dagster")
    result = subprocess.run(
        [dagster, "definitions", "validate", "--module-name", module],
        env={**os.environ, **chart_env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_executor_config_validates_and_sizes_each_step() -> None:
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
    from kubernetes.client import ApiClient

    from teamu_assets.definitions import defs
    from teamu_assets.k8s import K8S_EXECUTOR_CONFIG, LARGE, SMALL

    assert validate_config(k8s_job_executor.config_schema.config_type, K8S_EXECUTOR_CONFIG).success
    # A typo'd field would be refused by the same validation.
    assert not validate_config(k8s_job_executor.config_schema.config_type, {"step_k8s_confg": {}}).success

    job = defs.resolve_job_def("full_refresh_k8s")
    assert job.executor_def.name == "teamu_k8s"
    ops = {node.name for node in job.graph.node_defs}
    assert set(K8S_EXECUTOR_CONFIG["per_step_k8s_config"]) <= ops, "every sized step must be a step of the job"
    assert {"two_tower_model", "ml__user_embeddings", "teamu_dbt_models"} <= ops

    def step_pod_resources(op: str) -> dict[str, Any]:
        """The resources of the Job manifest dagster-k8s builds for a step, as K8sStepHandler merges them."""
        context = K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(K8S_EXECUTOR_CONFIG["step_k8s_config"])
        ).merge(
            K8sContainerContext(
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                    K8S_EXECUTOR_CONFIG["per_step_k8s_config"].get(op, {})
                )
            )
        )
        manifest = construct_dagster_k8s_job(
            DagsterK8sJobConfig(
                job_image="ghcr.io/teamu/teamu-recommender:0.1.0",
                dagster_home="/opt/dagster/dagster_home",
                instance_config_map="teamu-dagster-instance",
                env_secrets=["teamu-secrets"],
            ),
            args=["dagster", "api", "execute_step"],
            job_name=f"dagster-step-{op.replace('_', '-')}",
            user_defined_k8s_config=context.run_k8s_config,
        )
        container = ApiClient().sanitize_for_serialization(manifest)["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "teamu-secrets"}} in container["envFrom"]
        return container["resources"]

    assert step_pod_resources("two_tower_model") == LARGE
    assert step_pod_resources("ml__user_embeddings") == SMALL
    assert step_pod_resources("teamu_dbt_models") == SMALL


def test_the_executor_is_k8s_job_executor_with_the_config(chart_env: dict[str, str]) -> None:
    """teamu_k8s builds dagster-k8s' executor from K8S_EXECUTOR_CONFIG, with the defaults of its schema (retries)
    filled in, under the rendered instance (its launcher's kubeconfig: no cluster is called)."""
    from dagster import DagsterInstance, InitExecutorContext
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.step_delegating import StepDelegatingExecutor
    from dagster_k8s.executor import K8sStepHandler

    from teamu_assets.definitions import defs
    from teamu_assets.k8s import K8S_EXECUTOR_CONFIG

    job = defs.resolve_job_def("full_refresh_k8s")
    with DagsterInstance.get() as instance:
        context = InitExecutorContext(
            job=InMemoryJob(job), executor_def=job.executor_def, executor_config={}, instance=instance
        )
        built = job.executor_def.executor_creation_fn(context)  # type: ignore[misc]
    assert isinstance(built, StepDelegatingExecutor)
    assert built.retries == RetryMode.ENABLED
    assert built._max_concurrent == K8S_EXECUTOR_CONFIG["max_concurrent"]
    handler = built._step_handler
    assert isinstance(handler, K8sStepHandler)
    per_step = {op: config["container_config"] for op, config in handler._per_step_k8s_config.items()}
    assert per_step == {
        op: config["container_config"] for op, config in K8S_EXECUTOR_CONFIG["per_step_k8s_config"].items()
    }


def test_loading_the_code_location_imports_no_kubernetes_client() -> None:
    """Every run process loads the code location: dagster-k8s and the Kubernetes client wait for a run of
    full_refresh_k8s (teamu_assets/k8s.py)."""
    code = "import sys, teamu_assets.definitions; print(sorted({'dagster_k8s', 'kubernetes'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
