"""Creating, reading, changing and deleting locations and connections.

Only an ADMIN, or a role with `location.define` / `connection.define`,
creates them; who may then use one is said by its flags in the file tree (the
filesystem permission routes change them). A connection's password is never
shown back: reads mask it, and an update that leaves it out (or sends the
mask back) keeps the stored one.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError

from datamill.domain.records import FileEntry, User
from datamill.engine import objects
from datamill.engine.paths import check_database_url, check_url_text, has_control, safe_url
from datamill.errors import Conflict, Forbidden, InvalidDefinition, NotFound, PathNotAllowed
from datamill.services.folders import check_reserved
from datamill.services.locations import (
    CONNECTION_EXTENSION,
    LOCATION_EXTENSION,
    check_given_folder,
    enclosing_locations,
    needs_own_login,
    policy_of,
    sqlite_file,
)
from datamill.services.permissions import Access, has_access, has_capability, require_access
from datamill.store import locations as loc_store
from datamill.store.store import Store

MASK = "********"
CAPABILITIES = {"location": "location.define", "connection": "connection.define"}
_EXTENSIONS = {"location": LOCATION_EXTENSION, "connection": CONNECTION_EXTENSION}
_DEFAULT_FOLDER = "/Connections"
_FILE = "connection database file"


def _text(document: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidDefinition(f"{key}: required, a non-empty string")
    if has_control(value):
        # Before stripping: a NUL or newline is refused, never quietly cut (N1).
        raise InvalidDefinition(f"{key}: must not hold control characters")
    return value.strip()


def _entry_path(kind: str, document: dict[str, Any]) -> str:
    path = str(_text(document, "path"))
    if "/" not in path:
        path = f"{_DEFAULT_FOLDER}/{path}"
    if not path.endswith(_EXTENSIONS[kind]):
        path += _EXTENSIONS[kind]
    return path


def _server(url: sa.URL) -> tuple[object, ...]:
    """What a stored password is tied to: where the URL connects, and how."""
    return (url.drivername, url.host, url.port, url.username, sorted(url.query.items()))


def _sqlite_bases(conn: Connection, url: str) -> set[int]:
    """The locations around a SQLite connection's file (none for another database)."""
    file = sqlite_file(url)
    return set() if file is None else enclosing_locations(conn, file)


