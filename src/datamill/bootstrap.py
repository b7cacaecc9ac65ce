"""Putting a node together: store, services, first admin, worker."""

from __future__ import annotations

import dataclasses
import logging
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.definitions import RunLimits
from datamill.domain.estimate import QueueShape
from datamill.services import locations
from datamill.services.auth import hash_password
from datamill.services.jobs import JobService
from datamill.services.wakeup import Wakeup
from datamill.settings import Settings
from datamill.store import tables
from datamill.store.files import HOME_ROOT, ROOT_OWNER
from datamill.store.migrate import startup_lock
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
    store.queue.object_store = settings.object_store
    # Nodes starting together on a fresh database take turns (store/migrate.py).
    with startup_lock(store.db):
        store.migrate()
        install_locations(store, settings)
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
        queue_shape=QueueShape(
            slots_per_worker=settings.concurrency,
            max_running=settings.max_running,
            fair_shares=settings.fair_slot_shares,
        ),
        enabled_engines=settings.enabled_engines,
    )
    return Node(settings, store, wakeup, jobs)


def install_locations(store: Store, settings: Settings) -> None:
    """Give the store the operator's file policy; make the default and private locations.

    Every operator root gets a private location (/Connections/files.loc) that
    ADMINs use and may share; every user, existing or created later, a private
    location of their own under <files>/users/<name>.
    """
    store.file_policy = locations.policy_from_settings(settings)
    with store.db.read() as conn:
        names = list(conn.execute(sa.select(tables.users.c.name)).scalars())
    locations.ensure_default_locations(store, names)

    def private_location(conn: Connection, name: str) -> None:
        locations.ensure_private_location(conn, store, name, created=True)

    store.users.created_hooks.append(private_location)


def ensure_admin(node: Node) -> str | None:
    """Create the first admin if there are no users; return a generated password, once.

    The password comes from DATAMILL_ADMIN_PASSWORD, or is 'admin' in explicit
    demo mode, or is generated. It is never a fixed default otherwise.
    """
    with startup_lock(node.store.db):
        return _ensure_admin(node)


def _ensure_admin(node: Node) -> str | None:
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
    make_private_home(node.store, "admin")
    return generated


def make_private_home(store: Store, name: str) -> None:
    """Give a user the home folder /Users/<name>, theirs and private like every home."""
    with store.db.write() as conn:
        store.files.ensure_folder(conn, HOME_ROOT, ROOT_OWNER)
        folder_id = store.files.ensure_folder(conn, f"{HOME_ROOT}/{name}", name)
        store.files.set_owner(conn, folder_id, name)
        store.files.set_others_flags(
            conn, folder_id, readable=False, writable=False, executable=False
        )
