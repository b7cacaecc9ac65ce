"""Keep local source and sink paths, and database URLs, inside what the operator allowed."""

from __future__ import annotations

import contextlib
import glob
import os
import socket

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from datamill.errors import InvalidDefinition, InvalidInput, PathNotAllowed

_GLOB_CHARS = frozenset("*?[")
_LOOPBACK = "localhost"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


def is_glob(path: str) -> bool:
    """Whether a path holds glob wildcards."""
    return any(c in _GLOB_CHARS for c in path)


def _real_roots(roots: tuple[str, ...]) -> list[str]:
    return [os.path.realpath(root) for root in roots]


def _inside(real_path: str, roots: tuple[str, ...]) -> bool:
    for real_root in _real_roots(roots):
        if real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep):
            return True
    return False


def _require_absolute(path: str, what: str) -> None:
    if "\x00" in path:
        raise PathNotAllowed(f"{what} {path!r} holds a NUL character")
    if not os.path.isabs(path):
        raise PathNotAllowed(f"{what} {path!r} must be an absolute path")


def check_path(path: str, roots: tuple[str, ...], what: str = "path") -> str:
    """The real path of `path` if it lies inside one of `roots`, else PathNotAllowed.

    Symbolic links and `..` are resolved first, so a link inside a root that
    points outside it is refused as well.
    """
    _require_absolute(path, what)
    real = os.path.realpath(path)
    if not _inside(real, roots):
        raise PathNotAllowed(
            f"{what} {path!r} is outside the allowed folders ({', '.join(roots) or 'none'})"
        )
    return real


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    parts = pattern.split(os.sep)
    fixed: list[str] = []
    for part in parts:
        if is_glob(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or os.sep


def expand_source_paths(path: str, roots: tuple[str, ...]) -> list[str]:
    """The real files a source path or glob names, each checked against the roots.

    The glob is expanded here rather than by DuckDB, so the engine only ever
    reads explicit files that passed the check. Roots are checked before
    existence, so nothing reveals whether a file outside them exists.
    """
    if not is_glob(path):
        real = check_path(path, roots, "source path")
        if not os.path.isfile(real):
            raise InvalidInput(f"source file {path!r} does not exist or is not a file")
        return [real]
    _require_absolute(path, "source glob")
    check_path(_glob_base(path), roots, "source glob")
    matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
    if not matches:
        raise InvalidInput(f"source glob {path!r} matches no file")
    # Each match is checked on its own: `*` may cross a symlinked folder, and a
    # `..` after a wildcard may climb out of the root.
    return sorted({check_path(m, roots, "source file") for m in matches})


def check_sink_path(path: str, roots: tuple[str, ...]) -> str:
    """The real final path of a sink file: its folder must exist inside a root."""
    _require_absolute(path, "sink path")
    if is_glob(path):
        raise PathNotAllowed(f"sink path {path!r} must not hold wildcards")
    if path.endswith(os.sep) or not os.path.basename(path):
        raise InvalidInput(f"sink path {path!r} must name a file, not a folder")
    parent = os.path.dirname(path)
    check_path(parent, roots, "sink folder")
    if not os.path.isdir(parent):
        raise InvalidInput(f"sink folder {parent!r} does not exist")
    real = check_path(path, roots, "sink path")
    if os.path.isdir(real):
        raise InvalidInput(f"sink path {path!r} is a folder")
    return real


# ---------------------------------------------------------------- database URLs


def safe_url(url: sa.URL | str) -> str:
    """A URL as text with its password hidden, for messages."""
    if isinstance(url, str):
        try:
            url = sa.make_url(url)
        except (ArgumentError, ValueError):
            return "<invalid URL>"
    return url.render_as_string(hide_password=True)


def _parse_url(url: str, what: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidDefinition(f"{what} URL {safe_url(url)!r} is not a SQLAlchemy URL") from None


def _query_value(url: sa.URL, key: str) -> str | None:
    value = url.query.get(key)
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


def _pg_identity(url: sa.URL) -> tuple[str, int, str]:
    """(host, port, database) as libpq would resolve them, for comparison."""
    # Connection options in the query string override the URL's parts (psycopg).
    host = (_query_value(url, "host") or url.host or "").lower().strip("[]")
    # A socket folder, like every loopback name, reaches this very machine.
    if host in _LOOPBACK_NAMES or host.startswith("/"):
        host = _LOOPBACK
    port_text = _query_value(url, "port") or url.port or 5432
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidDefinition(
            f"port {port_text!r} of {safe_url(url)!r} is not a number"
        ) from None
    database = _query_value(url, "dbname") or url.database or url.username or "postgres"
    return host, port, database


def _addresses(host: str) -> set[str]:
    """The IP addresses a host name resolves to (loopback collapsed), best effort."""
    if host == _LOOPBACK:
        return {_LOOPBACK}
    found = {host}
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(host, None):
            address = str(info[4][0])
            found.add(
                _LOOPBACK if address in _LOOPBACK_NAMES or address.startswith("127.") else address
            )
    return found


def _same_database(url: sa.URL, other: sa.URL) -> bool:
    backend = url.get_backend_name()
    if backend != other.get_backend_name():
        return False
    if backend == "sqlite":
        return bool(url.database and other.database) and os.path.realpath(
            str(url.database)
        ) == os.path.realpath(str(other.database))
    mine, theirs = _pg_identity(url), _pg_identity(other)
    if mine[1:] != theirs[1:]:
        return False
    return mine[0] == theirs[0] or bool(_addresses(mine[0]) & _addresses(theirs[0]))


def check_database_url(
    url: str,
    roots: tuple[str, ...],
    forbidden: tuple[str, ...],
    what: str,
    *,
    must_exist: bool,
) -> sa.URL:
    """The URL to connect to for a database source or sink, or a clear refusal.

    Only SQLite and PostgreSQL are supported. A SQLite file must lie inside
    `roots`; no URL may name a database in `forbidden` (Datamill's own store).
    """
    parsed = _parse_url(url, what)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.query:
            raise InvalidDefinition(f"{what} SQLite URL {safe_url(parsed)!r} takes no options")
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise InvalidDefinition(f"{what} SQLite URL {safe_url(parsed)!r} must name a file")
        real = check_path(database, roots, f"{what} database file")
        if must_exist and not os.path.isfile(real):
            raise InvalidInput(f"{what} database file {database!r} does not exist")
        if not must_exist:
            check_sink_path(database, roots)
        parsed = parsed.set(drivername="sqlite", database=real)
    elif backend == "postgresql":
        # psycopg (3) is the driver shipped with Datamill, whatever the URL names.
        parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        raise InvalidDefinition(
            f"{what} URL {safe_url(parsed)!r}: only sqlite and postgresql databases are supported"
        )
    for item in forbidden:
        try:
            other = sa.make_url(item)
        except (ArgumentError, ValueError):
            continue
        if _same_database(parsed, other):
            raise PathNotAllowed(f"{what} URL {safe_url(parsed)!r} names Datamill's own database")
    return parsed
