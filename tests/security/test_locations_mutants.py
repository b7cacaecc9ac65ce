"""Locations and database hosts (services/locations.py): the cases its mutants showed untested."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.domain.definitions import ExportJobDefinition, ImportJobDefinition
from datamill.engine.base import PathRoots
from datamill.services.locations import RunIO, policy_from_settings, resolve_run_io
from datamill.settings import Settings
from datamill.store import locations as loc_store
from datamill.store.files import ROOT_OWNER
from tests.security.conftest import Actors
from tests.security.test_connections import _connection, _sqlite_db

NOT_ALLOWED = "database URLs may name only hosts the operator allows (DATAMILL_DATABASE_HOSTS)"


def _allow(actors: Actors, hosts: list[str]) -> None:
    """The operator's DATAMILL_DATABASE_HOSTS, as the node would read it at start-up."""
    actors.node.settings.database_hosts = hosts
    actors.node.store.file_policy = policy_from_settings(actors.node.settings)


def _save(actors: Actors, name: str, url: str) -> Any:
    body = {
        "path": f"/Users/eve/{name}.imp",
        "source": {"kind": "database", "url": url, "table": "t"},
    }
    return actors.call("eve", "POST", "/rest/import-job", body)


def _readable_location(actors: Actors, path: str, folder: Path) -> None:
    """The admin's location `path` on `folder`, which every user may read but not write."""
    made = actors.call("admin", "POST", "/rest/location", {"path": path, "folder": str(folder)})
    assert made.status_code == 200, made.text
    flags = f"/api/filesystem/files/{made.json()['id']}/permission/others"
    assert actors.call("admin", "PUT", flags, {"readable": True}).status_code == 200


def test_allowed_database_hosts_are_case_blind(actors: Actors) -> None:
    # Host names are case-blind (RFC 4343): the operator's spelling and the user's may differ.
    _allow(actors, ["LocalHost"])
    for i, host in enumerate(("localhost", "LOCALHOST", "LocalHost")):
        saved = _save(actors, f"h{i}", f"postgresql://eve:s@{host}:5433/other")
        assert saved.status_code == 200, (host, saved.text)
    refused = _save(actors, "elsewhere", "postgresql://eve:s@10.1.2.3:5433/other")
    assert refused.status_code == 400, refused.text
    assert NOT_ALLOWED in refused.json()["reason"]


def test_an_allowed_host_with_a_port_allows_that_port_alone(actors: Actors) -> None:
    # `host:port` allows that port only; a URL without a port means PostgreSQL's 5432.
    _allow(actors, ["10.1.2.3:5433", "10.1.2.4:5432"])
    for name, url in (
        ("p1", "postgresql://eve:s@10.1.2.3:5433/x"),
        ("p2", "postgresql://eve:s@10.1.2.4/x"),
        ("p3", "postgresql://eve:s@10.1.2.4:5432/x"),
    ):
        saved = _save(actors, name, url)
        assert saved.status_code == 200, (url, saved.text)
    for name, url in (
        ("r1", "postgresql://eve:s@10.1.2.3/x"),
        ("r2", "postgresql://eve:s@10.1.2.3:5432/x"),
        ("r3", "postgresql://eve:s@10.1.2.4:5433/x"),
    ):
        refused = _save(actors, name, url)
        assert refused.status_code == 400, (url, refused.text)
        assert NOT_ALLOWED in refused.json()["reason"]


def test_a_nul_in_a_path_inside_a_location_is_refused_by_name(actors: Actors) -> None:
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in\x00.csv"}
    refused = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/nul.imp", "source": source}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "status": "failure",
        "reason": "source: the path must not hold a NUL character",
    }


