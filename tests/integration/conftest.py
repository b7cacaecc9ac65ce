"""Fixtures for the integration tests of the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.engine_fixtures import Area, make_area


@pytest.fixture
def area(tmp_path: Path) -> Area:
    """Fresh source, sink, staging and outside folders."""
    return make_area(tmp_path)
