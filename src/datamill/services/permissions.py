"""Who may read, write or run a file: owner, group flags, others flags, ADMIN."""

from __future__ import annotations

import enum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import FileEntry, User
from datamill.errors import Forbidden, NotFound
from datamill.store import tables as t


class Access(enum.StrEnum):
    """The three permission flags of a file."""

    READ = "readable"
    WRITE = "writable"
    EXECUTE = "executable"


def has_access(conn: Connection, user: User, entry: FileEntry, access: Access) -> bool:
    """Whether `user` holds `access` on `entry`."""
    if user.is_admin or entry.owner == user.name:
        return True
    others = conn.execute(
        sa.select(t.files.c[f"others_{access.value}"]).where(t.files.c.id == entry.id)
    ).scalar()
    if others:
        return True
    if not user.groups:
        return False
    flag = t.file_group_permissions.c[access.value]
    row = conn.execute(
        sa.select(t.file_group_permissions.c.file_id).where(
            t.file_group_permissions.c.file_id == entry.id,
            t.file_group_permissions.c.group_name.in_(user.groups),
            flag.is_(True),
        )
    ).first()
    return row is not None


def require_access(conn: Connection, user: User, entry: FileEntry, access: Access) -> None:
    """Raise unless the user holds `access`; unreadable files look exactly like missing ones."""
    if not has_access(conn, user, entry, Access.READ):
        raise NotFound()
    if access is not Access.READ and not has_access(conn, user, entry, access):
        raise Forbidden(f"you are not allowed to {_VERBS[access]} {entry.path}")


_VERBS = {Access.READ: "read", Access.WRITE: "change", Access.EXECUTE: "run"}


def has_capability(conn: Connection, user: User, capability: str) -> bool:
    """Whether one of the user's roles grants `capability` ('*' grants all)."""
    if user.is_admin:
        return True
    if not user.roles:
        return False
    rows = conn.execute(
        sa.select(t.roles.c.capabilities).where(t.roles.c.name.in_(user.roles))
    ).scalars()
    return any("*" in caps or capability in caps for caps in rows)
