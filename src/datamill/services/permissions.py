"""Who may read, write or run a file: owner, group flags, others flags, ADMIN."""

from __future__ import annotations

import enum
from collections.abc import Iterable

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


class Capability(enum.StrEnum):
    """What a role allows, whatever the file flags say; the one map of routes to capabilities.

    - JOB_READ: job documents and lists, status (both routes), history, execution
      details, volume reports, running executions, folder and file listings and
      their permissions.
    - JOB_RUN: triggering (single, legacy, sequential) and stopping (stop, job-kill).
    - JOB_DEFINE: creating, changing and deleting jobs and folders, and changing
      owners and flags.
    - DATA_READ: data listings and downloads, and marking data for deletion.
    - METRICS_READ: GET /metrics when DATAMILL_METRICS=auth (no built-in role but
      ADMIN has it: give it to a monitoring user through a role of its own).

    ADMIN holds every capability; a role holding '*' too. The flags of the file
    are checked as well: a capability never grants access to someone else's file.
    """

    JOB_READ = "job.read"
    JOB_RUN = "job.run"
    JOB_DEFINE = "job.define"
    DATA_READ = "data.read"
    METRICS_READ = "metrics.read"


_NEEDED_FOR = {
    Capability.JOB_READ: "read jobs, their status and history",
    Capability.JOB_RUN: "run or stop jobs",
    Capability.JOB_DEFINE: "define, change or delete jobs and folders",
    Capability.DATA_READ: "read data",
    Capability.METRICS_READ: "read the server's metrics",
}


_READ, _RUN, _DEFINE, _DATA = (
    Capability.JOB_READ,
    Capability.JOB_RUN,
    Capability.JOB_DEFINE,
    Capability.DATA_READ,
)

DATAMEER_CAPABILITIES: dict[str, tuple[str, ...]] = {
    # Datameer's per-artifact capabilities: _ACCESS reads, _EDIT creates, changes
    # and deletes, _EXECUTE runs, _DOWNLOAD reads the results. Datameer's data link
    # and file upload _EDIT include running them. The table is docs/users.md's.
    "FILE_BROWSER_ACCESS": (_READ,),
    "IMPORTJOB_ACCESS": (_READ,),
    "DATALINK_ACCESS": (_READ,),
    "FILEUPLOAD_ACCESS": (_READ,),
    "WORKBOOK_ACCESS": (_READ,),
    "EXPORTJOB_ACCESS": (_READ,),
    "JOB_HISTORY_ACCESS": (_READ,),
    "JOB_DETAILS_ACCESS": (_READ,),
    "IMPORTJOB_EDIT": (_DEFINE,),
    "WORKBOOK_EDIT": (_DEFINE,),
    "EXPORTJOB_EDIT": (_DEFINE,),
    "FOLDER_CREATE": (_DEFINE,),
    "FOLDER_CREATE_IN_HOME": (_DEFINE,),
    "DATALINK_EDIT": (_DEFINE, _RUN),
    "FILEUPLOAD_EDIT": (_DEFINE, _RUN),
    "IMPORTJOB_EXECUTE": (_RUN,),
    "WORKBOOK_EXECUTE": (_RUN,),
    "EXPORTJOB_EXECUTE": (_RUN,),
    "IMPORTJOB_DOWNLOAD": (_DATA,),
    "WORKBOOK_DOWNLOAD": (_DATA,),
    "CONNECTION_EDIT": ("connection.define",),  # services/resources.py
}
"""Datameer capability names that mean one of Datamill's; any other is kept, meaning nothing.

Deliberately absent: UNRESTRICTED, USER_CAN_ACCESS_EVERYTHING and
USER_CAN_EDIT_EVERYTHING would bypass the file flags, which only the ADMIN
role does here; a role imported with them grants nothing more for it.
"""


def grants(capabilities: Iterable[str], capability: str) -> bool:
    """Whether a role's list of capabilities grants `capability` ('*', its name, or Datameer's)."""
    for name in capabilities:
        if name == "*" or name == capability:
            return True
        if capability in DATAMEER_CAPABILITIES.get(name, ()):
            return True
    return False


def has_capability(conn: Connection, user: User, capability: str) -> bool:
    """Whether one of the user's roles grants `capability` ('*' grants all)."""
    if user.is_admin:
        return True
    if not user.roles:
        return False
    rows = conn.execute(
        sa.select(t.roles.c.capabilities).where(t.roles.c.name.in_(user.roles))
    ).scalars()
    return any(grants(caps, capability) for caps in rows)


def require_capability(conn: Connection, user: User, capability: Capability) -> None:
    """Raise Forbidden unless one of the user's roles grants `capability`.

    Checked before the target is looked up, so the answer says nothing about it.
    """
    if not has_capability(conn, user, capability):
        raise Forbidden(
            f"your roles do not allow you to {_NEEDED_FOR[capability]} "
            f"(this needs the capability {capability.value})"
        )