def test_a_private_location_inside_a_shared_root_stays_hidden_past_an_object_store_one(
    actors: Actors,
) -> None:
    """N6 at save time, with an s3a:// location listed before the private ones."""
    files = Path(actors.node.settings.resolved_source_roots[0])
    listed = actors.call("admin", "GET", "/rest/location").json()
    root = next(item for item in listed if item["path"] == "/Connections/files.loc")
    url = f"/api/filesystem/files/{root['id']}/permission/others"
    assert actors.call("admin", "PUT", url, {"readable": True, "writable": True}).status_code == 200
    # An object-store location, as an operator with an S3 root would make one; its path sorts first.
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.create_resource(
            conn, "/Connections/a-bucket.loc", "location", ROOT_OWNER
        )
        loc_store.insert_location(conn, entry.id, "s3a://bucket/prefix", bases=())
    bob = files / "users" / "bob"
    (bob / "x.csv").write_text("id\n1\n")
    for path in ("users/bob/x.csv", "users/bob/new.csv"):
        source = {"kind": "csv", "location": "/Connections/files.loc", "path": path}
        refused = actors.call(
            "eve", "POST", "/rest/import-job", {"path": "/Users/eve/i.imp", "source": source}
        )
        assert refused.status_code == 400, (path, refused.text)
        assert refused.json()["reason"] == (
            f"source: {path!r} is not inside a location you may read from"
        )
    # A location inside the root that eve may only read: readable through the root, not writable.
    (files / "pub").mkdir()
    _readable_location(actors, "/Connections/pub.loc", files / "pub")
    source = {"kind": "csv", "location": "/Connections/files.loc", "path": "pub/x.csv"}
    read = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/p.imp", "source": source}
    )
    assert read.status_code == 200, read.text
    sink = {"kind": "csv", "location": "/Connections/files.loc", "path": "pub/y.csv"}
    body = {"path": "/Users/eve/p.exp", "source": {"importJob": "/Users/eve/p.imp"}, "sink": sink}
    refused = actors.call("eve", "POST", "/rest/export-job", body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == "sink: 'pub/y.csv' is not inside a location you may write to"
    # bob, who may use his own location, reads it through the shared root.
    source = {"kind": "csv", "location": "/Connections/files.loc", "path": "users/bob/x.csv"}
    mine = actors.call(
        "bob", "POST", "/rest/import-job", {"path": "/Users/bob/b.imp", "source": source}
    )
    assert mine.status_code == 200, mine.text


def test_an_operator_root_of_slash_holds_every_folder(actors: Actors) -> None:
    # An operator may name `/` as a root: every location's folder is inside it.
    settings = actors.node.settings
    rooted = Settings(**{**settings.model_dump(exclude_unset=True), "source_roots": ["/"]})
    actors.node.store.file_policy = policy_from_settings(rooted)
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    saved = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/root.imp", "source": source}
    )
    assert saved.status_code == 200, saved.text


