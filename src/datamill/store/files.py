"""The virtual file tree: folders and job files with owners and permission flags."""

from __future__ import annotations

import dataclasses
import posixpath
import re
import uuid as uuid_module
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import FileEntry
from datamill.domain.status import JobKind
from datamill.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from datamill.store import tables as t
from datamill.store.db import Database, utcnow

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_ID = 2**31 - 1


def reference_key(reference: str) -> tuple[str, Any] | None:
    """The files column and value a reference names (id, uuid or path), None if none can match.

    The one reading of a file reference: the status fast path uses it too.
    """
    if "\x00" in reference:
        return None  # no name holds NUL, and PostgreSQL text cannot carry it
    if reference.isascii() and reference.isdigit():
        if len(reference) > 10 or int(reference) > MAX_ID:
            return None  # larger than any id the store can hold
        return "id", int(reference)
    if _UUID.match(reference):
        return "uuid", reference.lower()
    # A path; the leading slash is lost when a client writes it raw after
    # the route's own slash and the doubled slash is folded.
    try:
        return "path", normalize_path("/" + reference.lstrip("/"))
    except InvalidInput:
        return None


# One statement per kind of reference, built once: the trigger and status
# routes look a file up per request, and building the statement cost more than
# running it.
_FIND = {
    column: sa.select(t.files).where(t.files.c[column] == sa.bindparam("reference"))
    for column in ("id", "uuid", "path")
}


HOME_ROOT = "/Users"
SHARED_JOB_FOLDERS = frozenset({"/Data/ImportJobs", "/Data/ExportJobs", "/Analytics/Workbooks"})
"""Default job folders: anyone who may define jobs may create job files in them."""
DEFAULT_FOLDERS = (
    "/Data/ImportJobs",
    "/Data/ExportJobs",
    "/Analytics/Workbooks",
    "/.system",
    "/Users",
)
PROTECTED_FOLDERS = frozenset(
    {"/", *DEFAULT_FOLDERS, *(posixpath.dirname(folder) for folder in DEFAULT_FOLDERS)}
)
"""Folders every workspace relies on: they can be neither deleted, renamed nor moved."""
ROOT_OWNER = "system"
MAX_NAME = 255
RESOURCE_KINDS = frozenset({"location", "connection"})
"""Entry kinds that are neither folders nor jobs (see services/locations.py)."""
MAX_PATH = 4096