class ResourceService:
    """CRUD of location (.loc) and connection (.dst) entries."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ rules

    def _require_define(self, conn: Connection, user: User, kind: str) -> None:
        if not has_capability(conn, user, CAPABILITIES[kind]):
            raise Forbidden(f"your roles do not allow defining {kind}s")

    def _locate(
        self, conn: Connection, kind: str, entry_id: int, user: User, access: Access
    ) -> FileEntry:
        missing = NotFound(f"Entity of type '{kind}' with id '{entry_id}' not found.")
        try:
            entry = self.store.files.get(conn, entry_id)
        except NotFound:
            raise missing from None
        if entry.resource != kind or not has_access(conn, user, entry, Access.READ):
            raise missing
        require_access(conn, user, entry, access)
        return entry

    def _folder(self, conn: Connection, document: dict[str, Any], user: User) -> str:
        folder = str(_text(document, "folder"))
        policy = policy_of(self.store)
        if objects.is_uri(folder):
            # An object-store prefix: inside an object-store root, nothing to create.
            prefix = objects.parse(folder, "folder")
            if not objects.inside_any(prefix, (*policy.source_roots, *policy.sink_roots)):
                raise PathNotAllowed(f"folder: {folder!r} is outside the operator's file roots")
            check_given_folder(conn, self.store, folder, user, "folder")
            return prefix.uri
        if not folder.startswith("/") or ".." in folder.split("/"):
            raise PathNotAllowed(f"folder: {folder!r} must be an absolute path without '..'")
        real = os.path.realpath(folder)
        roots = tuple(
            os.path.realpath(r)
            for r in {*policy.source_roots, *policy.sink_roots}
            if not objects.is_uri(r)
        )
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
            raise PathNotAllowed(f"folder: {folder!r} is outside the operator's file roots")
        check_given_folder(conn, self.store, folder, user, "folder")
        try:
            os.makedirs(real, exist_ok=True)
        except OSError:
            # A file in the way, a name too long (N2): a refusal naming the folder, not a 500.
            raise Conflict(
                f"folder: {folder!r} cannot be made: a file is in the way or a name is too long"
            ) from None
        return real

    def _url(
        self,
        conn: Connection,
        document: dict[str, Any],
        old: loc_store.DatabaseConnection | None,
        user: User,
    ) -> tuple[str, str | None]:
        text = str(_text(document, "url"))
        try:
            url = sa.make_url(text)
        except (ArgumentError, ValueError):
            raise InvalidDefinition(f"url: {safe_url(text)!r} is not a SQLAlchemy URL") from None
        password = _text(document, "password", required=False)
        if password is None and url.password not in (None, MASK, "***"):
            password = str(url.password)
        if password in (None, MASK, "***") and old is not None:
            # The stored password stays only with the server it was given for:
            # otherwise a writer could point the connection at a server of
            # their own and the next run would hand it the password.
            if old.password is not None and _server(url) != _server(sa.make_url(old.url)):
                raise InvalidDefinition(
                    "password: the connection now names another server (driver, host,"
                    " port or options); give its password again"
                )
            password = old.password
        check_url_text(url, "url", password, raw=text)
        if needs_own_login(url, password) and not user.is_admin:
            # Else libpq logs in as the server (PGPASSWORD, ~/.pgpass): a steward
            # would read with Datamill's login, a superuser's perhaps (attack 12).
            raise InvalidDefinition(
                "url: a PostgreSQL connection must carry its own user and password;"
                " only an ADMIN may make one that uses the server's own login"
            )
        # URL.set(password=None) keeps the password (None means "unchanged"): the
        # URL column held it, or the mask sent back, despite what this module says.
        bare = url._replace(password=None)
        policy = policy_of(self.store)
        database = str(bare.database or "")
        given = bare.get_backend_name() == "sqlite" and bool(database)
        if given and not user.is_admin:
            # A SQLite file is handed out like a location's folder. Checked first:
            # the URL check below tells a missing folder from one that is there,
            # which told a definer what lies in another user's private folder.
            check_given_folder(conn, self.store, database, user, _FILE)
        # Checked once here so an ADMIN hears at once, and again by every run.
        check_database_url(
            bare.render_as_string(hide_password=False),
            tuple({*policy.source_roots, *policy.sink_roots}),
            (policy.metadata_url,),
            "connection",
            must_exist=bare.get_backend_name() != "sqlite",
            forbidden_folders=policy.private_folders,
        )
        if given and user.is_admin:
            check_given_folder(conn, self.store, database, user, _FILE)  # the URL check says more
        return bare.render_as_string(hide_password=False), password

    def _require_room(self, conn: Connection, user: User) -> None:
        # Every save and run of a file job, and every location made, looks at
        # every location: one user's thousands slowed everyone's (eleventh attack).
        if user.is_admin:
            return
        most = policy_of(self.store).max_entries_per_user
        # Counted under the tree's lock, which the creation takes anyway: two
        # creations at once on PostgreSQL cannot both see room for one.
        self.store.files.lock_tree(conn)
        if loc_store.count_owned(conn, user.name) >= most:
            raise Conflict(
                f"you own {most} locations and connections, the most one user may"
                " (max_locations_per_user); delete one first"
            )

    # ------------------------------------------------------------ use cases

    def create(self, kind: str, document: dict[str, Any], user: User) -> int:
        """Create a private location or connection owned by the caller; its entry id."""
        path = _entry_path(kind, document)
        with self.store.db.write() as conn:
            self._require_define(conn, user, kind)
            # Homes are their user's whatever their flags say, as for jobs and folders.
            check_reserved(user, path)
            parent = self.store.files.find(conn, posixpath.dirname(path))
            if parent is None or not has_access(conn, user, parent, Access.READ):
                raise NotFound(f"folder {posixpath.dirname(path)} does not exist")
            require_access(conn, user, parent, Access.WRITE)
            self._require_room(conn, user)
            # What is around the folder or SQLite file now is what its runs re-check.
            if kind == "location":
                folder = self._folder(conn, document, user)
                bases = enclosing_locations(conn, folder)
                entry = self.store.files.create_resource(conn, path, kind, user.name)
                loc_store.insert_location(conn, entry.id, folder, bases=bases)
            else:
                url, password = self._url(conn, document, None, user)
                bases = _sqlite_bases(conn, url)
                entry = self.store.files.create_resource(conn, path, kind, user.name)
                loc_store.insert_connection(conn, entry.id, url, password, bases=bases)
            return entry.id

    def read(self, kind: str, entry_id: int, user: User) -> dict[str, Any]:
        """The document of a location or connection; a password only as a mask."""
        with self.store.db.read() as conn:
            entry = self._locate(conn, kind, entry_id, user, Access.READ)
            return self._document(conn, entry)

    def _document(self, conn: Connection, entry: FileEntry) -> dict[str, Any]:
        body: dict[str, Any] = {"path": entry.path, "id": entry.id, "uuid": entry.uuid}
        body["owner"] = entry.owner
        if entry.resource == "location":
            found = loc_store.get_location(conn, entry.id)
            assert found is not None
            body["folder"] = found.folder
        else:
            connection = loc_store.get_connection(conn, entry.id)
            assert connection is not None
            body["url"] = safe_url(connection.url)
            if connection.password is not None:
                # Shown as before: the URL with `***` where its password goes.
                body["url"] = safe_url(sa.make_url(connection.url).set(password=MASK))
                body["password"] = MASK
        return body

    def update(self, kind: str, entry_id: int, document: dict[str, Any], user: User) -> None:
        """Point a location at another folder, or change a connection's URL or password."""
        with self.store.db.write() as conn:
            self._require_define(conn, user, kind)
            entry = self._locate(conn, kind, entry_id, user, Access.WRITE)
            # Re-pointed: what is around the new folder or file now is what its runs re-check.
            if kind == "location":
                folder = self._folder(conn, document, user)
                bases = enclosing_locations(conn, folder)
                loc_store.set_location_folder(conn, entry.id, folder, bases=bases)
            else:
                old = loc_store.get_connection(conn, entry.id)
                assert old is not None
                url, password = self._url(conn, document, old, user)
                bases = _sqlite_bases(conn, url)
                loc_store.set_connection(conn, entry.id, url, password, bases=bases)

    def delete(self, kind: str, entry_id: int, user: User) -> None:
        """Delete a location or connection; definitions naming it fail when they run."""
        with self.store.db.write() as conn:
            self._require_define(conn, user, kind)
            entry = self._locate(conn, kind, entry_id, user, Access.WRITE)
            self.store.files.lock_tree(conn)
            loc_store.delete_resource(conn, entry.id)

    def list_all(self, kind: str, user: User) -> list[dict[str, Any]]:
        """Every location or connection the caller may read."""
        with self.store.db.read() as conn:
            return [
                self._document(conn, entry)
                for entry in loc_store.all_resources(conn, kind)
                if has_access(conn, user, entry, Access.READ)
            ]