def test_a_location_she_may_not_use_is_answered_like_a_missing_one_by_name(actors: Actors) -> None:
    own = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    made = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": own}
    )
    assert made.status_code == 200, made.text
    for reference in ("/Users/admin/files.loc", "/Users/admin/missing.loc"):
        source = {"kind": "csv", "location": reference, "path": "x.csv"}
        refused = actors.call(
            "eve", "POST", "/rest/import-job", {"path": "/Users/eve/r.imp", "source": source}
        )
        assert refused.status_code == 400, refused.text
        assert refused.json() == {
            "status": "failure",
            "reason": f"source: location {reference!r} does not exist or you may not read from it",
        }
        sink = {"kind": "csv", "location": reference, "path": "x.csv"}
        body = {
            "path": "/Users/eve/w.exp",
            "source": {"importJob": "/Users/eve/in.imp"},
            "sink": sink,
        }
        refused = actors.call("eve", "POST", "/rest/export-job", body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == (
            f"sink: location {reference!r} does not exist or you may not write to it"
        )


def test_a_connection_she_may_not_use_is_answered_like_a_missing_one_by_name(
    actors: Actors,
) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    _connection(actors, "d.dst", _sqlite_db(files / "shared" / "d.db"))
    for reference in ("/Connections/d.dst", "/Connections/missing.dst"):
        source = {"kind": "database", "connection": reference, "table": "items"}
        refused = actors.call(
            "eve", "POST", "/rest/import-job", {"path": "/Users/eve/c.imp", "source": source}
        )
        assert refused.status_code == 400, refused.text
        reason = f"source: connection {reference!r} does not exist or you may not read from it"
        assert refused.json() == {"status": "failure", "reason": reason}


def _resolved(actors: Actors, user: str, definition: Any) -> RunIO:
    """What a run owned by `user` would hand the engine (the worker's own call, no worker)."""
    node = actors.node
    raw = definition.model_dump(mode="json", by_alias=True)
    with node.store.db.read() as conn:
        owner = node.store.users.get(conn, user)
        assert owner is not None
        return resolve_run_io(conn, node.store, definition, raw, owner)


def _export(actors: Actors, sink: dict[str, Any], name: str) -> Any:
    body = {
        "path": f"/Users/eve/{name}.exp",
        "source": {"importJob": "/Users/eve/in.imp"},
        "sink": sink,
    }
    return actors.call("eve", "POST", "/rest/export-job", body)


def test_a_database_sink_needs_write_and_a_source_read_through_its_connection(
    actors: Actors,
) -> None:
    policy = actors.node.store.file_policy
    assert policy is not None
    files = Path(actors.node.settings.resolved_source_roots[0])
    db = files / "shared" / "d.db"
    entry = _connection(actors, "d.dst", _sqlite_db(db))
    own = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    made = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": own}
    )
    assert made.status_code == 200, made.text
    sink = {"kind": "database", "connection": "/Connections/d.dst", "table": "copy"}
    source = {"kind": "database", "connection": "/Connections/d.dst", "table": "items"}
    flags = f"/api/filesystem/files/{entry}/permission/others"
    for readable, writable in ((False, False), (True, False)):
        body = {"readable": readable, "writable": writable}
        assert actors.call("admin", "PUT", flags, body).status_code == 200
        refused = _export(actors, sink, "db")
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == (
            "sink: connection '/Connections/d.dst' does not exist or you may not write to it"
        )
    # Readable: her import through it is saved; its run reads that file within the source roots.
    saved = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/db.imp", "source": source}
    )
    assert saved.status_code == 200, saved.text
    run = _resolved(actors, "eve", ImportJobDefinition(source=source))
    assert run.definition["source"] == {
        "kind": "database",
        "url": f"sqlite:///{db}",
        "table": "items",
        "query": None,
    }
    assert run.roots == PathRoots(policy.source_roots, ())
    body = {"readable": True, "writable": True}
    assert actors.call("admin", "PUT", flags, body).status_code == 200
    saved = _export(actors, sink, "db")
    assert saved.status_code == 200, saved.text
    run = _resolved(
        actors, "eve", ExportJobDefinition(source={"importJob": "/Users/eve/in.imp"}, sink=sink)
    )
    assert run.definition["sink"]["url"] == f"sqlite:///{db}"
    assert "connection" not in run.definition["sink"]
    assert run.definition["sink"]["table"] == "copy"
    assert run.definition["source"]["importJob"] == "/Users/eve/in.imp"
    assert run.roots == PathRoots((), policy.sink_roots)


def test_an_inline_sqlite_sink_is_a_file_in_a_location_she_may_write(actors: Actors) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    own = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    made = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": own}
    )
    assert made.status_code == 200, made.text
    mine = files / "users" / "eve"
    # The run writes the file the URL names, tidied: `./` gone.
    sink = {"kind": "database", "url": f"sqlite:///{mine}/./sub/out.db", "table": "t"}
    assert _export(actors, sink, "mine").status_code == 200
    run = _resolved(
        actors, "eve", ExportJobDefinition(source={"importJob": "/Users/eve/in.imp"}, sink=sink)
    )
    assert run.definition["sink"]["url"] == f"sqlite:///{mine}/sub/out.db"
    assert run.roots == PathRoots((), (str(mine),))
    bobs = files / "users" / "bob" / "out.db"
    refused = _export(actors, sink | {"url": f"sqlite:///{bobs}"}, "bobs")
    assert refused.status_code == 400, refused.text
    assert (
        refused.json()["reason"] == f"sink: {str(bobs)!r} is not inside a location you may write to"
    )


def _import_reason(actors: Actors, user: str, source: dict[str, Any]) -> str:
    body = {"path": f"/Users/{user}/r.imp", "source": source}
    refused = actors.call(user, "POST", "/rest/import-job", body)
    assert refused.status_code == 400, (source, refused.text)
    return str(refused.json()["reason"])


