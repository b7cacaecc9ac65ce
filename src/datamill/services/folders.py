"""Who may create what where in the file tree: WRITE on parents, reserved home folders."""

from __future__ import annotations

import posixpath

from sqlalchemy.engine import Connection

from datamill.domain.records import User
from datamill.errors import Forbidden, InvalidInput, NotFound
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
    conn: Connection, store: Store, user: User, path: str, *, job: bool = False
) -> None:
    """Raise unless the user may create `path` and every missing folder on the way to it.

    The nearest folder that exists must be readable (else it answers like a
    missing one) and writable; the folders created on the way belong to the
    user. Job files may also go into the default job folders (shared drop folders),
    and a user whose home folder is missing may create it (it is created private).
    """
    path = normalize_path(path)
    check_reserved(user, path)
    parent = posixpath.dirname(path)
    ancestor = posixpath.dirname(path)
    entry = store.files.find(conn, ancestor)
    while entry is None and ancestor != "/":
        ancestor = posixpath.dirname(ancestor)
        entry = store.files.find(conn, ancestor)
    if entry is None or not has_access(conn, user, entry, Access.READ):
        raise NotFound(f"folder {parent} does not exist")
    if not entry.is_folder:
        raise InvalidInput(f"{entry.path} is not a folder")
    if has_access(conn, user, entry, Access.WRITE):
        return
    if job and entry.path in SHARED_JOB_FOLDERS:
        return
    if entry.path == HOME_ROOT and path.startswith(f"{HOME_ROOT}/{user.name}/"):
        return  # a user's missing home folder: theirs, created private
    raise Forbidden(f"you are not allowed to create anything in the folder {entry.path}")
