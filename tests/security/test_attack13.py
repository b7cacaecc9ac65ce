"""Twelfth attack (eleventh session, branch attack13): bases, the per-user cap, the set-aside.

docs/security.md, "Twelfth attack".
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from datamill.domain.status import JobStatus
from datamill.settings import Settings
from datamill.worker.worker import Worker
from tests.helpers import wait_terminal
from tests.security.conftest import Actors
from tests.security.test_attack8 import steve as steve  # location.define, connection.define
from tests.security.test_attack10 import SCHEMA, _run
from tests.security.test_attack12 import _download, _others
from tests.security.test_object_store_attacks import _put
from tests.spark.conftest import BUCKET
from tests.spark.conftest import s3_endpoint as s3_endpoint  # a real S3 server on loopback


@pytest.fixture
def s3_root() -> str:
    """An object-store root of this test alone (a test asking for it gets a real S3)."""
    return f"s3a://{BUCKET}/a{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The operator's root around the home (as in attack 8), and an S3 root if asked for."""
    roots: list[Path | str] = [tmp_path]
    extra = {}
    if "s3_root" in request.fixturenames:
        roots.append(request.getfixturevalue("s3_root"))
        extra = {
            "s3_endpoint": request.getfixturevalue("s3_endpoint"),
            "s3_access_key_id": "test-key",
            "s3_secret_access_key": "test-secret",
        }
    return Settings(
        **settings.model_dump(exclude_unset=True), source_roots=roots, sink_roots=roots, **extra
    )


@pytest.mark.parametrize("gone", ["deleted", "re-pointed away"])
def test_a_location_carved_from_a_share_ends_when_the_share_is_made_again_private(
    running: Actors, steve: str, tmp_path: Path, gone: str
) -> None:
    actors = running
    # steve carved a location out of admin's shared `team.loc` (recorded as its
    # base). admin then deleted `team.loc` (or re-pointed it elsewhere) and made
    # a new private location on the same folder: steve may no longer make a
    # location there, but his old one went on reading it, the new secret too
    # (seen on a real server with SQLite and PostgreSQL metadata): the re-check
    # counted only its bases, and the new location is none.
    team = tmp_path / "team"
    body = {"path": "/Connections/team.loc", "folder": str(team)}
    made = actors.call("admin", "POST", "/rest/location", body)
    assert made.status_code == 200, made.text
    _others(actors, "/Connections/team.loc", readable=True, writable=True)
    (team / "secret.csv").write_text("k\nshared\n")
    carved = {"path": "/Users/steve/t.loc", "folder": str(team)}
    assert actors.call(steve, "POST", "/rest/location", carved).status_code == 200
    source = {"kind": "csv", "location": "/Users/steve/t.loc", "path": "secret.csv"}
    imported = {"path": "/Users/steve/t.imp", "source": source, "schema": SCHEMA}
    assert actors.call(steve, "POST", "/rest/import-job", imported).status_code == 200
    assert _run(actors, steve, "/Users/steve/t.imp") is JobStatus.COMPLETED
    url = f"/rest/location/{made.json()['id']}"
    if gone == "deleted":
        assert actors.call("admin", "DELETE", url).status_code == 200
    else:
        moved = body | {"folder": str(tmp_path / "elsewhere")}
        assert actors.call("admin", "PUT", url, moved).status_code == 200
    private = {"path": "/Connections/team2.loc", "folder": str(team)}
    assert actors.call("admin", "POST", "/rest/location", private).status_code == 200
    (team / "secret.csv").write_text("k\nadmin's alone\n")
    again = carved | {"path": "/Users/steve/t2.loc"}
    assert actors.call(steve, "POST", "/rest/location", again).status_code == 400
    assert _run(actors, steve, "/Users/steve/t.imp") is JobStatus.ERROR
    assert _download(actors, steve, "/Users/steve/t.imp").splitlines() == ['"k"', '"shared"']
    resaved = imported | {"path": "/Users/steve/t3.imp"}
    refused = actors.call(steve, "POST", "/rest/import-job", resaved)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == (
        "source: location '/Users/steve/t.loc' does not exist or you may not read from it"
    )


