"""Locations and database hosts (services/locations.py): the cases its mutants showed untested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamill.services.locations import policy_from_settings
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
        loc_store.insert_location(conn, entry.id, "s3a://bucket/prefix")
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
    made = actors.call(
        "admin",
        "POST",
        "/rest/location",
        {"path": "/Connections/pub.loc", "folder": str(files / "pub")},
    )
    assert made.status_code == 200, made.text
    flags = f"/api/filesystem/files/{made.json()['id']}/permission/others"
    assert actors.call("admin", "PUT", flags, {"readable": True}).status_code == 200
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
