"""Putting a node together: store, services, first admin, worker."""

from __future__ import annotations

import dataclasses
import logging
import secrets

from datamill.domain.definitions import RunLimits
from datamill.services.auth import hash_password
from datamill.services.jobs import JobService
from datamill.services.wakeup import Wakeup
from datamill.settings import Settings
from datamill.store.store import Store

log = logging.getLogger(__name__)

DEMO_PASSWORD = "admin"


@dataclasses.dataclass
class Node:
    """The shared pieces of a server or worker process."""

    settings: Settings
    store: Store
    wakeup: Wakeup
    jobs: JobService


def open_node(settings: Settings) -> Node:
    """Create folders, migrate the store and build the services."""
    settings.ensure_folders()
    store = Store(
        settings.resolved_database_url,
        str(settings.resolved_data_root),
        max_running=settings.max_running,
        fair_shares=settings.fair_slot_shares,
    )
    store.migrate()
    wakeup = Wakeup()
    jobs = JobService(
        store,
        wakeup,
        stop_wait_seconds=settings.stop_wait_seconds,
        timezone=settings.timezone,
        limit_maxima=RunLimits(
            time_seconds=settings.run_time_limit_max_seconds,
            output_bytes=settings.run_output_limit_max_bytes,
        ),
    )
    return Node(settings, store, wakeup, jobs)


def ensure_admin(node: Node) -> str | None:
    """Create the first admin if there are no users; return a generated password, once.

    The password comes from DATAMILL_ADMIN_PASSWORD, or is 'admin' in explicit
    demo mode, or is generated. It is never a fixed default otherwise.
    """
    if node.store.users.count() > 0:
        return None
    password = node.settings.admin_password
    generated = None
    if not password:
        if node.settings.demo:
            password = DEMO_PASSWORD
        else:
            password = generated = secrets.token_urlsafe(12)
    node.store.users.create("admin", hash_password(password), roles=("ADMIN",))
    return generated