def test_an_absolute_path_is_needed_without_a_location(actors: Actors) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    for path in ("in.csv", "users/eve/in.csv", f"{files}/users/eve/in\x00.csv"):
        assert _import_reason(actors, "eve", {"kind": "csv", "path": path}) == (
            f"source: {path!r} must be an absolute path or name a location"
        )


def test_inline_database_urls_are_refused_by_name(actors: Actors) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    for url, reason in (
        ("nonsense", "source: '<invalid URL>' is not a SQLAlchemy URL"),
        ("sqlite:///in.db", "source: SQLite URL 'sqlite:///in.db' must name a file"),
        ("sqlite://", "source: SQLite URL 'sqlite://' must name a file"),
        # The raw text is checked before parsing could drop or decode anything.
        (f"sqlite:///{files}/users/eve/a\x01.db", "source URL must not hold control characters"),
    ):
        source = {"kind": "database", "url": url, "table": "t"}
        assert _import_reason(actors, "eve", source) == reason, url


def test_an_inline_sqlite_source_in_a_location_she_may_only_read(actors: Actors) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    (files / "pub").mkdir()
    _readable_location(actors, "/Connections/pub.loc", files / "pub")
    source = {"kind": "database", "url": f"sqlite:///{files}/pub/d.db", "table": "t"}
    saved = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/pub.imp", "source": source}
    )
    assert saved.status_code == 200, saved.text
    run = _resolved(actors, "eve", ImportJobDefinition(source=source))
    assert run.definition["source"]["url"] == f"sqlite:///{files}/pub/d.db"
    assert run.roots == PathRoots((str(files / "pub"),), ())


def test_a_file_sink_is_the_file_inside_her_location_and_its_name_is_checked(
    actors: Actors,
) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    own = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    made = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": own}
    )
    assert made.status_code == 200, made.text
    mine = {"kind": "csv", "location": "/Users/eve/files.loc"}
    for path, name in (
        (".datamill-x.csv", ".datamill-x.csv"),
        ("a/b/.datamill-x.csv", ".datamill-x.csv"),
        ("a/.datamill-x.csv/", ".datamill-x.csv"),
        ("a b/.datamill-x.csv", ".datamill-x.csv"),
    ):
        refused = _export(actors, mine | {"path": path}, "n")
        assert refused.status_code == 400, (path, refused.text)
        assert refused.json()["reason"] == (
            f"sink: the file name {name!r} is reserved: names starting with"
            " '.datamill-' are Datamill's temporary uploads"
        )
    refused = _export(actors, mine | {"path": "out/*.csv"}, "g")
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == "sink: the path 'out/*.csv' must not hold wildcards"
    # Only the file's own name counts: a folder so named, or a name ending in X, is fine.
    for n, path in enumerate((".datamill-a/XX", "sub/outX")):
        saved = _export(actors, mine | {"path": path}, f"ok{n}")
        assert saved.status_code == 200, (path, saved.text)
    # A location the admin made inside her folder, private to him, is hidden from her run.
    _readable_location(actors, "/Connections/priv.loc", files / "users" / "eve" / "priv")
    _unreadable_root(actors)
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.find(conn, "/Connections/priv.loc")
        assert entry is not None
        actors.node.store.files.set_others_flags(
            conn, entry.id, readable=False, writable=False, executable=False
        )
    sink = mine | {"path": "sub/out.csv"}
    run = _resolved(
        actors, "eve", ExportJobDefinition(source={"importJob": "/Users/eve/in.imp"}, sink=sink)
    )
    real = str(files / "users" / "eve")
    assert run.definition["sink"] == {
        "kind": "csv",
        "path": f"{real}/sub/out.csv",
        "header": True,
        "delimiter": ",",
    }
    assert run.roots == PathRoots((), (real,), (f"{real}/priv",))


