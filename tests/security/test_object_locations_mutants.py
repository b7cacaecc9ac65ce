"""Object-store (s3a://) locations at save time (services/locations.py `_innermost_object`,
`_object_target`): the cases their mutants showed untested.

Saving a definition checks it with the saver's rights; a run resolves it again
with its owner's rights (`resolve_run_io`, which the worker calls) and hands the
engine the object it reads or writes and the prefixes it must skip. Neither
contacts the object store, so these tests need no S3 server and no worker.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from datamill.domain.definitions import ExportJobDefinition, ImportJobDefinition
from datamill.services.locations import RunIO
from datamill.store import locations as loc_store
from tests.security.conftest import Actors
from tests.security.test_locations_mutants import _resolved

ROOT = "s3a://bkt/p"
NOT_INSIDE = "is not inside a location you may"
_NAMES = itertools.count()


@pytest.fixture
def objects_world(actors: Actors) -> Actors:
    """S3 roots `<ROOT>/data`, `<ROOT>/data-x` (sources) and `<ROOT>/out` (sink).

    bob owns `/Users/bob/s3.loc` on `<ROOT>/data` and `/Users/bob/out.loc` on
    `<ROOT>/out`; the admin owns `/Connections/x.loc` on `<ROOT>/data-x` (a
    name that starts like bob's) and `/Connections/inner.loc` on
    `<ROOT>/data/admin`, inside bob's. Every one is private to its owner.
    bob and eve each have an import job `src.imp`, the source of their exports.
    """
    node = actors.node
    policy = node.store.file_policy
    assert policy is not None
    node.store.file_policy = dataclasses.replace(
        policy,
        source_roots=(*policy.source_roots, f"{ROOT}/data", f"{ROOT}/data-x"),
        sink_roots=(*policy.sink_roots, f"{ROOT}/out"),
    )
    with node.store.db.write() as conn:
        for path, folder, owner in (
            ("/Connections/inner.loc", f"{ROOT}/data/admin", "admin"),
            ("/Users/bob/s3.loc", f"{ROOT}/data", "bob"),
            ("/Connections/x.loc", f"{ROOT}/data-x", "admin"),
            ("/Users/bob/out.loc", f"{ROOT}/out", "bob"),
            ("/Users/bob/elsewhere.loc", "s3a://bkt/q", "bob"),
        ):
            entry = node.store.files.create_resource(conn, path, "location", owner)
            node.store.files.set_others_flags(
                conn, entry.id, readable=False, writable=False, executable=False
            )
            loc_store.insert_location(conn, entry.id, folder, bases=())
    for user in ("bob", "eve"):  # the source of their exports
        source = {"location": f"/Users/{user}/files.loc", "path": "in.csv"}
        assert _import(actors, user, source, "src").status_code == 200
    return actors


def _import(actors: Actors, user: str, source: dict[str, Any], name: str = "") -> Any:
    name = name or f"o{next(_NAMES)}"
    body = {"path": f"/Users/{user}/{name}.imp", "source": {"kind": "csv", **source}}
    return actors.call(user, "POST", "/rest/import-job", body)


def _export(actors: Actors, user: str, sink: dict[str, Any]) -> Any:
    body = {
        "path": f"/Users/{user}/o{next(_NAMES)}.exp",
        "source": {"importJob": f"/Users/{user}/src.imp"},
        "sink": {"kind": "csv", **sink},
    }
    return actors.call(user, "POST", "/rest/export-job", body)


def _read(actors: Actors, user: str, source: dict[str, Any]) -> RunIO:
    return _resolved(actors, user, ImportJobDefinition(source={"kind": "csv", **source}))


def _refusal(response: Any) -> str:
    assert response.status_code == 400, response.text
    return str(response.json()["reason"])


def test_an_absolute_object_path_is_reached_through_the_innermost_location(
    objects_world: Actors,
) -> None:
    actors = objects_world
    for path, key in (
        (f"{ROOT}/data/mine.csv", "mine.csv"),
        (f"{ROOT}/data/sub/deep/mine.csv", "sub/deep/mine.csv"),
        (f"{ROOT}/data/adminx.csv", "adminx.csv"),
    ):
        assert _import(actors, "bob", {"path": path}).status_code == 200, path
        run = _read(actors, "bob", {"path": path})
        assert run.definition["source"]["path"] == f"{ROOT}/data/{key}"
        # bob's run reads his prefix and skips the admin's inside it.
        assert run.roots.source_roots == (f"{ROOT}/data",)
        assert run.roots.sink_roots == ()
        assert run.roots.excluded == (f"{ROOT}/data/admin",)
    # The admin reaches the inner prefix through the innermost location, which hides nothing.
    run = _read(actors, "admin", {"path": f"{ROOT}/data/admin/secret.csv"})
    assert run.definition["source"]["path"] == f"{ROOT}/data/admin/secret.csv"
    assert run.roots.source_roots == (f"{ROOT}/data/admin",)
    assert run.roots.excluded == ()
    run = _read(actors, "admin", {"path": f"{ROOT}/data/mine.csv"})
    assert run.roots.source_roots == (f"{ROOT}/data",)
    assert run.roots.excluded == ()


def test_an_object_path_outside_her_innermost_location_is_refused(objects_world: Actors) -> None:
    actors = objects_world
    for user, path in (
        ("bob", f"{ROOT}/data-x/secret.csv"),  # starts like his prefix, is the admin's
        ("bob", f"{ROOT}/data*/secret.csv"),
        ("bob", f"{ROOT}/data/admin/secret.csv"),  # inside his, but the admin's innermost
        ("bob", f"{ROOT}/data/admin/missing.csv"),
        ("bob", f"{ROOT}/data"),  # the location itself is no object inside it
        ("bob", f"{ROOT}/data/"),
        ("bob", "s3a://bkt/elsewhere/x.csv"),  # inside no location
        ("bob", "s3a://other-bkt/p/data/x.csv"),  # same key, another bucket
        ("eve", f"{ROOT}/data/mine.csv"),  # inside bob's, which she may not use
    ):
        assert _refusal(_import(actors, user, {"path": path})) == (
            f"source: {path!r} {NOT_INSIDE} read from"
        ), (user, path)
    # A glob over his whole prefix is saved; its run skips the admin's prefix.
    assert _import(actors, "bob", {"path": f"{ROOT}/data/**/*.csv"}).status_code == 200
    run = _read(actors, "bob", {"path": f"{ROOT}/data/**/*.csv"})
    assert run.definition["source"]["path"] == f"{ROOT}/data/**/*.csv"
    assert run.roots.excluded == (f"{ROOT}/data/admin",)


def test_an_object_location_applies_the_same_rules_to_bucket_and_key(
    objects_world: Actors,
) -> None:
    actors = objects_world
    mine = {"location": "/Users/bob/s3.loc"}
    run = _read(actors, "bob", mine | {"path": "sub/x.csv"})
    assert run.definition["source"] == {
        "kind": "csv",
        "path": f"{ROOT}/data/sub/x.csv",
        "header": True,
        "delimiter": ",",
        "quote": '"',
        "encoding": "utf-8",
    }
    assert run.roots.source_roots == (f"{ROOT}/data",)
    assert run.roots.excluded == (f"{ROOT}/data/admin",)
    assert _import(actors, "bob", mine | {"path": "adminx.csv"}).status_code == 200
    # The admin's prefix inside his location: hidden by name, unless a glob (skipped at run time).
    for path in ("admin/secret.csv", "admin/sub/x.csv", "admin"):
        assert _refusal(_import(actors, "bob", mine | {"path": path})) == (
            f"source: '/Users/bob/s3.loc' {NOT_INSIDE} read from"
        ), path
    assert _import(actors, "bob", mine | {"path": "admin/*.csv"}).status_code == 200
    # The key as written: no spelling that another key would alias.
    assert "must be plain names separated by single slashes" in _refusal(
        _import(actors, "bob", mine | {"path": "a//b.csv"})
    )
    # The admin may use the inner location: nothing is hidden from him.
    run = _read(actors, "admin", mine | {"path": "admin/secret.csv"})
    assert run.definition["source"]["path"] == f"{ROOT}/data/admin/secret.csv"
    assert run.roots.excluded == ()
    # A location outside the operator's roots answers like a missing one.
    assert _refusal(
        _import(actors, "bob", {"location": "/Users/bob/elsewhere.loc", "path": "x.csv"})
    ) == ("source: location '/Users/bob/elsewhere.loc' does not exist or you may not read from it")


def test_an_object_sink_needs_a_sink_root_and_write_rights(objects_world: Actors) -> None:
    actors = objects_world
    for sink in (
        {"path": f"{ROOT}/out/r.csv"},
        {"location": "/Users/bob/out.loc", "path": "r.csv"},
    ):
        assert _export(actors, "bob", sink).status_code == 200, sink
        definition = ExportJobDefinition(
            source={"importJob": "/Users/bob/src.imp"}, sink={"kind": "csv", **sink}
        )
        run = _resolved(actors, "bob", definition)
        assert run.definition["sink"]["path"] == f"{ROOT}/out/r.csv"
        assert run.roots.source_roots == ()
        assert run.roots.sink_roots == (f"{ROOT}/out",)
    # His source prefix is no sink root: refused like a missing location, whichever form.
    for sink, named in (
        ({"path": f"{ROOT}/data/r.csv"}, f"{ROOT}/data/r.csv"),
        ({"location": "/Users/bob/s3.loc", "path": "r.csv"}, "/Users/bob/s3.loc"),
    ):
        assert _refusal(_export(actors, "bob", sink)) == (
            f"sink: location {named!r} does not exist or you may not write to it"
        )
    # eve may not write to bob's prefix.
    assert _refusal(_export(actors, "eve", {"path": f"{ROOT}/out/r.csv"})) == (
        f"sink: '{ROOT}/out/r.csv' {NOT_INSIDE} write to"
    )


def _others(actors: Actors, path: str, **flags: bool) -> None:
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.find(conn, path)
        assert entry is not None
        actors.node.store.files.set_others_flags(
            conn, entry.id, executable=False, **({"readable": False, "writable": False} | flags)
        )


def test_an_object_key_is_kept_as_written_and_refused_by_name(objects_world: Actors) -> None:
    actors = objects_world
    # A key starting with the letters the relative part is cut from is kept whole.
    for name in ("Xy.csv", "XX/y.csv"):
        run = _read(actors, "bob", {"path": f"{ROOT}/data/{name}"})
        assert run.definition["source"]["path"] == f"{ROOT}/data/{name}"
        run = _read(actors, "bob", {"location": "/Users/bob/s3.loc", "path": name})
        assert run.definition["source"]["path"] == f"{ROOT}/data/{name}"
    plain = (
        "must be plain names separated by single slashes"
        " (letters, digits and _ . = + @ ~ , -; no '..', no '%')"
    )
    for source in (
        {"path": f"{ROOT}/data/a//b.csv"},
        {"location": "/Users/bob/s3.loc", "path": "a//b.csv"},
    ):
        named = f"{ROOT}/data/a//b.csv"
        assert _refusal(_import(actors, "bob", source)) == f"source: {named!r} {plain}"


def test_a_prefix_she_may_only_read_is_no_sink_of_hers(objects_world: Actors) -> None:
    actors = objects_world
    _others(actors, "/Users/bob/out.loc", readable=True)
    for sink, named in (
        ({"path": f"{ROOT}/out/r.csv"}, f"'{ROOT}/out/r.csv' {NOT_INSIDE} write to"),
        (
            {"location": "/Users/bob/out.loc", "path": "r.csv"},
            "location '/Users/bob/out.loc' does not exist or you may not write to it",
        ),
    ):
        assert _refusal(_export(actors, "eve", sink)) == f"sink: {named}"
    # Writable for her, but for a prefix inside it that she may only read.
    _others(actors, "/Users/bob/out.loc", readable=True, writable=True)
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.create_resource(
            conn, "/Connections/pub.loc", "location", "admin"
        )
        loc_store.insert_location(conn, entry.id, f"{ROOT}/out/pub", bases=())
    _others(actors, "/Connections/pub.loc", readable=True)
    assert _export(actors, "eve", {"path": f"{ROOT}/out/r.csv"}).status_code == 200
    for sink, named in (
        ({"path": f"{ROOT}/out/pub/r.csv"}, f"'{ROOT}/out/pub/r.csv'"),
        ({"location": "/Users/bob/out.loc", "path": "pub/r.csv"}, "'/Users/bob/out.loc'"),
    ):
        assert _refusal(_export(actors, "eve", sink)) == f"sink: {named} {NOT_INSIDE} write to"


def test_two_locations_on_one_prefix_decide_like_two_on_one_folder(objects_world: Actors) -> None:
    # Of two locations on the same prefix (or folder), the one first by path decides, alike
    # for objects and files: the admin's private `/Connections/a.loc`, before bob's own.
    actors = objects_world
    files = actors.node.settings.resolved_source_roots[0]
    with actors.node.store.db.write() as conn:
        for path, folder in (
            ("/Connections/a.loc", f"{ROOT}/data"),
            ("/Connections/b.loc", f"{files}/users/bob"),
        ):
            entry = actors.node.store.files.create_resource(conn, path, "location", "admin")
            loc_store.insert_location(conn, entry.id, folder, bases=())
    _others(actors, "/Connections/a.loc")
    _others(actors, "/Connections/b.loc")
    answers = {
        kind: _import(actors, "bob", {"path": path}).status_code
        for kind, path in (("object", f"{ROOT}/data/x.csv"), ("file", f"{files}/users/bob/x.csv"))
    }
    assert answers["object"] == answers["file"], answers
