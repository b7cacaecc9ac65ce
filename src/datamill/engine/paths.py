"""Keep local source and sink paths, and database URLs, inside what the operator allowed."""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import os
import socket

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from datamill.errors import InvalidDefinition, InvalidInput, PathNotAllowed

_GLOB_CHARS = frozenset("*?[")


def is_glob(path: str) -> bool:
    """Whether a path holds glob wildcards."""
    return any(c in _GLOB_CHARS for c in path)


def _real_roots(roots: tuple[str, ...]) -> list[str]:
    # An object-store root (s3a://...) holds no local file; realpath would make one up.
    return [os.path.realpath(root) for root in roots if "://" not in root]


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


DEFAULT_MAX_FILES = 10_000


def _refuse_parent_steps(path: str, what: str) -> None:
    # `..` after a wildcard used to climb out of the root (F7); a path that
    # needs `..` can always be written without it.
    if ".." in path.split(os.sep):
        raise PathNotAllowed(f"{what} {path!r} must not contain '..'")


def _glob_base(pattern: str) -> tuple[str, list[str]]:
    """The folder part of a glob before its first wildcard, and the parts after it."""
    parts = pattern.split(os.sep)
    for index, part in enumerate(parts):
        if is_glob(part):
            return os.sep.join(parts[:index]) or os.sep, [p for p in parts[index:] if p]
    return pattern, []


