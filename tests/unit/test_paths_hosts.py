"""paths.py: which address a database host is, and which one the connection is pinned to."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.engine.paths import check_database_url, expand_source_paths, safe_url
from datamill.errors import InvalidInput, PathNotAllowed
from tests.unit import test_paths

# The same allowed root, with a file, a sub-folder and the sibling "rootless" outside it.
root = test_paths.root


def _exact(text: str) -> str:
    return "^" + re.escape(text) + "$"


def _check(url: str, forbidden: tuple[str, ...] = ()) -> sa.URL:
    return check_database_url(url, (), forbidden, "source", must_exist=True)


@pytest.mark.parametrize("host", ["127.0.0.1X", "X127.0.0.1", "[X::1]", "a" * 64 + ".invalid"])
def test_a_host_that_is_no_address_and_no_name_does_not_resolve(host: str) -> None:
    # Nothing is trimmed from a host before it is looked up: an address with a
    # stray letter is a name, and no such name resolves. A label of 64
    # characters cannot be encoded for a lookup at all: the same answer, not a 500.
    url = f"postgresql://u@{host}/x"
    with pytest.raises(
        InvalidInput,
        match=_exact(f"source URL {url!r}: host {host.strip('[]')!r} does not resolve"),
    ):
        _check(url)


@pytest.mark.parametrize(
    "forbidden", ["postgresql://u@127.0.0.1X/store", "postgresql://u@X127.0.0.1/store"]
)
def test_a_metadata_host_is_the_name_the_operator_wrote(forbidden: str) -> None:
    # A metadata host that does not resolve guards that name, not the address
    # it would be without its stray letter: the local database passes.
    checked = _check("postgresql://u:p@127.0.0.1/store", (forbidden,))
    assert checked.query["hostaddr"] == "127.0.0.1"
    with pytest.raises(InvalidInput, match=r"does not resolve$"):
        _check(forbidden.replace("postgresql://u@", "postgresql://u:p@"), (forbidden,))


@pytest.mark.parametrize("host", ["[2001:db8::1%25eth0]", "[2001:db8::1%eth0]", "[2001:db8::1]"])
def test_a_zone_is_dropped_so_the_pinned_address_is_the_one_checked(host: str) -> None:
    # The metadata check compares addresses without their zone (is_local), so the
    # connection is pinned to that same plain address (docs/decisions.md).
    checked = _check(f"postgresql://u:p@{host}/x", ("postgresql://u@127.0.0.1/x",))
    assert checked.query["hostaddr"] == "2001:db8::1"


def test_a_name_of_both_families_is_pinned_to_its_lowest_ipv4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This machine's /etc/hosts gives localhost no ::1 and there is no DNS to
    # ask, so the answer of a name resolving to both families is given here.
    answer = ["2001:db8::1", "192.0.2.10", "::2", "192.0.2.9", "192.0.2.200", "2001:db8::"]
    answer += ["192.0.2.77", "192.0.2.30"]
    lookup = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "db.example":
            return lookup(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
            for a in answer
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    checked = _check("postgresql://u:p@db.example/x", ("postgresql://u@127.0.0.1/x",))
    assert checked.query["hostaddr"] == "192.0.2.9"


def test_a_sink_database_file_must_be_a_file_in_a_folder_that_exists(root: Path) -> None:
    def sink(path: str) -> sa.URL:
        return check_database_url(f"sqlite:///{path}", (str(root),), (), "sink", must_exist=False)

    assert sink(f"{root}/new.db").database == f"{root}/new.db"
    missing = f"{root}/missing/new.db"
    with pytest.raises(
        InvalidInput, match=_exact(f"sink folder {str(root / 'missing')!r} does not exist")
    ):
        sink(missing)
    with pytest.raises(InvalidInput, match=_exact(f"sink path {str(root / 'sub')!r} is a folder")):
        sink(f"{root}/sub")


def test_a_sqlite_uri_file_name_is_refused_as_no_file(root: Path) -> None:
    # SQLite reads a name starting with file: as a URI (mode, vfs, ...): not a plain file.
    url = f"sqlite:///file:{root}/a.db"
    with pytest.raises(InvalidInput) as refused:
        check_database_url(url, (str(root),), (), "source", must_exist=True)
    assert refused.value.message == f"source SQLite URL {safe_url(url)!r} must name a file"
    assert refused.value.http_status == 400


def test_a_store_url_that_does_not_parse_does_not_hide_the_others(root: Path) -> None:
    (root / "own.db").touch()
    (root / "their.db").touch()
    forbidden = ("not a url", "postgresql://u@[::1/x", f"sqlite:///{root}/own.db")
    url = f"sqlite:///{root}/own.db"
    with pytest.raises(
        PathNotAllowed, match=_exact(f"source URL {url!r} names Datamill's own database")
    ):
        check_database_url(url, (str(root),), forbidden, "source", must_exist=True)
    checked = check_database_url(
        f"sqlite:///{root}/their.db", (str(root),), forbidden, "source", must_exist=True
    )
    assert checked.database == f"{root}/their.db"


def test_the_addresses_this_machine_is_known_by_are_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A host whose names resolve to addresses no interface holds (a NAT address in
    # /etc/hosts, another for its full name): a URL naming either reaches the store.
    names = {"db-host": "192.0.2.50", "db-host.corp.example": "192.0.2.51"}
    lookup = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in names:
            return lookup(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostname", lambda: "db-host")
    monkeypatch.setattr(socket, "getfqdn", lambda: "db-host.corp.example")
    for address in names.values():
        url = f"postgresql://u:p@{address}/store"
        with pytest.raises(
            PathNotAllowed,
            match=_exact(f"source URL {safe_url(url)!r} names Datamill's own database"),
        ):
            _check(url, ("postgresql://u@localhost/store",))
    # And this machine is still what its interfaces hold.
    with pytest.raises(PathNotAllowed, match=r"names Datamill's own database$"):
        _check("postgresql://u:p@127.0.0.1/store", ("postgresql://u@localhost/store",))
    other = _check("postgresql://u:p@192.0.2.52/store", ("postgresql://u@localhost/store",))
    assert other.query["hostaddr"] == "192.0.2.52"


@pytest.mark.parametrize("host", ["a=b", "a'b", 'a"b', "a\\b"])
def test_a_host_with_conninfo_syntax_is_refused_as_the_host(host: str) -> None:
    with pytest.raises(
        InvalidInput,
        match=_exact("source URL: the host must not hold spaces, '=', quotes or backslashes"),
    ):
        _check(f"postgresql://u:p@{host}/x")


def test_a_sqlite_file_is_connected_where_it_was_checked_with_sqlites_own_driver(
    root: Path,
) -> None:
    # A link inside the root may be changed after the check; the connection goes
    # to the real file that was checked, through the driver Datamill ships.
    (root / "a.db").touch()
    (root / "link.db").symlink_to(root / "a.db")
    for url in (f"sqlite:///{root}/link.db", f"sqlite+pysqlite:///{root}/link.db"):
        checked = check_database_url(url, (str(root),), (), "source", must_exist=True)
        assert checked.render_as_string() == f"sqlite:///{root}/a.db"


def test_a_sqlite_file_named_like_the_postgresql_store_is_not_the_store(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's database name is no file name, wherever the server was started.
    (root / "store.db").touch()
    monkeypatch.chdir(root)
    checked = check_database_url(
        f"sqlite:///{root}/store.db",
        (str(root),),
        ("postgresql://u@localhost/store.db",),
        "source",
        must_exist=True,
    )
    assert checked.database == f"{root}/store.db"


def test_a_plain_source_path_outside_names_itself(root: Path) -> None:
    outside = str(root.parent / "rootless" / "c.csv")
    with pytest.raises(
        PathNotAllowed,
        match=_exact(f"source path {outside!r} is outside the allowed folders ({root})"),
    ):
        expand_source_paths(outside, (str(root),))


def test_an_object_store_root_allows_no_local_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made real, s3a://bucket/data would be the local folder ./s3a:/bucket/data.
    local = root / "s3a:" / "bucket" / "data"
    local.mkdir(parents=True)
    (local / "x.csv").write_text("x")
    monkeypatch.chdir(root)
    path = str(local / "x.csv")
    with pytest.raises(
        PathNotAllowed,
        match=_exact(f"source path {path!r} is outside the allowed folders (s3a://bucket/data)"),
    ):
        expand_source_paths(path, ("s3a://bucket/data",))


def test_a_plain_source_path_beside_an_excluded_location_is_read(root: Path) -> None:
    excluded = (str(root / "sub"),)
    found = expand_source_paths(str(root / "a.csv"), (str(root),), excluded=excluded)
    assert found == [str(root / "a.csv")]
    with pytest.raises(
        InvalidInput,
        match=_exact(
            f"source file {str(root / 'sub' / 'b.csv')!r} does not exist or is not a file"
        ),
    ):
        expand_source_paths(str(root / "sub" / "b.csv"), (str(root),), excluded=excluded)
