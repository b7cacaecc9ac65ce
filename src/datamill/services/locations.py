"""Files and databases only through locations and connections the user may use.

A location (a folder) and a connection (a database URL) are entries of the
file tree: READ on one lets a user import from it, WRITE lets them export to
it. Each definition is checked with the saving user's rights when saved
(`check_definition_access`) and again with its owner's rights when it runs
(`resolve_run_io`), which also gives the engine the real folder or URL.
A location or connection the user may not use answers exactly like one that
does not exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import posixpath
import tempfile
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError

from datamill.domain.definitions import (
    CsvSource,
    DatabaseSink,
    DatabaseSource,
    ExportJobDefinition,
    FileSink,
    ImportJobDefinition,
    JobDefinition,
    JsonLinesSource,
    ParquetSource,
)
from datamill.domain.records import FileEntry, User
from datamill.engine import objects
from datamill.engine.base import PathRoots
from datamill.engine.paths import (
    check_postgres_url,
    check_url_text,
    is_glob,
    safe_url,
    sqlite_database_files,
)
from datamill.errors import Conflict, InvalidDefinition, PathNotAllowed
from datamill.services.permissions import Access, has_access
from datamill.services.sessions import SECRET_FILE
from datamill.settings import Settings
from datamill.store import locations as loc_store
from datamill.store.files import ROOT_OWNER
from datamill.store.locations import FilePolicy, Location
from datamill.store.store import Store

LOCATION_EXTENSION = ".loc"
CONNECTION_EXTENSION = ".dst"
ROOT_LOCATIONS_FOLDER = "/Connections"
PRIVATE_LOCATION_NAME = "files.loc"
HOME_ROOT = "/Users"
_log = logging.getLogger(__name__)

FileSource = CsvSource | JsonLinesSource | ParquetSource
_VERBS = {Access.READ: "read from", Access.WRITE: "write to"}


@dataclasses.dataclass(frozen=True, slots=True)
class RunIO:
    """What a run may touch: its definition with real folders and URLs, and its roots."""

    definition: dict[str, Any]
    roots: PathRoots


def policy_from_settings(settings: Settings) -> FilePolicy:
    """The operator's file policy as the settings describe it."""
    # Private folders of users are local folders: the first local root holds them.
    roots = settings.local_file_roots or (str(settings.resolved_home / "files"),)
    return FilePolicy(
        source_roots=settings.resolved_source_roots,
        sink_roots=settings.resolved_sink_roots,
        users_root=os.path.join(roots[0], "users"),
        database_hosts=tuple(settings.database_hosts),
        metadata_url=settings.resolved_database_url,
        # The session key signs every cookie and form token; a start reads it back.
        private_folders=(
            str(settings.resolved_data_root),
            str(settings.temp_root),
            str(settings.resolved_home / SECRET_FILE),
        ),
        max_source_files=settings.source_max_files,
        max_entries_per_user=settings.max_locations_per_user,
    )


def policy_of(store: Store) -> FilePolicy:
    """The operator's file policy; refused (fail closed) if it was never installed."""
    if store.file_policy is None:
        raise PathNotAllowed("no locations are configured on this server")
    return store.file_policy


def _inside(path: str, folder: str) -> bool:
    folder = folder.rstrip(os.sep) or os.sep
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _inside_any(path: str, folders: tuple[str, ...]) -> bool:
    return any(_inside(path, os.path.realpath(f)) for f in folders if not objects.is_uri(f))


def _refused(what: str, noun: str, reference: str, access: Access) -> InvalidDefinition:
    # One message whether it is missing, not a location, or not allowed.
    return InvalidDefinition(
        f"{what}: {noun} {reference!r} does not exist or you may not {_VERBS[access]} it"
    )


def _may(conn: Connection, user: User, entry: FileEntry, access: Access) -> bool:
    return has_access(conn, user, entry, Access.READ) and has_access(conn, user, entry, access)


def find_location(
    conn: Connection, store: Store, reference: str, user: User, access: Access, what: str
) -> Location:
    """The location a reference names, if `user` holds `access` on it."""
    entry = store.files.find(conn, reference)
    found = loc_store.get_location(conn, entry.id) if entry is not None else None
    if found is None or not _may(conn, user, found.entry, access):
        raise _refused(what, "location", reference, access)
    return found


