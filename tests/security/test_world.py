"""The security world itself: each actor signs in, and only as themselves."""

from __future__ import annotations

from tests.security.conftest import Actors, auth


def test_each_actor_signs_in_with_their_own_password(actors: Actors) -> None:
    for name in ("admin", "eve", "bob"):
        assert actors.call(name, "GET", "/rest/user-management/users").status_code in (200, 403)
    wrong = actors.client.get("/rest/user-management/users", headers=auth("eve", "nope"))
    assert wrong.status_code == 401