def test_a_path_inside_a_location_is_relative_and_tidied(actors: Actors) -> None:
    mine = {"kind": "csv", "location": "/Users/eve/files.loc"}
    assert _import_reason(actors, "eve", mine | {"path": "/in.csv"}) == (
        "source: with a location, 'path' is relative to it: '/in.csv'"
    )
    for path in (".", "./", "./."):
        assert _import_reason(actors, "eve", mine | {"path": path}) == (
            "source: the path must name a file inside the location"
        ), path
    real = Path(actors.node.settings.resolved_source_roots[0]) / "users" / "eve"
    for path in ("a//b.csv", "./a/./b.csv", "a/b.csv/"):
        run = _resolved(actors, "eve", ImportJobDefinition(source=mine | {"path": path}))
        assert run.definition["source"]["path"] == f"{real}/a/b.csv", path


def test_a_location_the_operator_moved_out_of_the_roots_is_answered_like_a_missing_one(
    actors: Actors,
) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    policy = actors.node.store.file_policy
    assert policy is not None
    actors.node.store.file_policy = dataclasses.replace(
        policy, source_roots=(str(files / "users" / "bob"),)
    )
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    assert _import_reason(actors, "eve", source) == (
        "source: location '/Users/eve/files.loc' does not exist or you may not read from it"
    )
    path = f"{files}/users/eve/in.csv"
    assert _import_reason(actors, "eve", {"kind": "csv", "path": path}) == (
        f"source: location {path!r} does not exist or you may not read from it"
    )


def _unreadable_root(actors: Actors) -> None:
    """The operator root's own location, `/Connections/files.loc`, closed to everyone but ADMINs."""
    listed = actors.call("admin", "GET", "/rest/location").json()
    root = next(item for item in listed if item["path"] == "/Connections/files.loc")
    url = f"/api/filesystem/files/{root['id']}/permission/others"
    assert actors.call("admin", "PUT", url, {"readable": False}).status_code == 200


def test_a_folder_named_like_another_plus_letters_holds_nothing_of_it(actors: Actors) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    _unreadable_root(actors)
    _readable_location(actors, "/Connections/dataX.loc", files / "dataX")
    path = f"{files}/data/x.csv"
    assert _import_reason(actors, "eve", {"kind": "csv", "path": path}) == (
        f"source: {path!r} is not inside a location you may read from"
    )
    inside = {"kind": "csv", "path": f"{files}/dataX/x.csv"}
    run = _resolved(actors, "eve", ImportJobDefinition(source=inside))
    assert run.definition["source"]["path"] == f"{files}/dataX/x.csv"


def test_a_location_on_slash_holds_every_absolute_path(actors: Actors, tmp_path: Path) -> None:
    settings = actors.node.settings
    rooted = Settings(**{**settings.model_dump(exclude_unset=True), "source_roots": ["/"]})
    actors.node.store.file_policy = policy_from_settings(rooted)
    _readable_location(actors, "/Connections/all.loc", Path("/"))
    path = f"{tmp_path}/elsewhere/x.csv"
    run = _resolved(actors, "eve", ImportJobDefinition(source={"kind": "csv", "path": path}))
    assert run.definition["source"]["path"] == path
    assert run.roots.source_roots == ("/",)
    # What she may not use inside it stays hidden: the operator's root, bob's folder.
    files = Path(settings.resolved_source_roots[0])
    assert {str(files), str(files / "users" / "bob")} <= set(run.roots.excluded)


def test_the_innermost_location_decides_whatever_the_order_of_their_paths(actors: Actors) -> None:
    # By path: a.loc (files/pub, the admin's alone), files.loc (the root), z.loc (files/pub/in,
    # readable by eve). Her file in files/pub/in is reached through z.loc, the innermost.
    files = Path(actors.node.settings.resolved_source_roots[0])
    _unreadable_root(actors)
    _readable_location(actors, "/Connections/a.loc", files / "pub")
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.find(conn, "/Connections/a.loc")
        assert entry is not None
        actors.node.store.files.set_others_flags(
            conn, entry.id, readable=False, writable=False, executable=False
        )
    _readable_location(actors, "/Connections/z.loc", files / "pub" / "in")
    for n, name in enumerate(("x.csv", "Xy.csv", "sub/Xz.csv")):
        source = {"kind": "csv", "path": f"{files}/pub/in/{name}"}
        saved = actors.call(
            "eve", "POST", "/rest/import-job", {"path": f"/Users/eve/z{n}.imp", "source": source}
        )
        assert saved.status_code == 200, saved.text
        run = _resolved(actors, "eve", ImportJobDefinition(source=source))
        assert run.definition["source"]["path"] == f"{files}/pub/in/{name}"
        assert run.roots.source_roots == (str(files / "pub" / "in"),)
    path = f"{files}/pub/x.csv"
    assert _import_reason(actors, "eve", {"kind": "csv", "path": path}) == (
        f"source: {path!r} is not inside a location you may read from"
    )


