"""Who may give out a folder, when another's location encloses it (tenth session).

services/locations.py `check_given_folder`: a definer's own private folder is
hers whatever encloses it, but nothing else inside a location she may not
read is (docs/security.md, "Tenth attack"; the mutants in docs/testing.md).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import password_hash
from tests.security.conftest import PASSWORD, Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define


def _refusal(what: str, folder: Path) -> str:
    return (
        f"{what}: {str(folder)!r} lies in a location you may not read, or in Datamill's own files"
    )


def test_a_location_around_the_users_root_leaves_a_definer_her_own_folder_only(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    actors.node.store.users.create("stan", password_hash(PASSWORD), roles=("STEWARD",))
    around = {"path": "/Users/stan/users.loc", "folder": str(users)}
    assert actors.call("stan", "POST", "/rest/location", around).status_code == 200
    # stan's private location on the users root does not take steve's own
    # folder from him: he still carves a location and a SQLite file out of it.
    (users / steve / "sub").mkdir()
    mine = {"path": f"/Users/{steve}/sub.loc", "folder": str(users / steve / "sub")}
    made = actors.call(steve, "POST", "/rest/location", mine)
    assert made.status_code == 200, made.text
    database = users / steve / "mine.db"
    body = {"path": f"/Users/{steve}/mine.dst", "url": f"sqlite:///{database}"}
    made = actors.call(steve, "POST", "/rest/connection", body)
    assert made.status_code == 200, made.text
    # But the users root itself is inside stan's location, which steve may not read.
    again = {"path": f"/Users/{steve}/users.loc", "folder": str(users)}
    refused = actors.call(steve, "POST", "/rest/location", again)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == _refusal("folder", users)