def _printable(text: str, what: str) -> None:
    if len(text) > MAX_PATH * 4:
        # Checked first: what follows walks the text, and the message would repeat it.
        raise InvalidInput(f"the {what} must be at most {MAX_PATH} characters long")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput(f"the {what} {text[:100]!r} must not contain control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        # A lone surrogate is no character: no database and no JSON answer can carry it.
        raise InvalidInput(f"the {what} {text[:100]!r} is not valid Unicode (a lone surrogate)")


def normalize_path(path: str) -> str:
    """A clean absolute path: one leading slash, no trailing or doubled slashes."""
    _printable(path, "path")
    if not path.startswith("/"):
        raise InvalidInput(f"path {path!r} must start with '/'")
    clean = posixpath.normpath("/" + path.strip("/"))
    if clean.startswith("//"):
        clean = clean[1:]
    if any(part in (".", "..") for part in path.split("/")):
        raise InvalidInput(f"path {path!r} must not contain '.' or '..'")
    if len(clean) > MAX_PATH:
        raise InvalidInput(f"the path must be at most {MAX_PATH} characters long")
    if any(len(part) > MAX_NAME for part in clean.split("/")):
        raise InvalidInput(f"each name in a path must be at most {MAX_NAME} characters long")
    return clean


def check_name(name: str) -> str:
    """The name of one folder entry, or InvalidInput saying what is wrong with it."""
    if not name.strip():
        raise InvalidInput("the name must not be empty")
    if name != name.strip():
        # Leading or trailing blanks get lost in URLs and shell scripts.
        raise InvalidInput(f"the name {name!r} must not start or end with spaces")
    if "/" in name:
        raise InvalidInput(f"the name {name!r} must not contain '/'")
    if name in (".", ".."):
        raise InvalidInput(f"the name {name!r} is not allowed")
    if len(name) > MAX_NAME:
        # Before _printable, whose own cap would name the path limit instead.
        raise InvalidInput(f"the name must be at most {MAX_NAME} characters long")
    _printable(name, "name")
    return name


def is_home_folder(path: str) -> bool:
    """Whether a path is a home folder, /Users/<name>: those are private."""
    return posixpath.dirname(path) == HOME_ROOT


def is_path_reference(reference: str) -> bool:
    """Whether a file reference is a path rather than a decimal id or a uuid."""
    return not ((reference.isascii() and reference.isdigit()) or _UUID.match(reference))


def child_path(parent: FileEntry, name: str) -> str:
    """The path of `name` inside the folder `parent`."""
    return posixpath.join(parent.path, name)


def _below(path: str) -> Any:
    # substr rather than LIKE: folder names may contain '%' and '_'.
    prefix = path.rstrip("/") + "/"
    return sa.func.substr(t.files.c.path, 1, len(prefix)) == prefix


@dataclasses.dataclass(frozen=True, slots=True)
class Flags:
    """The three permission flags."""

    readable: bool
    writable: bool
    executable: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Permissions:
    """Who may do what with one entry: its owner, per-group flags and everyone else's."""

    owner: str
    others: Flags
    groups: tuple[tuple[str, Flags], ...]


def file_from_row(row: Any) -> FileEntry:
    """Build a FileEntry from a files row."""
    return FileEntry(
        id=row.id,
        uuid=row.uuid,
        path=row.path,
        name=row.name,
        parent_id=row.parent_id,
        is_folder=row.is_folder,
        owner=row.owner,
        kind=JobKind(row.kind) if row.kind and row.kind not in RESOURCE_KINDS else None,
        created_at=row.created_at,
        resource=row.kind if row.kind in RESOURCE_KINDS else None,
    )


class FileRepository:
    """Reads and writes the file tree."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_root(self, conn: Connection) -> int:
        """The id of the root folder, creating it on first use."""
        row = conn.execute(sa.select(t.files.c.id).where(t.files.c.path == "/")).first()
        if row is not None:
            return int(row.id)
        return self._insert(conn, None, "/", "", True, None, ROOT_OWNER, others_readable=True)

    def ensure_folder(self, conn: Connection, path: str, owner: str) -> int:
        """The id of the folder at `path`, creating it and its parents as needed."""
        path = normalize_path(path)
        if path == "/":
            return self.ensure_root(conn)
        row = conn.execute(
            sa.select(t.files.c.id, t.files.c.is_folder).where(t.files.c.path == path)
        ).first()
        if row is not None:
            if not row.is_folder:
                raise AlreadyExists(f"{path} already exists and is not a folder")
            return int(row.id)
        parent_id = self.ensure_folder(conn, posixpath.dirname(path), owner)
        return self._insert(
            conn,
            parent_id,
            path,
            posixpath.basename(path),
            True,
            None,
            owner,
            others_readable=not is_home_folder(path),
        )

    def ensure_default_tree(self) -> None:
        """Create the folders every Datamill workspace has."""
        with self._db.write() as conn:
            for folder in DEFAULT_FOLDERS:
                self.ensure_folder(conn, folder, ROOT_OWNER)

    def create_file(self, conn: Connection, path: str, kind: JobKind, owner: str) -> FileEntry:
        """Create a job file; its parent folders are created if missing."""
        path = normalize_path(path)
        if not path.endswith(kind.extension):
            raise InvalidInput(f"a {kind.value} job file name must end with {kind.extension}")
        self.lock_tree(conn)
        if conn.execute(sa.select(t.files.c.id).where(t.files.c.path == path)).first():
            raise AlreadyExists(f"{path} already exists")
        parent_id = self.ensure_folder(conn, posixpath.dirname(path), owner)
        file_id = self._insert(conn, parent_id, path, posixpath.basename(path), False, kind, owner)
        return self.get(conn, file_id)

    def create_resource(self, conn: Connection, path: str, resource: str, owner: str) -> FileEntry:
        """Create a private location or connection entry; parent folders must exist."""
        path = normalize_path(path)
        if resource not in RESOURCE_KINDS:
            raise InvalidInput(f"unknown entry kind {resource!r}")
        self.lock_tree(conn)
        if conn.execute(sa.select(t.files.c.id).where(t.files.c.path == path)).first():
            raise AlreadyExists(f"{path} already exists")
        parent = conn.execute(
            sa.select(t.files.c.id, t.files.c.is_folder).where(
                t.files.c.path == posixpath.dirname(path)
            )
        ).first()
        if parent is None or not parent.is_folder:
            raise NotFound(f"folder {posixpath.dirname(path)} does not exist")
        check_name(posixpath.basename(path))
        if len(path) > MAX_PATH:
            raise InvalidInput(f"the path would be longer than {MAX_PATH} characters")
        file_id = self._insert(
            conn, parent.id, path, posixpath.basename(path), False, resource, owner
        )
        return self.get(conn, file_id)

    def get(self, conn: Connection, file_id: int) -> FileEntry:
        """The entry with this id, or NotFound."""
        row = conn.execute(sa.select(t.files).where(t.files.c.id == file_id)).first()
        if row is None:
            raise NotFound()
        return file_from_row(row)

    def get_many(self, conn: Connection, file_ids: Iterable[int]) -> dict[int, FileEntry]:
        """The entries with these ids, in one query (missing ones are left out)."""
        wanted = sorted(set(file_ids))
        if not wanted:
            return {}
        rows = conn.execute(sa.select(t.files).where(t.files.c.id.in_(wanted))).all()
        return {row.id: file_from_row(row) for row in rows}

    def find(self, conn: Connection, reference: str) -> FileEntry | None:
        """The entry a reference names: a decimal id, a uuid, or an absolute path."""
        key = reference_key(reference)
        if key is None:
            return None
        column, value = key
        row = conn.execute(_FIND[column], {"reference": value}).first()
        return file_from_row(row) if row is not None else None

    def _insert(
        self,
        conn: Connection,
        parent_id: int | None,
        path: str,
        name: str,
        is_folder: bool,
        kind: JobKind | str | None,
        owner: str,
        *,
        others_readable: bool = False,
    ) -> int:
        now = utcnow()
        result = conn.execute(
            sa.insert(t.files)
            .values(
                uuid=str(uuid_module.uuid4()),
                parent_id=parent_id,
                name=name,
                path=path,
                is_folder=is_folder,
                kind=kind.value if isinstance(kind, JobKind) else kind,
                owner=owner,
                others_readable=others_readable,
                others_writable=False,
                others_executable=False,
                created_at=now,
                updated_at=now,
            )
            .returning(t.files.c.id)
        )
        return int(result.scalar_one())

    def set_others_flags(
        self, conn: Connection, file_id: int, *, readable: bool, writable: bool, executable: bool
    ) -> None:
        """Set what every user may do with a file."""
        conn.execute(
            sa.update(t.files)
            .where(t.files.c.id == file_id)
            .values(
                others_readable=readable,
                others_writable=writable,
                others_executable=executable,
                updated_at=utcnow(),
            )
        )

    def set_group_flags(
        self,
        conn: Connection,
        file_id: int,
        group: str,
        *,
        readable: bool,
        writable: bool,
        executable: bool,
    ) -> None:
        """Set what members of one group may do with a file."""
        gp = t.file_group_permissions
        conn.execute(sa.delete(gp).where(gp.c.file_id == file_id, gp.c.group_name == group))
        conn.execute(
            sa.insert(gp).values(
                file_id=file_id,
                group_name=group,
                readable=readable,
                writable=writable,
                executable=executable,
            )
        )

    # ------------------------------------------------------------ tree shape

    def lock_tree(self, conn: Connection) -> None:
        """Serialise changes to the shape of the tree until the transaction ends.

        A move rewrites the paths of everything below a folder; on PostgreSQL an
        entry created below the old path meanwhile would keep a stale path, so
        every creation, move and deletion takes the root row's lock first.
        SQLite writers are serialised already (BEGIN IMMEDIATE).
        """
        conn.execute(sa.select(t.files.c.id).where(t.files.c.path == "/").with_for_update())

    def children(self, conn: Connection, folder_id: int) -> list[FileEntry]:
        """The entries directly inside a folder, by name."""
        rows = conn.execute(sa.select(t.files).where(t.files.c.parent_id == folder_id)).all()
        # Sorted here: SQLite and PostgreSQL collations order names differently.
        return sorted((file_from_row(r) for r in rows), key=lambda e: (e.name.casefold(), e.name))

    def create_folder(
        self, conn: Connection, parent: FileEntry, name: str, owner: str
    ) -> FileEntry:
        """Create an empty folder inside `parent`; a taken name is AlreadyExists."""
        self.lock_tree(conn)
        path = self._free_child_path(conn, parent, name)
        # Readable by everyone, like the folders ensure_folder creates for new jobs;
        # a home folder is private.
        folder_id = self._insert(
            conn,
            parent.id,
            path,
            posixpath.basename(path),
            True,
            None,
            owner,
            others_readable=not is_home_folder(path),
        )
        return self.get(conn, folder_id)

    def move_folder(
        self, conn: Connection, folder: FileEntry, parent: FileEntry, name: str
    ) -> FileEntry:
        """Give a folder a new parent and/or name; every path below it follows."""
        new_path = self.check_move(conn, folder, parent, name)
        if new_path is None:
            return folder
        longest = conn.execute(
            sa.select(sa.func.max(sa.func.length(t.files.c.path))).where(_below(folder.path))
        ).scalar()
        if longest is not None and int(longest) - len(folder.path) + len(new_path) > MAX_PATH:
            raise InvalidInput(f"paths below {new_path} would be longer than {MAX_PATH} characters")
        now = utcnow()
        conn.execute(
            sa.update(t.files)
            .where(t.files.c.id == folder.id)
            .values(path=new_path, name=name, parent_id=parent.id, updated_at=now)
        )
        tail = sa.func.substr(
            t.files.c.path, sa.cast(sa.literal(len(folder.path) + 1), sa.Integer), type_=sa.String
        )
        conn.execute(
            sa.update(t.files)
            .where(_below(folder.path))
            .values(path=sa.literal(new_path, sa.String).concat(tail), updated_at=now)
        )
        return self.get(conn, folder.id)

    def check_move(
        self, conn: Connection, folder: FileEntry, parent: FileEntry, name: str
    ) -> str | None:
        """The folder's path after the move, None if nothing changes; raises if not allowed."""
        self.lock_tree(conn)
        if parent.path == folder.path or parent.path.startswith(folder.path + "/"):
            raise InvalidInput(f"cannot move {folder.path} into itself")
        if parent.id == folder.parent_id and name == folder.name:
            return None
        return self._free_child_path(conn, parent, name)

    def delete_folder(self, conn: Connection, folder: FileEntry) -> None:
        """Delete a folder that holds nothing; otherwise Conflict."""
        self.lock_tree(conn)
        holds = conn.execute(
            sa.select(t.files.c.id).where(t.files.c.parent_id == folder.id).limit(1)
        ).first()
        if holds is not None:
            raise Conflict(
                f"the folder {folder.path} is not empty; delete or move its entries first"
            )
        gp = t.file_group_permissions
        conn.execute(sa.delete(gp).where(gp.c.file_id == folder.id))
        conn.execute(sa.delete(t.files).where(t.files.c.id == folder.id))

    def _free_child_path(self, conn: Connection, parent: FileEntry, name: str) -> str:
        if not parent.is_folder:
            raise InvalidInput(f"{parent.path} is not a folder")
        path = child_path(parent, check_name(name))
        if len(path) > MAX_PATH:
            raise InvalidInput(f"the path would be longer than {MAX_PATH} characters")
        if conn.execute(sa.select(t.files.c.id).where(t.files.c.path == path)).first():
            raise AlreadyExists(f"{path} already exists")
        return path

    # ------------------------------------------------------------ permissions

    def permissions(self, conn: Connection, file_id: int) -> Permissions:
        """The owner and the flags of one entry."""
        row = conn.execute(sa.select(t.files).where(t.files.c.id == file_id)).first()
        if row is None:
            raise NotFound()
        gp = t.file_group_permissions
        groups = conn.execute(
            sa.select(gp).where(gp.c.file_id == file_id).order_by(gp.c.group_name)
        ).all()
        return Permissions(
            owner=row.owner,
            others=Flags(row.others_readable, row.others_writable, row.others_executable),
            groups=tuple(
                (g.group_name, Flags(g.readable, g.writable, g.executable)) for g in groups
            ),
        )

    def set_owner(self, conn: Connection, file_id: int, owner: str) -> None:
        """Hand an entry to another user."""
        conn.execute(
            sa.update(t.files)
            .where(t.files.c.id == file_id)
            .values(owner=owner, updated_at=utcnow())
        )

    def delete_group_flags(self, conn: Connection, file_id: int, group: str) -> bool:
        """Remove one group's flags from an entry; False if it had none."""
        gp = t.file_group_permissions
        result = conn.execute(
            sa.delete(gp).where(gp.c.file_id == file_id, gp.c.group_name == group)
        )
        return bool(result.rowcount)

    def clear_group_flags(self, conn: Connection, file_id: int) -> None:
        """Remove every group's flags from an entry."""
        gp = t.file_group_permissions
        conn.execute(sa.delete(gp).where(gp.c.file_id == file_id))

    def group_exists(self, conn: Connection, name: str) -> bool:
        """Whether a user group of this name exists."""
        row = conn.execute(sa.select(t.groups.c.id).where(t.groups.c.name == name)).first()
        return row is not None
