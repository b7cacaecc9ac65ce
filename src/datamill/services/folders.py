"""Who may create what where in the file tree: WRITE on parents, reserved home folders."""

from __future__ import annotations

import posixpath

from sqlalchemy.engine import Connection

from datamill.domain.records import FileEntry, User
from datamill.errors import AlreadyExists, Forbidden, InvalidInput, NotFound
from datamill.services.permissions import Access, has_access
from datamill.store.files import HOME_ROOT, SHARED_JOB_FOLDERS, normalize_path
from datamill.store.store import Store


def check_reserved(user: User, path: str) -> None:
    """Refuse a path in someone else's home folder: /Users/<name> and below are <name>'s.

    Whether that user exists or not, so future home folders cannot be squatted
    and the answer says nothing about who exists. ADMIN may create anywhere.
    """
    if user.is_admin or not path.startswith(HOME_ROOT + "/"):
        return
    name = path[len(HOME_ROOT) + 1 :].split("/", 1)[0]
    if name != user.name:
        raise Forbidden(
            f"{HOME_ROOT}/{name} is reserved as the home folder of the user {name!r}: "
            "only that user (or an ADMIN) may create anything there"
        )


def require_create(
    conn: Connection, store: Store, user: User, path: str, *, job: bool = False, move: bool = False
) -> None:
    """Raise unless the user may create `path` and every missing folder on the way to it.

    The nearest folder that exists must be readable (else it answers like a
    missing one) and writable; the folders created on the way belong to the
    user. Job files may also go into the default job folders (shared drop folders),
    and a user whose home folder is missing may create it, directly or on the way
    to a path below it (it is created private); `move` says the path is a folder's
    new place, and a folder is not moved in as a missing home (docs/decisions.md).
    """
    path = normalize_path(path)
    check_reserved(user, path)
    parent = posixpath.dirname(path)
    # An existing entry the user may not read counts as absent (A4), so the
    # nearest folder is found past it and the answer is the one for a missing
    # path: 403 on the readable folder above, or 404 if even that is unreadable.
    ancestor = parent
    entry = store.files.find(conn, ancestor)
    hidden: FileEntry | None = None
    while (entry is None or not has_access(conn, user, entry, Access.READ)) and ancestor != "/":
        hidden = entry or hidden
        ancestor = posixpath.dirname(ancestor)
        entry = store.files.find(conn, ancestor)
    if entry is None or not has_access(conn, user, entry, Access.READ):
        raise NotFound(f"folder {parent} does not exist")
    if not entry.is_folder:
        raise InvalidInput(f"{entry.path} is not a folder")
    if not _may_create_in(conn, user, entry, path, job=job, move=move):
        raise Forbidden(f"you are not allowed to create anything in the folder {entry.path}")
    if hidden is not None:
        # The user may create here, so a name taken by an entry they cannot see
        # answers as it would when creating that very entry: it exists.
        raise AlreadyExists(f"{hidden.path} already exists")


def _may_create_in(
    conn: Connection, user: User, folder: FileEntry, path: str, *, job: bool, move: bool
) -> bool:
    if has_access(conn, user, folder, Access.WRITE):
        return True
    if job and folder.path in SHARED_JOB_FOLDERS:
        return True
    if folder.path != HOME_ROOT:
        return False
    # A user's own missing home folder (check_reserved refused anyone else's):
    # she may create it, by its own path or on the way to one below it, and it
    # is created private like every home. Not by moving a folder there: the
    # moved folder would keep its flags, and a home is private.
    home = f"{HOME_ROOT}/{user.name}"
    return path.startswith(home + "/") or (path == home and not move)
