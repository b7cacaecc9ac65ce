"""A new user's folder set aside, when the user's creation then fails.

docs/security.md, "Eleventh attack", "Left" (closed in the eleventh session).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from datamill.errors import Conflict
from tests.security.conftest import Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home


def _fails_later(conn: Connection, name: str) -> None:
    # A step of making the user after the private location's (another created
    # hook here; a lost database connection or a full disk at the commit alike).
    raise Conflict(f"user {name!r} cannot be made now")


@pytest.mark.parametrize("old_files", ["some", "none", "folder gone"])
def test_a_failed_creation_leaves_a_deleted_users_archive_naming_its_files(
    actors: Actors, tmp_path: Path, old_files: str
) -> None:
    # Making a new bob moves the old bob's folder aside, and every entry naming
    # it with it (admin's archive of his private location), in the creation's
    # transaction. When the creation failed after
    # that, the entries rolled back to <files>/users/bob but the files stayed
    # aside: admin's archive of the old bob named an empty folder, and the old
    # files lay in a `.deleted-*` folder nothing named.
    users = tmp_path / "users"
    if old_files == "some":
        (users / "bob" / "salary.csv").write_text("k\nold bob's\n")
    assert actors.call("admin", "DELETE", "/rest/user-management/users/bob").status_code == 200
    renamed = actors.call("admin", "PUT", "/api/filesystem/folders/Users/bob", {"name": "archive"})
    assert renamed.status_code == 200, renamed.text
    archive = actors.call("admin", "GET", "/api/filesystem/files/Users/archive/files.loc").json()
    before = actors.call("admin", "GET", f"/rest/location/{archive['id']}").json()["folder"]
    if old_files == "folder gone":
        (users / "bob").rmdir()
    bob = {"name": "bob", "password": "pw", "roles": ["ANALYST"]}
    hooks = actors.node.store.users.created_hooks
    hooks.append(_fails_later)
    try:
        failed = actors.call("admin", "POST", "/rest/user-management/users", bob)
    finally:
        hooks.remove(_fails_later)
    assert failed.status_code == 409, failed.text
    assert failed.json()["reason"] == "user 'bob' cannot be made now"
    found = actors.call("admin", "GET", f"/rest/location/{archive['id']}").json()
    assert found["folder"] == before
    if old_files == "folder gone":
        assert not (users / "bob").exists()
    else:
        kept = [path.read_text() for path in (users / "bob").iterdir()]
        assert kept == (["k\nold bob's\n"] if old_files == "some" else [])
    assert list(users.glob(".deleted-*")) == []
    # Made for real later, the new bob starts empty and the archive follows the files.
    assert actors.call("admin", "POST", "/rest/user-management/users", bob).status_code == 200
    assert list((users / "bob").iterdir()) == []
    (aside,) = users.glob(".deleted-*/bob")
    found = actors.call("admin", "GET", f"/rest/location/{archive['id']}").json()
    assert found["folder"] == str(aside)
    kept = [path.read_text() for path in aside.iterdir()]
    assert kept == (["k\nold bob's\n"] if old_files == "some" else [])