def test_the_sqlite_metadata_files_are_hidden_in_a_location_around_them(actors: Actors) -> None:
    policy = actors.node.store.file_policy
    assert policy is not None
    meta = sa.make_url(policy.metadata_url)
    if meta.get_backend_name() != "sqlite":
        pytest.skip("only a SQLite metadata database is a file")
    folder = os.path.dirname(os.path.realpath(str(meta.database)))
    name = os.path.basename(str(meta.database))
    actors.node.store.file_policy = dataclasses.replace(
        policy, source_roots=(*policy.source_roots, folder)
    )
    _readable_location(actors, "/Connections/meta.loc", Path(folder))
    for path in (name, f"{name}-wal"):
        source = {"kind": "csv", "location": "/Connections/meta.loc", "path": path}
        assert _import_reason(actors, "eve", source) == (
            f"source: {path!r} is not inside a location you may read from"
        )
    beside = {"kind": "csv", "location": "/Connections/meta.loc", "path": f"{name}x"}
    run = _resolved(actors, "eve", ImportJobDefinition(source=beside))
    assert f"{folder}/{name}" in run.roots.excluded


def test_an_allowed_host_that_does_not_resolve_is_refused_by_name(actors: Actors) -> None:
    _allow(actors, ["no-such-host.invalid"])
    url = "postgresql://eve:s@no-such-host.invalid/x"
    refused = _save(actors, "unresolved", url)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == (
        "source URL 'postgresql://eve:***@no-such-host.invalid/x':"
        " host 'no-such-host.invalid' does not resolve"
    )


def test_a_file_named_like_the_postgresql_metadata_database_is_an_ordinary_file(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL metadata the database's name is no file: a file so named in the
    # server's working directory, inside her own location, is hers to read and write.
    policy = actors.node.store.file_policy
    assert policy is not None
    mine = Path(actors.node.settings.resolved_source_roots[0]) / "users" / "eve"
    (mine / "store.db").write_text("id\n1\n")
    monkeypatch.chdir(mine)
    actors.node.store.file_policy = dataclasses.replace(
        policy, metadata_url="postgresql://u:p@localhost/store.db"
    )
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "store.db"}
    saved = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": source}
    )
    assert saved.status_code == 200, saved.text
    run = _resolved(actors, "eve", ImportJobDefinition(source=source))
    assert run.definition["source"]["path"] == f"{mine}/store.db"
    assert run.roots == PathRoots((str(mine),), (), ())
    sink = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "store.db"}
    assert _export(actors, sink, "pg").status_code == 200


def test_a_server_without_a_file_policy_refuses_files_and_says_why(actors: Actors) -> None:
    # Fail closed: a node whose locations were never installed refuses every file, even in
    # her own location, with an answer she can take to the operator (not a 500).
    own = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    actors.node.store.file_policy = None
    assert _import_reason(actors, "eve", own) == "no locations are configured on this server"


def test_a_workbook_names_no_file_and_is_saved(actors: Actors) -> None:
    # A workbook reads only Datamill's own results: its definition is checked for no
    # location, and saving it is not refused by the location rules.
    own = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    made = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": own}
    )
    assert made.status_code == 200, made.text
    workbook = {
        "path": "/Users/eve/w.wbk",
        "sheets": [
            {"kind": "data", "name": "rows", "source": {"importJob": "/Users/eve/in.imp"}},
            {"kind": "sql", "name": "all", "keep": True, "sql": "SELECT * FROM rows"},
        ],
    }
    saved = actors.call("eve", "POST", "/rest/workbook", workbook)
    assert saved.status_code == 200, saved.text
