"""One database per module, prepared as `teamu db start` prepares one (see world.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from teamu_assets.db.connection import scratch_database
from tests.security.world import ApiWorld, build_world


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ApiWorld]:
    with scratch_database(server_url, "teamu_test") as url:
        yield build_world(url)
