"""Fixtures for the integration tests of the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.engine_fixtures import Area, make_area


@pytest.fixture(params=["run", "worker"])
def area(tmp_path: Path, request: pytest.FixtureRequest) -> Area:
    """Fresh source, sink, staging and outside folders, for both engine isolations."""
    return make_area(tmp_path, shared=request.param == "worker")
