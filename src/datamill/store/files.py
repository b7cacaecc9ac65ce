"""The virtual file tree: folders and job files with owners and permission flags."""

from __future__ import annotations

import posixpath
import re
import uuid as uuid_module
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import FileEntry
from datamill.domain.status import JobKind
from datamill.errors import AlreadyExists, InvalidInput, NotFound
from datamill.store import tables as t
from datamill.store.db import Database, utcnow

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_ID = 2**31 - 1
DEFAULT_FOLDERS = ("/Data/ImportJobs", "/Data/ExportJobs", "/Analytics/Workbooks", "/.system")
ROOT_OWNER = "system"


def normalize_path(path: str) -> str:
    """A clean absolute path: one leading slash, no trailing or doubled slashes."""
    if not path.startswith("/"):
        raise InvalidInput(f"path {path!r} must start with '/'")
    clean = posixpath.normpath("/" + path.strip("/"))
    if clean.startswith("//"):
        clean = clean[1:]
    if any(part in (".", "..") for part in path.split("/")):
        raise InvalidInput(f"path {path!r} must not contain '.' or '..'")
    return clean


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
        kind=JobKind(row.kind) if row.kind else None,
        created_at=row.created_at,
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
            others_readable=True,
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
        if conn.execute(sa.select(t.files.c.id).where(t.files.c.path == path)).first():
            raise AlreadyExists(f"{path} already exists")
        parent_id = self.ensure_folder(conn, posixpath.dirname(path), owner)
        file_id = self._insert(conn, parent_id, path, posixpath.basename(path), False, kind, owner)
        return self.get(conn, file_id)

    def get(self, conn: Connection, file_id: int) -> FileEntry:
        """The entry with this id, or NotFound."""
        row = conn.execute(sa.select(t.files).where(t.files.c.id == file_id)).first()
        if row is None:
            raise NotFound()
        return file_from_row(row)

    def find(self, conn: Connection, reference: str) -> FileEntry | None:
        """The entry a reference names: a decimal id, a uuid, or an absolute path."""
        column: Any
        value: Any
        if reference.isdigit():
            if len(reference) > 10 or int(reference) > MAX_ID:
                return None  # larger than any id the store can hold
            column, value = t.files.c.id, int(reference)
        elif _UUID.match(reference):
            column, value = t.files.c.uuid, reference.lower()
        else:
            # A path; the leading slash is lost when a client writes it raw after
            # the route's own slash and the doubled slash is folded.
            try:
                column, value = t.files.c.path, normalize_path("/" + reference.lstrip("/"))
            except InvalidInput:
                return None
        row = conn.execute(sa.select(t.files).where(column == value)).first()
        return file_from_row(row) if row is not None else None

    def _insert(
        self,
        conn: Connection,
        parent_id: int | None,
        path: str,
        name: str,
        is_folder: bool,
        kind: JobKind | None,
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
                kind=kind.value if kind else None,
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
