"""What Datameer's administration pages tell about the server: licence facts, running jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from importlib import metadata

from datamill import __version__
from datamill.domain.records import User
from datamill.errors import Forbidden
from datamill.store import executions as ex
from datamill.store.db import utcnow
from datamill.store.store import Store

# A product id is a name for this installation: derived from the root
# folder's uuid, so every node of a cluster answers the same, it never changes
# and the root folder's own uuid is not given away.
_PRODUCT_NAMESPACE = uuid.UUID("4f1d6d0c-6f0a-4c55-9a86-6d1a8d3b5e21")
LICENSE_FALLBACK = "Apache-2.0"


def require_admin_role(user: User, what: str) -> None:
    """Forbidden unless the caller holds the ADMIN role; `what` names the page."""
    if not user.is_admin:
        raise Forbidden(f"only a user with the ADMIN role may read {what}")


def licence_name() -> str:
    """The open-source licence Datamill is distributed under, as its package says."""
    try:
        meta = metadata.metadata("datamill")
    except metadata.PackageNotFoundError:
        return LICENSE_FALLBACK
    return meta["License-Expression"] or meta["License"] or LICENSE_FALLBACK


def period_start(now: dt.datetime) -> dt.datetime:
    """The start of the volume period holding `now` (naive UTC): its calendar month."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclasses.dataclass(frozen=True, slots=True)
class LicenceFacts:
    """The honest answers to Datameer's licence questions."""

    product_id: str
    version: str
    licence: str
    installed_at: dt.datetime
    period_start: dt.datetime
    bytes_imported: int


def product_id(store: Store) -> str:
    """This installation's product id (a uuid, stable across restarts and nodes)."""
    with store.db.read() as conn:
        root = store.files.find(conn, "/")
    assert root is not None, "the root folder is made when the store is opened"
    return str(uuid.uuid5(_PRODUCT_NAMESPACE, root.uuid))


def licence_facts(store: Store, user: User) -> LicenceFacts:
    """Version, licence, installation date and the bytes imported this period (ADMIN only)."""
    require_admin_role(user, "the licence details")
    start = period_start(utcnow())
    with store.db.read() as conn:
        root = store.files.find(conn, "/")
        assert root is not None, "the root folder is made when the store is opened"
        imported = ex.bytes_imported_since(conn, start)
    return LicenceFacts(
        product_id=str(uuid.uuid5(_PRODUCT_NAMESPACE, root.uuid)),
        version=__version__,
        licence=licence_name(),
        installed_at=root.created_at,
        period_start=start,
        bytes_imported=imported,
    )