class _Expansion:
    """One glob expanded below its base: every folder entered and every match checked."""

    def __init__(
        self, pattern: str, roots: tuple[str, ...], limit: int, excluded: tuple[str, ...] = ()
    ) -> None:
        self.pattern = pattern
        self.roots = roots
        self.excluded = excluded
        self.limit = limit
        self.found: set[str] = set()
        self.seen: set[tuple[str, int]] = set()

    def enter(self, folder: str) -> str:
        """The real folder; a symlink or name that leads out of the roots is refused."""
        real = os.path.realpath(folder)
        if not _inside(real, self.roots):
            raise PathNotAllowed(
                f"source glob {self.pattern!r} leads outside the allowed folders at {folder!r}"
            )
        return real

    def refuse_link_out(self, path: str, leaf: bool) -> None:
        """Refuse a symbolic link out of the roots before asking what it leads to.

        Testing first whether it is a folder or a file, as the match does, would
        tell apart a link to an existing file out there from one to nothing (a
        link to /proc/<pid>/fd/<n> of a worker: whether another run holds it).
        """
        if os.path.islink(path):
            if leaf:
                check_path(path, self.roots, "source file")
            else:
                self.enter(path)

    def add(self, path: str) -> None:
        real = check_path(path, self.roots, "source file")
        if self.excluded and _inside(real, self.excluded):
            return  # inside a location the owner may not read: as if absent (N6)
        self.found.add(real)
        if len(self.found) > self.limit:
            raise InvalidInput(f"source glob {self.pattern!r} matches more than {self.limit} files")

    def expand(self, folder: str, parts: list[str]) -> None:
        real = self.enter(folder)
        if self.excluded and _inside(real, self.excluded):
            return  # a more specific location the owner may not read (N6)
        # A symlinked folder may lead back up: each (folder, rest of pattern) once.
        if (real, len(parts)) in self.seen:
            return
        self.seen.add((real, len(parts)))
        head, rest = parts[0], parts[1:]
        if head == "**":
            if rest:
                self.expand(folder, rest)
            for entry in _entries(folder):
                # A folder or a file: as a name that may be either, its link is refused alike.
                self.refuse_link_out(entry.path, leaf=False)
                if entry.is_dir():
                    self.expand(entry.path, parts)
                elif not rest and entry.is_file():
                    self.add(entry.path)
            return
        if is_glob(head):
            names = [e.name for e in _entries(folder) if fnmatch.fnmatchcase(e.name, head)]
        else:
            names = [head]
        for name in names:
            path = os.path.join(folder, name)
            self.refuse_link_out(path, leaf=not rest)
            if rest:
                if os.path.isdir(path):
                    self.expand(path, rest)
            elif os.path.isfile(path):
                self.add(path)


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as found:
            # Like glob: wildcards do not match hidden names.
            return sorted((e for e in found if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


def expand_source_paths(
    path: str,
    roots: tuple[str, ...],
    max_files: int = DEFAULT_MAX_FILES,
    excluded: tuple[str, ...] = (),
) -> list[str]:
    """The real files a source path or glob names, each checked against the roots.

    The glob is expanded here rather than by DuckDB, so the engine only ever
    reads explicit files that passed the check. Roots are checked before
    existence, so nothing reveals whether a file outside them exists. Every
    folder the expansion enters is checked too, so a glob never walks outside
    the roots, and at most `max_files` files match.
    """
    _refuse_parent_steps(path, "source path")
    if not is_glob(path):
        real = check_path(path, roots, "source path")
        if not os.path.isfile(real) or (excluded and _inside(real, excluded)):
            raise InvalidInput(f"source file {path!r} does not exist or is not a file")
        return [real]
    _require_absolute(path, "source glob")
    base, parts = _glob_base(path)
    check_path(base, roots, "source glob")
    expansion = _Expansion(path, roots, max_files, excluded)
    if os.path.isdir(base) and parts:
        expansion.expand(base, parts)
    if not expansion.found:
        raise InvalidInput(f"source glob {path!r} matches no file")
    return sorted(expansion.found)


def check_sink_path(path: str, roots: tuple[str, ...], excluded: tuple[str, ...] = ()) -> str:
    """The real final path of a sink file: its folder must exist inside a root.

    A path inside `excluded` (a more specific location the owner may not
    write) is refused as if outside the roots.
    """
    _require_absolute(path, "sink path")
    _refuse_parent_steps(path, "sink path")
    if is_glob(path):
        raise PathNotAllowed(f"sink path {path!r} must not hold wildcards")
    if path.endswith(os.sep) or not os.path.basename(path):
        raise InvalidInput(f"sink path {path!r} must name a file, not a folder")
    parent = os.path.dirname(path)
    check_path(parent, roots, "sink folder")
    if not os.path.isdir(parent):
        raise InvalidInput(f"sink folder {parent!r} does not exist")
    real = check_path(path, roots, "sink path")
    if excluded and _inside(real, excluded):
        # A location the owner may not write: as if its folder did not exist (N6).
        raise InvalidInput(f"sink folder {parent!r} does not exist")
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
    if has_control(url):
        raise InvalidDefinition(f"{what} URL must not hold control characters")
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidDefinition(f"{what} URL {safe_url(url)!r} is not a SQLAlchemy URL") from None
    check_url_text(parsed, what)
    return parsed


def has_control(text: str) -> bool:
    """Whether a text holds a control character (C0, DEL or C1)."""
    # C0, DEL and C1: libpq stops reading a conninfo value at a NUL (N1), and
    # no part of a database URL has a use for any of them.
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


# What libpq's conninfo syntax treats specially (separators, quoting); psycopg
# quotes keyword values, but no name, host or option needs these, so they are
# refused outright rather than trusted to the quoting.
_CONNINFO_SPECIAL = frozenset(" =\\'\"")


def _url_parts(url: sa.URL) -> list[tuple[str, str]]:
    parts = [
        ("user", url.username or ""),
        ("host", url.host or ""),
        ("database", url.database or ""),
    ]
    for key, value in url.query.items():
        parts.append(("option name", key))
        for item in value if isinstance(value, tuple) else (value,):
            parts.append((f"option {key!r}", str(item)))
    return parts


def check_url_text(
    url: sa.URL, what: str, password: str | None = None, raw: str | None = None
) -> None:
    """Refuse control characters in every part of a database URL, before anything compares it.

    Decoded parts count (`%00` as well as a raw NUL). A PostgreSQL URL's user,
    host, database and options may not hold conninfo separators or quotes
    either (spaces, `=`, quotes, backslashes); a password may hold them.
    """
    if raw is not None and has_control(raw):
        raise InvalidDefinition(f"{what} URL must not hold control characters")
    if password is not None and has_control(password):
        raise InvalidDefinition(f"{what} URL: the password must not hold control characters")
    if url.password is not None and has_control(str(url.password)):
        raise InvalidDefinition(f"{what} URL: the password must not hold control characters")
    postgres = url.get_backend_name() == "postgresql"
    for name, value in _url_parts(url):
        if has_control(value):
            raise InvalidDefinition(f"{what} URL: the {name} must not hold control characters")
        if postgres and any(c in _CONNINFO_SPECIAL for c in value):
            raise InvalidDefinition(
                f"{what} URL: the {name} must not hold spaces, '=', quotes or backslashes"
            )


# libpq options a URL may carry; every other one could redirect the connection
# (host, hostaddr, port, dbname, service, passfile, options, ...) and is refused.
SAFE_PG_OPTIONS = frozenset({"sslmode", "connect_timeout", "application_name"})
_LOCAL_SUFFIXES = ("localhost", ".localhost")


def _pg_parts(url: sa.URL, what: str) -> tuple[str, int, str]:
    """(host, port, database) of a PostgreSQL URL that names them plainly, else refused."""
    for key in url.query:
        if key not in SAFE_PG_OPTIONS:
            raise PathNotAllowed(
                f"{what} URL {safe_url(url)!r}: option {key!r} is not allowed"
                f" (allowed: {', '.join(sorted(SAFE_PG_OPTIONS))})"
            )
    host = (url.host or "").strip()
    if not host or host.startswith(("/", "@")) or host.lower().startswith("%2f"):
        raise PathNotAllowed(
            f"{what} URL {safe_url(url)!r} must name a host: unix sockets are not allowed"
        )
    if "," in host:
        raise PathNotAllowed(f"{what} URL {safe_url(url)!r} must name one host, not a list")
    if not url.database:
        raise InvalidDefinition(f"{what} URL {safe_url(url)!r} must name the database")
    return host.strip("[]"), int(url.port or 5432), url.database


def _normal(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def resolve_host(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address a host name or literal resolves to (empty if it does not resolve)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    literal = _normal(host)
    if literal is not None:
        found.add(literal)
    name = host.rstrip(".").lower()
    with contextlib.suppress(OSError, UnicodeError, ValueError):
        for info in socket.getaddrinfo(name or host, None):
            ip = _normal(str(info[4][0]))
            if ip is not None:
                found.add(ip)
    if name == "localhost" or name.endswith(_LOCAL_SUFFIXES):
        found.add(ipaddress.ip_address("127.0.0.1"))
    return found


def _own_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of this machine: its names' and every interface's (Linux)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    with contextlib.suppress(OSError, UnicodeError):
        for name in {socket.gethostname(), socket.getfqdn()}:
            found |= resolve_host(name)
    # A database listening on all interfaces is reached through any of them, and
    # the host name often resolves to none of them (127.0.1.1 on Debian).
    found |= _interface_addresses()
    return found


def _interface_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of this machine's network interfaces, read from /proc."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/net/if_inet6", encoding="ascii") as table,
    ):
        for line in table:
            found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/net/fib_trie", encoding="ascii") as trie,
    ):
        last = ""
        for line in trie:
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif text.startswith("/32 host LOCAL") and last:
                found.add(ipaddress.IPv4Address(last))
    return found


_EMBEDDING_V4 = tuple(
    ipaddress.IPv6Network(net) for net in ("::/96", "::ffff:0:0/96", "64:ff9b::/96")
)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (compatible, mapped, NAT64, 6to4), if any."""
    if any(ip in net for net in _EMBEDDING_V4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address reaches this very machine (every interface's address counts)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # A zone (fe80::1%eth0) names the interface, not another machine.
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_v4(ip)
        if inner is not None and ip not in (ipaddress.IPv6Address("::"),):
            if ip == ipaddress.IPv6Address("::1"):
                return True
            return is_local(inner)
    return ip.is_loopback or ip.is_unspecified or ip in _own_addresses()


def _metadata_target(other: sa.URL) -> tuple[set[str], int, str] | None:
    """Addresses (or 'local'), port and database of a PostgreSQL metadata URL."""
    if other.get_backend_name() != "postgresql":
        return None
    host = _query_value(other, "host") or other.host or ""
    port = int(_query_value(other, "port") or other.port or 5432)
    database = _query_value(other, "dbname") or other.database or other.username or "postgres"
    if not host or host.startswith("/"):
        return {"local"}, port, database
    addresses = {"local" if is_local(ip) else str(ip) for ip in resolve_host(host.strip("[]"))}
    return addresses or {host.lower()}, port, database


def _query_value(url: sa.URL, key: str) -> str | None:
    value = url.query.get(key)
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


# The files SQLite and Datamill keep beside a database (the writers' lock,
# store/filelock.py; the start-up lock, store/migrate.py): the same database,
# as far as reading, locking or replacing one goes.
DATABASE_SIDE_FILES = ("-wal", "-shm", "-journal", "-writers", ".startup-lock")


def _database_names(url: str) -> tuple[str, ...]:
    """A SQLite URL's database file: its real path, then the name as written if a link."""
    with contextlib.suppress(ArgumentError, ValueError):
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            # SQLite keeps -wal/-shm beside the link's target; Datamill's own
            # locks (-writers, .startup-lock) follow the name as written.
            named = os.path.abspath(str(parsed.database))
            return tuple(dict.fromkeys((os.path.realpath(named), named)))
    return ()


def sqlite_database_files(url: str) -> tuple[str, ...]:
    """The paths of a SQLite URL's database and the files beside it; none for other URLs.

    The real path first; a database named through a symbolic link adds the
    link's own side files, where Datamill's lock files are.
    """
    return tuple(
        name + suffix for name in _database_names(url) for suffix in ("", *DATABASE_SIDE_FILES)
    )


def names_own_database(real: str, forbidden: tuple[str, ...]) -> bool:
    """Whether the real path `real` is a SQLite database of `forbidden` or a file beside it.

    The files beside it (`-wal`, `-shm`, `-journal`, the writers' lock
    `-writers`) are the same database: writing one corrupts or stalls it.
    Any `<database>-...` counts, SQLite's other journals included.
    """
    for item in forbidden:
        if real in sqlite_database_files(item):
            return True
        if any(real.startswith(name + "-") for name in _database_names(item)):
            return True
    return False


def check_postgres_url(url: sa.URL, forbidden: tuple[str, ...], what: str) -> sa.URL:
    """The URL pinned to the one address it was checked for; the metadata database refused.

    The host is resolved once here and libpq is told to connect to exactly that
    address (`hostaddr`), so a name that resolves elsewhere a moment later
    cannot lead the connection to Datamill's own database.
    """
    check_url_text(url, what)
    host, port, database = _pg_parts(url, what)
    addresses = resolve_host(host)
    if not addresses:
        raise InvalidInput(f"{what} URL {safe_url(url)!r}: host {host!r} does not resolve")
    mine = {"local" if is_local(ip) else str(ip) for ip in addresses}
    for item in forbidden:
        try:
            target = _metadata_target(sa.make_url(item))
        except (ArgumentError, ValueError):
            continue
        if target is not None and target[1:] == (port, database) and mine & target[0]:
            raise PathNotAllowed(f"{what} URL {safe_url(url)!r} names Datamill's own database")
    pinned = sorted(addresses, key=lambda ip: (ip.version, int(ip)))[0]
    return url.set(drivername="postgresql+psycopg", query={**url.query, "hostaddr": str(pinned)})


def resolved_url(url: str | None) -> str:
    """The URL the worker resolved for a database source or sink (its connection's)."""
    if url is None:
        # The worker puts the connection's URL here; an engine never reads the store.
        raise InvalidDefinition("the database connection was not resolved for this run")
    return url


def check_database_url(
    url: str,
    roots: tuple[str, ...],
    forbidden: tuple[str, ...],
    what: str,
    *,
    must_exist: bool,
    forbidden_folders: tuple[str, ...] = (),
) -> sa.URL:
    """The URL to connect to for a database source or sink, or a clear refusal.

    Only SQLite and PostgreSQL are supported. A SQLite file must lie inside
    `roots` and outside `forbidden_folders` (the data root); no URL may name a
    database in `forbidden` (Datamill's own store), however it is spelled.
    """
    parsed = _parse_url(url, what)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.query:
            raise InvalidDefinition(f"{what} SQLite URL {safe_url(parsed)!r} takes no options")
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise InvalidDefinition(f"{what} SQLite URL {safe_url(parsed)!r} must name a file")
        _refuse_parent_steps(database, f"{what} database file")
        real = check_path(database, roots, f"{what} database file")
        if forbidden_folders and _inside(real, forbidden_folders):
            raise PathNotAllowed(f"{what} database file {database!r} is inside Datamill's data")
        if must_exist and not os.path.isfile(real):
            raise InvalidInput(f"{what} database file {database!r} does not exist")
        if not must_exist:
            check_sink_path(database, roots)
        if names_own_database(real, forbidden):
            raise PathNotAllowed(f"{what} URL {safe_url(parsed)!r} names Datamill's own database")
        return parsed.set(drivername="sqlite", database=real)
    if backend == "postgresql":
        # psycopg (3) is the driver shipped with Datamill, whatever the URL names.
        return check_postgres_url(parsed, forbidden, what)
    raise InvalidDefinition(
        f"{what} URL {safe_url(parsed)!r}: only sqlite and postgresql databases are supported"
    )
