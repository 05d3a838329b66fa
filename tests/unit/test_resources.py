"""Dagster resources of teamu_assets/resources.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRELOAD = """
import sys
from dagster import build_init_resource_context
from teamu_assets.resources import TeamuDatabase, TowerPreloader

# No server listens on port 9: the registry lookup fails after the imports, which preloading swallows.
database = TeamuDatabase(teamu_home=sys.argv[1], database_url="postgresql://postgres@127.0.0.1:9/none")
before = {name for name in ("tensorflow", "teamu_assets.model.pipeline") if name in sys.modules}
preloader = TowerPreloader(database=database)
preloader.setup_for_execution(build_init_resource_context())
preloader.wait()
after = {"tensorflow", "teamu_assets.model.pipeline"} & set(sys.modules)
print(sorted(before), sorted(after), "matplotlib" in sys.modules)
"""


def test_preloading_imports_what_the_embedding_steps_run(tmp_path: Path) -> None:
    """The embedding assets call teamu_assets.model.pipeline (which imports the evaluation code) and TensorFlow:
    the preloading thread imports both while the run's earlier steps run, even when no model can be loaded. It
    imports no matplotlib: the embedding path draws nothing, and on two cores the import slows the dbt step."""
    result = subprocess.run(
        [sys.executable, "-c", PRELOAD, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[] ['teamu_assets.model.pipeline', 'tensorflow'] False"