def test_a_stewards_object_store_location_gives_out_only_what_she_may_use(
    running: Actors, steve: str, s3_root: str
) -> None:
    actors = running
    # A location's folder given by a definer is checked against the locations
    # around it (eighth attack), but an s3a:// folder skipped the check: steve's
    # location on admin's private prefix `hr` was accepted and his import read
    # its salaries (seen on a real server with SQLite metadata and a real S3);
    # one in a prefix shared read-only with him was his to write, and a run
    # never checked again whether he may still give it out.
    store = actors.node.settings.object_store
    assert store is not None
    key = s3_root.removeprefix(f"s3a://{BUCKET}/")
    _put(store, f"{key}/hr/salary.csv", "k\nhr\n")
    _put(store, f"{key}/team/mine/t.csv", "k\nteam\n")
    for name, readable in (("hr", False), ("team", True)):
        body = {"path": f"/Connections/{name}.loc", "folder": f"{s3_root}/{name}"}
        assert actors.call("admin", "POST", "/rest/location", body).status_code == 200
        _others(actors, f"/Connections/{name}.loc", readable=readable)
    for folder in ("hr", "hr/", "hr/sub", "team", "team/mine"):
        body = {"path": "/Users/steve/o.loc", "folder": f"{s3_root}/{folder}"}
        refused = actors.call(steve, "POST", "/rest/location", body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == (
            f"folder: '{s3_root}/{folder}' lies in a location you may not read,"
            " or in Datamill's own files"
        )
    # Shared to write as well: carved, used, and ended with the share.
    _others(actors, "/Connections/team.loc", readable=True, writable=True)
    body = {"path": "/Users/steve/o.loc", "folder": f"{s3_root}/team/mine"}
    assert actors.call(steve, "POST", "/rest/location", body).status_code == 200
    source = {"kind": "csv", "location": "/Users/steve/o.loc", "path": "t.csv"}
    imported = {"path": "/Users/steve/o.imp", "source": source, "schema": SCHEMA}
    assert actors.call(steve, "POST", "/rest/import-job", imported).status_code == 200
    assert _run(actors, steve, "/Users/steve/o.imp") is JobStatus.COMPLETED
    _others(actors, "/Connections/team.loc", readable=False)
    assert _run(actors, steve, "/Users/steve/o.imp") is JobStatus.ERROR
    assert _download(actors, steve, "/Users/steve/o.imp").splitlines() == ['"k"', '"team"']


def test_a_deleted_users_waiting_run_never_writes_into_a_new_users_folder(
    actors: Actors, tmp_path: Path
) -> None:
    # bob's export to his private location waited in the queue when admin
    # deleted him and made a new bob: it then ran (as the ADMIN, who may use
    # every location) and wrote the old bob's data into the new bob's folder,
    # whose location it names by path (seen on a real server with PostgreSQL
    # metadata). Runs of a deleted user that have not started now end CANCELED.
    node = actors.node
    folder = tmp_path / "users" / "bob"
    (folder / "in.csv").write_text("k\nold bob's\n")
    source = {"kind": "csv", "location": "/Users/bob/files.loc", "path": "in.csv"}
    imported = {"path": "/Users/bob/b.imp", "source": source, "schema": SCHEMA}
    assert actors.call("bob", "POST", "/rest/import-job", imported).status_code == 200
    sink = {"kind": "csv", "location": "/Users/bob/files.loc", "path": "out.csv"}
    export = {"path": "/Users/bob/b.exp", "source": {"importJob": "/Users/bob/b.imp"}, "sink": sink}
    assert actors.call("bob", "POST", "/rest/export-job", export).status_code == 200
    first = Worker(node.store, node.settings, node.wakeup)
    first.start()
    try:
        assert _run(actors, "bob", "/Users/bob/b.imp") is JobStatus.COMPLETED
    finally:
        first.shutdown(grace_seconds=1.0)
    queued = actors.call("bob", "POST", "/api/job-execution/Users/bob/b.exp/trigger")
    assert queued.status_code == 200, queued.text
    assert actors.call("admin", "DELETE", "/rest/user-management/users/bob").status_code == 200
    bob = {"name": "bob", "password": "pw", "roles": ["ANALYST"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", bob).status_code == 200
    second = Worker(node.store, node.settings, node.wakeup)
    second.start()
    try:
        ended = wait_terminal(node, queued.json()["job-execution-id"])
    finally:
        second.shutdown(grace_seconds=1.0)
    assert ended.status is JobStatus.CANCELED
    assert list(folder.iterdir()) == []
