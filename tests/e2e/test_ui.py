"""The Dagster UI as an operator uses it: a real `dagster-webserver` on the workspace, the `full_refresh` job
launched through GraphQL (what the Launch button sends), run to success, and its materializations' metadata
read back through GraphQL on small synthetic data in a scratch Postgres database.

The run coordinator is swapped for DefaultRunCoordinator in a test-only dagster.yaml: the webserver then hands
the run straight to the run launcher, so no `dagster-daemon` is needed. A daemon would also tick the sensors
(one is on by default), launching extra runs against the same database while the test runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from teamu_assets.db import bootstrap
from teamu_assets.instance import write_dagster_yaml
from teamu_assets.settings import PROJECT_ROOT
from teamu_assets.synthetic import generate, save_truth, write_mixpanel_files, write_supabase
from tests.e2e.world import SMALL_MODEL, WORLD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 360
EXPECTED_ASSETS = {
    ("mixpanel", "events"),
    ("training_dataset",),
    ("two_tower_model",),
    ("evaluation_report",),
    ("ml", "post_embeddings"),
    ("ml", "user_embeddings"),
}

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on Error { message }
  }
}
"""

RUN_MATERIALIZATIONS = """
query RunMaterializations($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      assetMaterializations {
        assetKey { path }
        metadataEntries {
          label
          ... on IntMetadataEntry { intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on BoolMetadataEntry { boolValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""

ASSET_NODES = """
query AssetNodes {
  assetNodes { assetKey { path } jobNames }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(base_url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def _wait_for_server(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    pytest.fail(f"dagster-webserver did not answer in {SERVER_START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def _test_dagster_yaml(dagster_home: Path, server_url: str, database: str) -> None:
    """The project's dagster.yaml for `database`, with runs launched directly instead of queued."""
    path = write_dagster_yaml(dagster_home, server_url, database=database)
    config = yaml.safe_load(path.read_text())
    config["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def webserver(
    server_url: str, module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A dagster-webserver on the workspace, its instance and the app data both in the scratch database."""
    home = tmp_path_factory.mktemp("teamu_home")
    bootstrap.prepare_app_database(module_db_url)
    dataset = generate(WORLD)
    write_supabase(module_db_url, dataset)
    write_mixpanel_files(dataset, home / "landing", bad_fraction=0.02, seed=11)
    save_truth(dataset.truth, home / "synthetic" / "ground_truth.npz")

    dagster_home = home / "dagster"
    _test_dagster_yaml(dagster_home, server_url, conninfo_to_dict(module_db_url)["dbname"])

    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "TEAMU_HOME": str(home),
        "TEAMU_DATABASE_URL": module_db_url,
        "TEAMU_MIXPANEL_LANDING_DIR": str(home / "landing"),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    port = _free_port()
    log = home / "webserver.log"
    with log.open("w") as log_file:
        # A session of its own: the code server and run processes it spawns are killed with it.
        process = subprocess.Popen(
            [
                str(venv_bin / "dagster-webserver"),
                *("-h", "127.0.0.1", "-p", str(port), "-w", str(PROJECT_ROOT / "workspace.yaml")),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(base_url, process, log)
        yield base_url, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_asset_nodes(base_url: str) -> dict[tuple[str, ...], list[str]]:
    """The code location loads in the background after /server_info answers: poll until its assets show."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        nodes = _graphql(base_url, ASSET_NODES)["assetNodes"]
        if nodes or time.monotonic() > deadline:
            return {tuple(node["assetKey"]["path"]): node["jobNames"] for node in nodes}
        time.sleep(2)


def _metadata_value(entry: dict[str, Any]) -> Any:
    if "intRepr" in entry:
        return int(entry["intRepr"])
    for field in ("floatValue", "boolValue", "text"):
        if field in entry:
            return entry[field]
    return None


def test_full_refresh_launched_from_the_ui_materializes_the_graph(webserver: tuple[str, Path]) -> None:
    base_url, log = webserver
    asset_nodes = _wait_for_asset_nodes(base_url)
    assert set(asset_nodes) >= EXPECTED_ASSETS, sorted(asset_nodes)
    assert all("full_refresh" in asset_nodes[key] for key in EXPECTED_ASSETS)

    launched = _graphql(
        base_url,
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": "teamu",
                    "repositoryName": "__repository__",
                    "jobName": "full_refresh",
                },
                "runConfigData": {"ops": {"two_tower_model": {"config": SMALL_MODEL}}},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = "NOT_STARTED"
    while status not in {"SUCCESS", "FAILURE", "CANCELED"} and time.monotonic() < deadline:
        time.sleep(3)
        status = _graphql(base_url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{log.read_text()[-4000:]}"

    materializations = _graphql(base_url, RUN_MATERIALIZATIONS, {"runId": run_id})["runOrError"][
        "assetMaterializations"
    ]
    metadata = {
        tuple(m["assetKey"]["path"]): {e["label"]: _metadata_value(e) for e in m["metadataEntries"]}
        for m in materializations
    }
    assert set(metadata) >= EXPECTED_ASSETS

    ingested = metadata[("mixpanel", "events")]
    assert ingested["quarantined"] > 0 and ingested["duplicates"] > 0
    assert ingested["lines_read"] == ingested["loaded"] + ingested["duplicates"] + ingested["quarantined"]

    evaluation = metadata[("evaluation_report",)]
    assert evaluation["promoted"] is True
    assert evaluation["recall@20"] > evaluation["popularity_recall@20"]
