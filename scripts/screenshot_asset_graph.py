"""Screenshot of the Dagster UI's global asset graph, for the docs.

    .venv/bin/python scripts/screenshot_asset_graph.py                        # own webserver, project instance
    .venv/bin/python scripts/screenshot_asset_graph.py http://127.0.0.1:3000  # a webserver already running

Without a URL it starts `dagster-webserver` on workspace.yaml with the project's instance (DAGSTER_HOME, by
default .teamu/dagster, as `make demo` leaves it), waits until the code location's assets are served, and stops
it afterwards. Needs a headless Chromium on PATH (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from teamu_assets.settings import PROJECT_ROOT, Settings

# The lineage view of every asset in every code location of this Dagster version.
ASSET_GRAPH_PATH = "/asset-groups"
DEFAULT_OUTPUT = PROJECT_ROOT / "docs" / "asset-graph.png"
SERVER_START_TIMEOUT_S = 180
# Virtual time Chromium lets the page's scripts run (fetching the graph and laying it out) before the capture.
RENDER_BUDGET_MS = 40000
# The UI zooms the graph to fit the viewport's width; with every group expanded the graph is about as tall as
# it is wide, so a near-square graph pane (the window less the nav and asset sidebars) shows all of it.
WINDOW_SIZE = "1700,1500"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(base_url: str, query: str) -> dict[str, Any]:
    body = json.dumps({"query": query}).encode()
    request = urllib.request.Request(
        f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def _group_names(base_url: str) -> list[str]:
    nodes = _graphql(base_url, "{ assetNodes { groupName } }")["assetNodes"]
    return sorted({node["groupName"] for node in nodes if node["groupName"]})


def asset_graph_url(base_url: str) -> str:
    """The lineage view with every group expanded: with several groups the UI collapses each to one box.

    `expanded` takes the UI's group ids, `global@global:<group>` in this Dagster version.
    """
    expanded = ",".join(f"global@global:{name}" for name in _group_names(base_url))
    return f"{base_url}{ASSET_GRAPH_PATH}?{urllib.parse.urlencode({'expanded': expanded})}"


def dismiss_community_dialog(base_url: str) -> None:
    """The UI greets a localhost visitor with a newsletter dialog until this flag is set in the instance."""
    _graphql(base_url, "mutation { setNuxSeen }")


def wait_until_assets_served(base_url: str, process: subprocess.Popen | None = None) -> None:
    """Until the webserver answers and its code location has loaded (it loads after /server_info answers)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {process.returncode}")
        try:
            if _group_names(base_url):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
            pass
        time.sleep(2)
    raise TimeoutError(f"{base_url} served no assets within {SERVER_START_TIMEOUT_S}s")


@contextmanager
def project_webserver(dagster_home: Path) -> Iterator[str]:
    """A dagster-webserver on workspace.yaml and the instance under `dagster_home`; yields its base URL."""
    venv_bin = Path(sys.executable).parent
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # A session of its own, so the code server it spawns stops with it.
    process = subprocess.Popen(
        [
            str(venv_bin / "dagster-webserver"),
            *("-h", "127.0.0.1", "-p", str(port), "-w", str(PROJECT_ROOT / "workspace.yaml")),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_assets_served(base_url, process)
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def screenshot(page_url: str, output: Path) -> Path:
    """A PNG of `page_url` taken by headless Chromium in a throwaway profile."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="teamu-chromium-") as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW_SIZE}",
                f"--virtual-time-budget={RENDER_BUDGET_MS}",
                f"--screenshot={output}",
                page_url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="base URL of a running dagster-webserver; default: start one")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
    args = parser.parse_args(argv)
    if args.url:
        base_url = args.url.rstrip("/")
        wait_until_assets_served(base_url)
        dismiss_community_dialog(base_url)
        path = screenshot(asset_graph_url(base_url), args.output)
    else:
        with project_webserver(Settings.from_env().dagster_home) as base_url:
            dismiss_community_dialog(base_url)
            path = screenshot(asset_graph_url(base_url), args.output)
    print(path)


if __name__ == "__main__":
    main()
