"""Operators' view: metrics, readiness, logs. Reuses the security suite's actors."""

from __future__ import annotations

from tests.security.conftest import actors as actors  # admin, eve, bob and a client
from tests.security.conftest import running as running  # the same, with a worker