def _relative_part(path: str, what: str) -> str:
    if "\x00" in path:
        raise InvalidDefinition(f"{what}: the path must not hold a NUL character")
    if path.startswith("/"):
        raise InvalidDefinition(f"{what}: with a location, 'path' is relative to it: {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathNotAllowed(f"{what}: the path {path!r} must not contain '..'")
    if not parts:
        raise InvalidDefinition(f"{what}: the path must name a file inside the location")
    return "/".join(parts)


def _innermost(
    conn: Connection, path: str, user: User, access: Access, what: str
) -> tuple[Location, str]:
    """The innermost location holding an absolute path (old form), if the user may use it.

    The innermost location decides (N6): a path inside bob's private location
    is not reachable through an enclosing location someone shared.
    """
    if objects.is_uri(path):
        return _innermost_object(conn, path, user, access, what)
    if "\x00" in path or not path.startswith("/"):
        raise PathNotAllowed(f"{what}: {path!r} must be an absolute path or name a location")
    if ".." in path.split("/"):
        raise PathNotAllowed(f"{what}: the path {path!r} must not contain '..'")
    clean = posixpath.normpath(path)
    best: tuple[Location, str] | None = None
    for location in loc_store.all_locations(conn):
        folder = location.folder.rstrip("/") or "/"
        if not _inside(clean, folder) or clean == folder:
            continue
        if best is not None and len(best[0].folder) >= len(folder):
            continue
        best = (location, clean[len(folder) :].lstrip("/"))
    if best is not None and not _may(conn, user, best[0].entry, access):
        best = None
    if best is None:
        raise InvalidDefinition(
            f"{what}: {path!r} is not inside a location you may {_VERBS[access]}"
        )
    return best


def _innermost_object(
    conn: Connection, path: str, user: User, access: Access, what: str
) -> tuple[Location, str]:
    """`_innermost` for an object-store URI: the innermost s3a:// location holding it."""
    wanted = objects.parse(path, what, glob=True)
    best: tuple[Location, objects.ObjectPath] | None = None
    for location in loc_store.all_locations(conn):
        if not objects.is_uri(location.folder):
            continue
        folder = objects.parse(location.folder, "location")
        if wanted == folder or not objects.inside(wanted, folder):
            continue
        if best is None or len(folder.key) > len(best[1].key):
            best = (location, folder)
    if best is None or not _may(conn, user, best[0].entry, access):
        raise InvalidDefinition(
            f"{what}: {path!r} is not inside a location you may {_VERBS[access]}"
        )
    prefix = best[1].key
    return best[0], wanted.key[len(prefix) :].lstrip("/")


def _object_target(
    conn: Connection,
    store: Store,
    found: Location,
    relative: str,
    allowed: tuple[str, ...],
    user: User,
    access: Access,
    what: str,
    reference: str,
) -> tuple[str, str, tuple[str, ...]]:
    """`_file_target` for an object-store location: the same rules on bucket and key."""
    folder = objects.parse(found.folder, "location")
    if not objects.inside_any(folder, allowed) or not _still_given(
        conn, store, found.entry, found.folder, found.bases
    ):
        raise _refused(what, "location", reference, access)
    # The path as written: `a//b`, `./`, `%2e%2e` or a backslash are refused, not tidied.
    target = objects.parse(f"{folder.uri}/{relative}", what, glob=True)
    hidden = tuple(
        sorted(
            objects.parse(other.folder, "location").uri
            for other in loc_store.all_locations(conn)
            if objects.is_uri(other.folder)
            and objects.parse(other.folder, "location") != folder
            and objects.inside(objects.parse(other.folder, "location"), folder)
            and not _may(conn, user, other.entry, access)
        )
    )
    if hidden and not is_glob(relative) and objects.inside_any(target, hidden):
        raise InvalidDefinition(
            f"{what}: {reference!r} is not inside a location you may {_VERBS[access]}"
        )
    return folder.uri, relative, hidden


def _database_files(policy: FilePolicy, folder: str) -> tuple[str, ...]:
    """Datamill's own files inside `folder`: the SQLite metadata database's, the data root.

    The data root (every user's published results), the temporary root and
    the session key count like the database: a folder the operator put around
    them must neither read nor replace them.
    """
    private = (os.path.realpath(f) for f in policy.private_folders if not objects.is_uri(f))
    own = (*sqlite_database_files(policy.metadata_url), *private)
    return tuple(f for f in own if _inside(f, folder))


def _hidden_inside(conn: Connection, folder: str, user: User, access: Access) -> tuple[str, ...]:
    """Real folders of the locations strictly inside `folder` that `user` may not use (N6)."""
    hidden = set()
    for location in loc_store.all_locations(conn):
        if objects.is_uri(location.folder):
            continue  # an object-store location is never inside a local folder
        real = os.path.realpath(location.folder)
        if (
            real != folder
            and _inside(real, folder)
            and not _may(conn, user, location.entry, access)
        ):
            hidden.add(real)
    return tuple(sorted(hidden))


def _homes_of_others(
    conn: Connection, policy: FilePolicy, folder: str, target: str, user: User
) -> tuple[str, ...]:
    """Folders in the users root inside `folder` that no location covers, but `user`'s own.

    They are other users' private folders still to be made (or left without a
    location): `check_given_folder` refuses them, and a location around the
    users root must not reach them either (attack 10). The target's own name
    counts even if it does not exist, so no file takes a future user's place.
    """
    users = os.path.realpath(policy.users_root)
    if user.is_admin or not _inside(users, folder):
        return ()
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names = set(os.listdir(users))
    if _inside(target, users) and target != users:
        names.add(target[len(users) :].lstrip(os.sep).split(os.sep)[0])
    located = {
        os.path.realpath(loc.folder)
        for loc in loc_store.all_locations(conn)
        if not objects.is_uri(loc.folder)
    }
    homes = (os.path.join(users, name) for name in names - {user.name})
    return tuple(sorted(home for home in homes if home not in located))


def _file_target(
    conn: Connection,
    store: Store,
    location: str | None,
    path: str,
    user: User,
    access: Access,
    what: str,
) -> tuple[str, str, tuple[str, ...]]:
    """(real folder of the location, path inside it, folders hidden in it) of a file."""
    if location is not None:
        found = find_location(conn, store, location, user, access, what)
        relative = path if objects.is_uri(found.folder) else _relative_part(path, what)
    else:
        found, relative = _innermost(conn, path, user, access, what)
    policy = policy_of(store)
    allowed = policy.source_roots if access is Access.READ else policy.sink_roots
    if objects.is_uri(found.folder):
        return _object_target(
            conn, store, found, relative, allowed, user, access, what, location or path
        )
    folder = os.path.realpath(found.folder)
    if not _inside_any(folder, allowed) or not _still_given(
        conn, store, found.entry, folder, found.bases
    ):
        # The operator moved the roots since, or its definer lost the right to
        # give it out; say so without naming the folder.
        raise _refused(what, "location", location or path, access)
    # A folder the operator put around the SQLite metadata database: its files
    # are hidden like a location the user may not use, so no import reads
    # them and no export replaces them (nor the writers' lock all wait on).
    target = os.path.realpath(os.path.join(folder, relative))
    hidden = (
        _hidden_inside(conn, folder, user, access)
        + _database_files(policy, folder)
        + _homes_of_others(conn, policy, folder, target, user)
    )
    # The innermost location decides: a file inside a location the user may not
    # use is refused like one outside every location; globs skip it at run time.
    if hidden and not is_glob(relative) and _inside_any(target, hidden):
        raise InvalidDefinition(
            f"{what}: {path!r} is not inside a location you may {_VERBS[access]}"
        )
    return folder, relative, hidden


def check_given_folder(
    conn: Connection,
    store: Store,
    typed: str,
    user: User,
    what: str,
    *,
    counted: Collection[int] | None = None,
) -> None:
    """Refuse a folder (or SQLite file) that `user` may not give out as a location or connection.

    Whoever defines a location or connection hands out what lies in it, and
    the innermost location decides who may use a file (N6): a location on or
    inside another user's private folder, or any location `user` may not
    read, would open it. So the real path must lie neither in Datamill's own
    folders, nor in another user's private folder (made or still to be made,
    ADMIN excepted), nor in a location `user` may not read (nor write,
    inside a sink root), the operator roots' own locations excepted (they
    are what definers carve up). The message names the path as typed, not
    where a symbolic link leads. Her own private folder is hers whatever
    encloses it; with `counted` (a run's re-check of a location or
    connection: the locations around it when it was given), a location made
    or re-pointed around it since does not take it away.
    """
    policy = policy_of(store)
    refused = PathNotAllowed(
        f"{what}: {typed!r} lies in a location you may not read, or in Datamill's own files"
    )
    if objects.is_uri(typed):
        _check_given_prefix(conn, policy, typed, user, refused, counted)
        return
    real = os.path.realpath(typed)
    if _inside_any(real, policy.private_folders):
        raise refused
    users = os.path.realpath(policy.users_root)
    owner = real[len(users) :].lstrip(os.sep).split(os.sep)[0] if _inside(real, users) else ""
    if owner and owner != user.name and not user.is_admin:
        raise refused
    roots = {os.path.realpath(r) for r in (*policy.source_roots, *policy.sink_roots)}
    # Her own location lets her write wherever a sink root allows it: a
    # location she may only read would otherwise become one she may write.
    access = Access.WRITE if _inside_any(real, policy.sink_roots) else Access.READ
    home = os.path.join(users, user.name)
    around = _around_folder(conn, real)
    counted = _still_around(counted, around)
    for location, folder in around:
        if folder in roots:
            continue
        if _inside(real, home) and _inside(home, folder):
            continue  # a location around her home (steve's on the users root) takes none of it
        if counted is not None and location.entry.id not in counted:
            continue  # made or re-pointed around hers later: it cannot take hers away
        if not _may(conn, user, location.entry, access):
            raise refused


def _check_given_prefix(
    conn: Connection,
    policy: FilePolicy,
    typed: str,
    user: User,
    refused: PathNotAllowed,
    counted: Collection[int] | None,
) -> None:
    """`check_given_folder` for an object-store prefix: no location around it she may not use.

    Private folders of users and Datamill's own files are local; what a
    prefix can lie in is other object-store locations (attack 13: a
    steward's location on an ADMIN's private prefix read it).
    """
    prefix = objects.parse(typed, "folder")
    roots = {
        objects.parse(r, "root")
        for r in (*policy.source_roots, *policy.sink_roots)
        if objects.is_uri(r)
    }
    access = Access.WRITE if objects.inside_any(prefix, policy.sink_roots) else Access.READ
    around = _around_prefix(conn, prefix)
    counted = _still_around(counted, around)
    for location, folder in around:
        if folder in roots:
            continue
        if counted is not None and location.entry.id not in counted:
            continue
        if not _may(conn, user, location.entry, access):
            raise refused


def _around_folder(conn: Connection, real: str) -> list[tuple[Location, str]]:
    """The local locations whose (real) folder is or encloses the real path `real`."""
    around = []
    for location in loc_store.all_locations(conn):
        if objects.is_uri(location.folder):
            continue  # an object-store location holds no local file
        folder = os.path.realpath(location.folder)
        if _inside(real, folder):
            around.append((location, folder))
    return around


def _around_prefix(
    conn: Connection, prefix: objects.ObjectPath
) -> list[tuple[Location, objects.ObjectPath]]:
    """The object-store locations whose prefix is or holds `prefix`."""
    around = []
    for location in loc_store.all_locations(conn):
        if objects.is_uri(location.folder):
            folder = objects.parse(location.folder, "location")
            if objects.inside(prefix, folder):
                around.append((location, folder))
    return around


def _still_around(
    counted: Collection[int] | None, around: Sequence[tuple[Location, object]]
) -> Collection[int] | None:
    """The bases a run's re-check counts; None (judged as if given now) once one is gone.

    A base no longer around the entry was deleted or re-pointed away: counting
    only the rest left a share deleted (or moved) and made again private on
    the same folder still given out (attack 13).
    """
    if counted is None or set(counted) <= {location.entry.id for location, _ in around}:
        return counted
    return None


def enclosing_locations(conn: Connection, path: str) -> set[int]:
    """The ids of the locations whose folder (or prefix) is or encloses `path`.

    Recorded with a location or SQLite connection when its folder or file is
    given (its `bases`): what a run's re-check counts (`_still_given`).
    """
    if objects.is_uri(path):
        return {loc.entry.id for loc, _ in _around_prefix(conn, objects.parse(path, "folder"))}
    return {loc.entry.id for loc, _ in _around_folder(conn, os.path.realpath(path))}


def _still_given(
    conn: Connection, store: Store, entry: FileEntry, real: str, bases: frozenset[int]
) -> bool:
    """Whether the owner of a location or SQLite connection may still give out `real`.

    A definer's location inside one shared with her stayed hers when the share
    was revoked, and the one named decides: at run time it is checked again,
    with the locations that were around it when it was given (`bases`).
    Counting every one around it now let anyone who made or re-pointed a
    location around another's end it; counting those made before it (by
    entry id) let a definer keep a revoked share by re-pointing an older
    location into it. Once a base no longer encloses it, it is judged as if
    given now (`_still_around`).
    """
    if entry.owner == ROOT_OWNER:
        return True
    owner = store.users.get(conn, entry.owner)
    if owner is None:
        return False
    try:
        check_given_folder(conn, store, real, owner, "location", counted=bases)
    except PathNotAllowed:
        return False
    return True


def find_connection(
    conn: Connection, store: Store, reference: str, user: User, access: Access, what: str
) -> loc_store.DatabaseConnection:
    """The connection a reference names, if `user` holds `access` on it."""
    entry = store.files.find(conn, reference)
    found = loc_store.get_connection(conn, entry.id) if entry is not None else None
    if found is None or not _may(conn, user, found.entry, access):
        raise _refused(what, "connection", reference, access)
    return found


def connection_url(found: loc_store.DatabaseConnection) -> str:
    """The connection's URL with its password, for the engine only."""
    url = sa.make_url(found.url)
    if found.password is not None:
        url = url.set(password=found.password)
    return url.render_as_string(hide_password=False)


def _host_allowed(url: sa.URL, hosts: tuple[str, ...]) -> bool:
    host = (url.host or "").lower().strip("[]")
    port = url.port or 5432
    wanted = {h.lower().strip() for h in hosts}
    return bool(host) and (host in wanted or f"{host}:{port}" in wanted)


def _inline_database(
    conn: Connection, store: Store, url: str, user: User, access: Access, what: str
) -> tuple[str, tuple[str, ...]]:
    """(URL, roots) of a database named inline: a SQLite file in a location, or an allowed host."""
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidDefinition(f"{what}: {safe_url(url)!r} is not a SQLAlchemy URL") from None
    # Before any comparison: a NUL would be cut off by libpq after the check (N1).
    check_url_text(parsed, what, raw=url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database.startswith("/"):
            raise InvalidDefinition(f"{what}: SQLite URL {safe_url(parsed)!r} must name a file")
        folder, relative, _ = _file_target(conn, store, None, database, user, access, what)
        real = os.path.join(folder, relative)
        return parsed.set(database=real).render_as_string(hide_password=False), (folder,)
    policy = policy_of(store)
    if backend == "postgresql" and _host_allowed(parsed, policy.database_hosts):
        if not parsed.username or not parsed.password:
            # Without both, libpq falls back to the server's own login (PGUSER,
            # PGPASSWORD, ~/.pgpass): the user would act with Datamill's rights.
            raise InvalidDefinition(
                f"{what}: a database URL written in a definition must carry its own user"
                f" and password; name a connection instead: {safe_url(parsed)!r}"
            )
        # Allowed hosts may still be this machine: the metadata database stays out.
        check_postgres_url(parsed, (policy.metadata_url,), what)
        return url, ()
    raise InvalidDefinition(
        f"{what}: database URLs may name only hosts the operator allows"
        f" (DATAMILL_DATABASE_HOSTS); name a connection instead: {safe_url(parsed)!r}"
    )


def needs_own_login(url: sa.URL, password: str | None) -> bool:
    """Whether a PostgreSQL URL lacks a user or password, so libpq would use the server's."""
    return url.get_backend_name() == "postgresql" and not (url.username and password)


def _own_login(conn: Connection, store: Store, found: loc_store.DatabaseConnection) -> bool:
    """Whether a connection may be used as it is: with its own login, or an ADMIN's.

    Without a user or password libpq falls back to the server's own login
    (PGUSER, PGPASSWORD, ~/.pgpass): a definer who is not ADMIN would act
    with Datamill's rights, a superuser's perhaps (attack 12, as F15 for
    inline URLs). Checked with the owner's roles of now.
    """
    if not needs_own_login(sa.make_url(found.url), found.password):
        return True
    if found.entry.owner == ROOT_OWNER:
        return True
    owner = store.users.get(conn, found.entry.owner)
    return owner is not None and owner.is_admin


def _database_target(
    conn: Connection,
    store: Store,
    connection: str | None,
    url: str | None,
    user: User,
    access: Access,
    what: str,
) -> tuple[str, tuple[str, ...]]:
    if connection is not None:
        found = find_connection(conn, store, connection, user, access, what)
        policy = policy_of(store)
        database = sa.make_url(found.url)
        if database.get_backend_name() == "sqlite" and not _still_given(
            conn, store, found.entry, str(database.database), found.bases
        ):
            raise _refused(what, "connection", connection, access)
        if not _own_login(conn, store, found):
            raise InvalidDefinition(
                f"{what}: connection {connection!r} carries no user and password of its"
                " own; only an ADMIN's connection may use the server's own login"
            )
        # An ADMIN's SQLite connection may name any file inside the operator's roots.
        roots = policy.source_roots if access is Access.READ else policy.sink_roots
        return connection_url(found), roots
    assert url is not None
    return _inline_database(conn, store, url, user, access, what)


def _database_io(
    conn: Connection,
    store: Store,
    member: DatabaseSource | DatabaseSink,
    user: User,
    access: Access,
    what: str,
    raw: dict[str, Any],
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A database source or sink rewritten to the URL it resolves to, and its roots."""
    url, roots = _database_target(conn, store, member.connection, member.url, user, access, what)
    return {k: v for k, v in raw.items() if k != "connection"} | {"url": url}, roots


def _source_io(
    conn: Connection, store: Store, source: Any, user: User, raw: dict[str, Any]
) -> tuple[dict[str, Any], PathRoots]:
    what = "source"
    if isinstance(source, DatabaseSource):
        rewritten, roots = _database_io(conn, store, source, user, Access.READ, what, raw)
        return rewritten, PathRoots(roots, ())
    folder, relative, hidden = _file_target(
        conn, store, source.location, source.path, user, Access.READ, what
    )
    rewritten = {k: v for k, v in raw.items() if k != "location"}
    rewritten["path"] = os.path.join(folder, relative)
    return rewritten, PathRoots((folder,), (), hidden)


def _sink_io(
    conn: Connection, store: Store, sink: Any, user: User, raw: dict[str, Any]
) -> tuple[dict[str, Any], PathRoots]:
    what = "sink"
    if isinstance(sink, DatabaseSink):
        rewritten, roots = _database_io(conn, store, sink, user, Access.WRITE, what, raw)
        return rewritten, PathRoots((), roots)
    assert isinstance(sink, FileSink)
    if is_glob(sink.path):
        raise PathNotAllowed(f"{what}: the path {sink.path!r} must not hold wildcards")
    name = sink.path.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith(objects.HIDDEN_PREFIX):
        # Datamill's own temporary uploads, which the recommended bucket
        # lifecycle rule deletes (docs/scale-out.md): a sink so named would go too.
        raise PathNotAllowed(
            f"{what}: the file name {name!r} is reserved: names starting with"
            f" {objects.HIDDEN_PREFIX!r} are Datamill's temporary uploads"
        )
    folder, relative, hidden = _file_target(
        conn, store, sink.location, sink.path, user, Access.WRITE, what
    )
    rewritten = {k: v for k, v in raw.items() if k != "location"}
    rewritten["path"] = os.path.join(folder, relative)
    return rewritten, PathRoots((), (folder,), hidden)


def resolve_run_io(
    conn: Connection, store: Store, definition: JobDefinition, raw: dict[str, Any], user: User
) -> RunIO:
    """The definition as the engine gets it, checked with `user`'s rights (the run's owner)."""
    if isinstance(definition, ImportJobDefinition):
        source, roots = _source_io(conn, store, definition.source, user, raw["source"])
        return RunIO({**raw, "source": source}, roots)
    if isinstance(definition, ExportJobDefinition):
        sink, roots = _sink_io(conn, store, definition.sink, user, raw["sink"])
        return RunIO({**raw, "sink": sink}, roots)
    return RunIO(raw, PathRoots((), ()))


def check_definition_access(
    conn: Connection, store: Store, definition: JobDefinition, user: User
) -> None:
    """Refuse a definition naming a location, connection, path or URL `user` may not use."""
    raw: dict[str, Any] = definition.model_dump(mode="json", by_alias=True)
    resolve_run_io(conn, store, definition, raw, user)


# ---------------------------------------------------------------- start-up and new users


def _private_folder(policy: FilePolicy, name: str) -> str:
    return os.path.join(policy.users_root, name)


def _holds_anything(folder: str) -> bool:
    try:
        with os.scandir(folder) as found:
            return next(found, None) is not None
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable or not a folder: not an empty folder of hers either


def _pointing_into(conn: Connection, folder: str, private: str) -> bool:
    """Whether a location or SQLite connection other than the entry `private` names `folder`."""
    real = os.path.realpath(folder)
    for location in loc_store.all_locations(conn):
        if objects.is_uri(location.folder) or location.entry.path == private:
            continue
        if _inside(os.path.realpath(location.folder), real):
            return True
    return bool(_connections_in(conn, real))


def sqlite_file(url: str) -> str | None:
    """The real path of a SQLite connection URL's file; None for another database."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return os.path.realpath(parsed.database)


def _connections_in(conn: Connection, real: str) -> list[tuple[loc_store.DatabaseConnection, str]]:
    """The SQLite connections whose file lies in `real`, each with that file."""
    found = []
    for entry in loc_store.all_resources(conn, "connection"):
        connection = loc_store.get_connection(conn, entry.id)
        file = sqlite_file(connection.url) if connection is not None else None
        if connection is not None and file is not None and _inside(file, real):
            found.append((connection, file))
    return found


def _set_aside(conn: Connection, policy: FilePolicy, name: str) -> None:
    """Move what is in a new user's private folder out of her way (see ensure_private_location).

    It goes to `<users root>/.deleted-<random>/<name>`: no location covers it,
    so only an ADMIN reaches it (through the root's location). Every location
    and SQLite connection naming the old folder or something in it (the old
    private location, moved or renamed by an ADMIN, who may have shared it
    as an archive; a deleted steward's own) follows the files there: left
    behind, it would name the new user's folder (attack 12).
    """
    place = _private_folder(policy, name)
    if os.path.islink(place) or (os.path.lexists(place) and not os.path.isdir(place)):
        return  # not a folder of hers: the caller refuses what is in the way (N2)
    folder = os.path.realpath(place)
    moved = os.path.isdir(folder)
    try:
        parent = tempfile.mkdtemp(prefix=".deleted-", dir=policy.users_root)
        aside = os.path.join(parent, name)
        if moved:
            os.rename(folder, aside)
        else:
            os.mkdir(aside)  # nothing to move, but the entries naming it must go somewhere
    except OSError:
        raise Conflict(
            f"the private folder of a deleted user named {name!r} cannot be moved aside"
        ) from None
    # The entries below are moved in the user's creation transaction; the files
    # are not. Should it roll back, the entries name the old folder again, so
    # the files go back there (else an ADMIN's archive would name an empty one).
    sa.event.listen(conn, "rollback", lambda _: _put_back(folder, parent, moved=moved), once=True)
    aside = os.path.realpath(aside)
    for location in loc_store.all_locations(conn):
        real = "" if objects.is_uri(location.folder) else os.path.realpath(location.folder)
        if real and _inside(real, folder):
            # Moved with the files, not given anew: what was around it stays what it counts.
            moved_to = aside + real[len(folder) :]
            loc_store.set_location_folder(conn, location.entry.id, moved_to, bases=location.bases)
    for found, real in _connections_in(conn, folder):
        file = aside + real[len(folder) :]
        loc_store.set_connection(
            conn,
            found.entry.id,
            sa.make_url(found.url).set(database=file).render_as_string(hide_password=False),
            found.password,
            bases=found.bases,
        )


def _put_back(folder: str, parent: str, *, moved: bool) -> None:
    """Undo a set-aside whose user creation rolled back: the folder as it was."""
    aside = os.path.join(parent, os.path.basename(folder))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(folder)  # made empty by the creation; never anything written in it
        if moved:
            os.rename(aside, folder)
        else:
            os.rmdir(aside)
        os.rmdir(parent)
    except OSError:
        # Kept aside, nothing lost: an ADMIN finds it under the users root.
        _log.warning("the set-aside folder %s could not be put back to %s", aside, folder)


def ensure_private_location(
    conn: Connection, store: Store, name: str, *, created: bool = False
) -> None:
    """Give user `name` their private location `/Users/<name>/files.loc` (idempotent).

    `created`: the user was just made, so anything already in their folder
    is not theirs: a deleted user of the same name left it (deleting hands
    the location to an ADMIN, who may since have renamed or removed that
    entry), or someone put it there. It is set aside, and the new user
    starts with an empty folder.
    """
    policy = store.file_policy
    if policy is None or name in ("", ".", "..") or "/" in name or "\x00" in name:
        return  # such a name cannot be a folder of its own below users_root
    folder = _private_folder(policy, name)
    path = f"{HOME_ROOT}/{name}/{PRIVATE_LOCATION_NAME}"
    entry = store.files.find(conn, path)
    if created and (_holds_anything(folder) or _pointing_into(conn, folder, path)):
        _set_aside(conn, policy, name)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        # A file (or anything else) in the way of the folder (N2): a clear
        # refusal, never a 500; at start-up the user is skipped and logged.
        raise Conflict(
            f"the private folder of user {name!r} cannot be made: something is in the way"
        ) from None
    if not os.path.isdir(folder):
        raise Conflict(
            f"the private folder of user {name!r} cannot be made: something is in the way"
        )
    if entry is None:
        home = f"{HOME_ROOT}/{name}"
        if store.files.find(conn, home) is None:
            store.files.ensure_folder(conn, HOME_ROOT, ROOT_OWNER)
            home_id = store.files.ensure_folder(conn, home, name)
            store.files.set_others_flags(
                conn, home_id, readable=False, writable=False, executable=False
            )
        entry = store.files.create_resource(conn, path, "location", name)
        loc_store.insert_location(conn, entry.id, os.path.realpath(folder), bases=())
    elif entry.resource == "location":
        # Left over from a deleted user of the same name: handed to the new one,
        # without the groups an ADMIN shared it with meanwhile (to hand out the
        # old files, say): they would read the new user's folder (attack 12).
        store.files.set_owner(conn, entry.id, name)
        loc_store.set_location_folder(conn, entry.id, os.path.realpath(folder), bases=())
        if created:
            store.files.clear_group_flags(conn, entry.id)
    else:
        return  # the name is taken by something else; the user simply has no private location
    store.files.set_others_flags(conn, entry.id, readable=False, writable=False, executable=False)


def ensure_default_locations(store: Store, user_names: list[str]) -> None:
    """A private location per operator root, and per existing user; idempotent."""
    policy = policy_of(store)
    roots = sorted(set(policy.source_roots) | set(policy.sink_roots))
    with store.db.write() as conn:
        store.files.ensure_folder(conn, ROOT_LOCATIONS_FOLDER, ROOT_OWNER)
        for index, root in enumerate(roots):
            real = root if objects.is_uri(root) else os.path.realpath(root)
            if loc_store.folder_has_location(conn, real):
                continue
            name = "files" if index == 0 else f"files-{index + 1}"
            path = f"{ROOT_LOCATIONS_FOLDER}/{name}{LOCATION_EXTENSION}"
            if store.files.find(conn, path) is not None:
                continue
            entry = store.files.create_resource(conn, path, "location", ROOT_OWNER)
            loc_store.insert_location(conn, entry.id, real, bases=())
    for name in user_names:
        try:
            with store.db.write() as conn:
                ensure_private_location(conn, store, name)
        except Conflict as error:
            _log.warning("user %r has no private location: %s", name, error)
