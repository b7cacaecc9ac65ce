"""What locations and connections point at: a folder on disk, a database URL.

Their entries (owner, flags, path) live in the file tree like jobs; see
services/locations.py for who may create and use them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import FileEntry
from datamill.store import tables as t
from datamill.store.files import file_from_row


@dataclasses.dataclass(frozen=True, slots=True)
class FilePolicy:
    """What the operator allows: file roots, database hosts, and what is never reachable."""

    source_roots: tuple[str, ...]
    sink_roots: tuple[str, ...]
    # Where each user's private location folder is made: <users_root>/<name>.
    users_root: str
    # Hosts (or host:port) an inline database URL may name; empty: none.
    database_hosts: tuple[str, ...]
    # Datamill's own database, never a source or sink.
    metadata_url: str
    # Datamill's own folders and files (data root, temp root, session key):
    # hidden in every location, no SQLite file there is a source or sink.
    private_folders: tuple[str, ...]
    max_source_files: int


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    """A location entry, the folder it stands for, and the locations around it when given."""

    entry: FileEntry
    folder: str
    bases: frozenset[int] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseConnection:
    """A connection entry, its URL without password, and the password kept apart."""

    entry: FileEntry
    url: str
    password: str | None = dataclasses.field(repr=False)
    bases: frozenset[int] = frozenset()


def bases_text(bases: Iterable[int]) -> str:
    """The `bases` column's form of a set of location ids."""
    return ",".join(str(i) for i in sorted(set(bases)))


def _bases(text: str | None) -> frozenset[int]:
    return frozenset(int(i) for i in (text or "").split(",") if i)


def insert_location(conn: Connection, file_id: int, folder: str, *, bases: Iterable[int]) -> None:
    """Record the folder of a new location entry, and the locations around it."""
    values = {"file_id": file_id, "folder": folder}
    if text := bases_text(bases):
        # No bases is the column's default (''); left out, the default locations of a
        # home still at an old schema are made as before (tests/integration/test_migrations.py).
        values["bases"] = text
    conn.execute(sa.insert(t.locations).values(**values))


def set_location_folder(
    conn: Connection, file_id: int, folder: str, *, bases: Iterable[int]
) -> None:
    """Point a location at another folder, and record the locations around that one."""
    conn.execute(
        sa.update(t.locations)
        .where(t.locations.c.file_id == file_id)
        .values(folder=folder, bases=bases_text(bases))
    )


def get_location(conn: Connection, file_id: int) -> Location | None:
    """The location of an entry id, or None if the entry is no location."""
    row = conn.execute(
        sa.select(t.files, t.locations.c.folder, t.locations.c.bases)
        .join(t.locations, t.locations.c.file_id == t.files.c.id)
        .where(t.files.c.id == file_id)
    ).first()
    return Location(file_from_row(row), row.folder, _bases(row.bases)) if row is not None else None


def all_locations(conn: Connection) -> list[Location]:
    """Every location, by path."""
    rows = conn.execute(
        sa.select(t.files, t.locations.c.folder, t.locations.c.bases)
        .join(t.locations, t.locations.c.file_id == t.files.c.id)
        .order_by(t.files.c.path)
    ).all()
    return [Location(file_from_row(r), r.folder, _bases(r.bases)) for r in rows]


def folder_has_location(conn: Connection, folder: str) -> bool:
    """Whether some location stands for exactly this folder."""
    found = conn.execute(
        sa.select(t.locations.c.file_id).where(t.locations.c.folder == folder).limit(1)
    ).first()
    return found is not None


def insert_connection(
    conn: Connection, file_id: int, url: str, password: str | None, *, bases: Iterable[int]
) -> None:
    """Record the URL and password of a new connection entry (bases: of its SQLite file)."""
    conn.execute(
        sa.insert(t.connections).values(
            file_id=file_id, url=url, password=password, bases=bases_text(bases)
        )
    )


def set_connection(
    conn: Connection, file_id: int, url: str, password: str | None, *, bases: Iterable[int]
) -> None:
    """Replace a connection's URL and password (bases: of its SQLite file)."""
    conn.execute(
        sa.update(t.connections)
        .where(t.connections.c.file_id == file_id)
        .values(url=url, password=password, bases=bases_text(bases))
    )


def get_connection(conn: Connection, file_id: int) -> DatabaseConnection | None:
    """The connection of an entry id, or None if the entry is no connection."""
    row = conn.execute(
        sa.select(t.files, t.connections.c.url, t.connections.c.password, t.connections.c.bases)
        .join(t.connections, t.connections.c.file_id == t.files.c.id)
        .where(t.files.c.id == file_id)
    ).first()
    if row is None:
        return None
    return DatabaseConnection(file_from_row(row), row.url, row.password, _bases(row.bases))


def all_resources(conn: Connection, kind: str) -> list[FileEntry]:
    """Every location or connection entry, by path."""
    rows = conn.execute(
        sa.select(t.files).where(t.files.c.kind == kind).order_by(t.files.c.path)
    ).all()
    return [file_from_row(r) for r in rows]


def delete_resource(conn: Connection, file_id: int) -> None:
    """Delete a location or connection entry with its flags."""
    conn.execute(sa.delete(t.locations).where(t.locations.c.file_id == file_id))
    conn.execute(sa.delete(t.connections).where(t.connections.c.file_id == file_id))
    gp = t.file_group_permissions
    conn.execute(sa.delete(gp).where(gp.c.file_id == file_id))
    conn.execute(sa.delete(t.files).where(t.files.c.id == file_id))
