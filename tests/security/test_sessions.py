"""The session cookie of a browser-style login (GET /browser), attacked.

A CLI logs in once with Basic credentials and from then on sends only the
cookie. Each test checks that a cookie stops working when it should: forged,
altered, expired, another user's, after a password change, a deletion, a
logout; and that another site cannot make a browser use it for a change.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.services.sessions import COOKIE_NAME, SECRET_FILE, Sessions, load_secret
from tests.security.conftest import Actors, auth

ME = "/rest/user-management/logged-in-user"


def login(actors: Actors, user: str, password: str = "pw") -> str:
    """GET /browser with Basic credentials, as a Datameer CLI logs in; the cookie value."""
    response = actors.client.get("/browser", headers=auth(user, password))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "username": user}
    value = response.cookies.get(COOKIE_NAME)
    assert value
    actors.client.cookies.clear()  # each call below says which cookie it sends
    return value


def with_cookie(actors: Actors, cookie: str, method: str, url: str, **kw: object) -> httpx.Response:
    """One request that carries only the cookie (no Authorization header)."""
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    return actors.client.request(method, url, headers=headers, **kw)  # type: ignore[arg-type]


def refused(response: httpx.Response) -> None:
    """The 401 of an ended or invalid session."""
    assert response.status_code == 401, response.text
    assert "log in again" in response.json()["reason"]


def sessions_of(actors: Actors) -> Sessions:
    """A Sessions with the server's own key: what a thief who had the key could sign."""
    settings = actors.node.settings
    return Sessions(actors.node.store, load_secret(settings.resolved_home, None), 3600)


def test_the_login_cookie_authenticates_every_route_alone(actors: Actors) -> None:
    response = actors.client.get("/browser", headers=auth("eve"))
    header = response.headers["set-cookie"]
    assert header.startswith(f"{COOKIE_NAME}=")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "samesite=strict" in header.lower()
    assert "secure" not in attributes  # plain http here; see the https test
    cookie = login(actors, "eve")
    assert with_cookie(actors, cookie, "GET", ME).json()["username"] == "eve"
    # Rights are the user's own: eve may not create a group, admin's cookie may.
    group = {"name": "by-cookie"}
    denied = with_cookie(actors, cookie, "POST", "/rest/user-management/groups", json=group)
    assert denied.status_code == 403, denied.text
    admin = login(actors, "admin")
    made = with_cookie(actors, admin, "POST", "/rest/user-management/groups", json=group)
    assert made.json() == {"status": "success", "name": "by-cookie"}
    # The status fast path falls back to the route, which takes the cookie too.
    status = with_cookie(actors, cookie, "GET", "/api/job-execution/999999/status")
    assert status.status_code == 404, status.text


def test_the_cookie_is_secure_when_the_login_came_over_https(actors: Actors) -> None:
    response = actors.client.get("https://testserver/browser", headers=auth("eve"))
    assert response.status_code == 200
    attributes = {p.strip().lower() for p in response.headers["set-cookie"].split(";")}
    assert "secure" in attributes


def test_a_cookie_login_does_not_extend_itself(actors: Actors) -> None:
    cookie = login(actors, "eve")
    again = with_cookie(actors, cookie, "GET", "/browser")
    assert again.json() == {"status": "success", "username": "eve"}
    assert "set-cookie" not in again.headers


def test_a_forged_or_altered_cookie_is_refused(actors: Actors) -> None:
    cookie = login(actors, "eve")
    payload, signature = cookie.split(".")
    claim = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claim["u"] = "admin"
    as_admin = base64.urlsafe_b64encode(json.dumps(claim).encode()).rstrip(b"=").decode()
    other_key = Sessions(actors.node.store, b"k" * 32, 3600)
    with actors.node.store.db.read() as conn:
        admin = actors.node.store.users.get(conn, "admin")
    assert admin is not None
    for forged in (
        f"{as_admin}.{signature}",  # eve's signature on a claim naming admin
        other_key.issue(admin),  # signed with another key
        f"{payload}.{signature[:-2]}AA",
        payload,
        "",
        "a.b.c",
        "x" * 5000,
    ):
        response = with_cookie(actors, forged, "GET", ME)
        if forged:
            refused(response)
        else:
            assert response.status_code == 401
    latin = actors.client.get(ME, headers={"Cookie": f"{COOKIE_NAME}=\xe9.\xe9".encode("latin-1")})
    refused(latin)
    assert with_cookie(actors, cookie, "GET", ME).json()["username"] == "eve"


def test_an_expired_cookie_is_refused(actors: Actors) -> None:
    with actors.node.store.db.read() as conn:
        eve = actors.node.store.users.get(conn, "eve")
    assert eve is not None
    keyed = sessions_of(actors)
    fresh = keyed.issue(eve)
    # The same key and claim, issued a lifetime ago (no waiting: the clock is the issuer's).
    past = Sessions(
        actors.node.store, load_secret(actors.node.settings.resolved_home, None), 3600,
        clock=lambda: time.time() - 3601,
    )  # fmt: skip
    assert with_cookie(actors, fresh, "GET", ME).json()["username"] == "eve"
    refused(with_cookie(actors, past.issue(eve), "GET", ME))


def test_each_cookie_is_its_own_users(actors: Actors) -> None:
    eve, bob = login(actors, "eve"), login(actors, "bob")
    assert with_cookie(actors, eve, "GET", ME).json()["username"] == "eve"
    assert with_cookie(actors, bob, "GET", ME).json()["username"] == "bob"
    # bob's cookie reads nothing that is only eve's.
    denied = with_cookie(actors, bob, "GET", "/rest/user-management/users/eve")
    assert denied.status_code == 403


def test_a_password_change_ends_the_sessions(actors: Actors) -> None:
    cookie = login(actors, "eve")
    other = login(actors, "eve")
    changed = actors.client.put(
        "/rest/user-management/password/eve", headers=auth("eve"), content="n3w"
    )
    assert changed.json() == {"status": "success"}
    refused(with_cookie(actors, cookie, "GET", ME))
    refused(with_cookie(actors, other, "GET", ME))
    # Changing it back brings no old session back: the hash is a new one.
    actors.client.put(
        "/rest/user-management/password/eve", headers=auth("eve", "n3w"), content="pw"
    )
    refused(with_cookie(actors, cookie, "GET", ME))
    assert with_cookie(actors, login(actors, "eve"), "GET", ME).status_code == 200


def test_deleting_the_user_ends_the_sessions_also_for_a_new_user_of_that_name(
    actors: Actors,
) -> None:
    cookie = login(actors, "eve")
    assert actors.call("admin", "DELETE", "/rest/user-management/users/eve").status_code == 200
    refused(with_cookie(actors, cookie, "GET", ME))
    recreated = actors.call(
        "admin", "POST", "/rest/user-management/users", {"username": "eve", "password": "pw"}
    )
    assert recreated.status_code == 200, recreated.text
    refused(with_cookie(actors, cookie, "GET", ME))


def test_logout_ends_every_session_of_the_user_only(actors: Actors) -> None:
    cookie, second, bob = login(actors, "eve"), login(actors, "eve"), login(actors, "bob")
    out = with_cookie(actors, cookie, "POST", "/logout")
    assert out.json() == {"status": "success"}
    cleared = out.headers["set-cookie"]
    assert cleared.startswith(f'{COOKIE_NAME}=""') and "max-age=0" in cleared.lower()
    refused(with_cookie(actors, cookie, "GET", ME))
    refused(with_cookie(actors, second, "GET", ME))
    assert with_cookie(actors, bob, "GET", ME).json()["username"] == "bob"
    # Basic credentials still work, and a new login gives a working cookie.
    assert actors.call("eve", "GET", ME).status_code == 200
    assert with_cookie(actors, login(actors, "eve"), "GET", ME).status_code == 200
    # Logging out with an ended cookie, or none, is no error; wrong Basic credentials are.
    assert with_cookie(actors, cookie, "GET", "/logout").json() == {"status": "success"}
    assert actors.client.get("/logout").json() == {"status": "success"}
    assert actors.client.get("/logout", headers=auth("eve", "wrong")).status_code == 401


def test_logout_with_basic_credentials_ends_the_users_sessions(actors: Actors) -> None:
    cookie = login(actors, "eve")
    assert actors.client.get("/logout", headers=auth("eve")).json() == {"status": "success"}
    refused(with_cookie(actors, cookie, "GET", ME))


def test_a_user_without_a_password_never_has_a_session(actors: Actors) -> None:
    made = actors.call("admin", "POST", "/rest/user-management/users", {"username": "nopw"})
    assert made.status_code == 200, made.text
    with actors.node.store.db.read() as conn:
        nopw = actors.node.store.users.get(conn, "nopw")
    assert nopw is not None and not nopw.has_password
    # Even a cookie signed with the server's own key does not make them log in.
    refused(with_cookie(actors, sessions_of(actors).issue(nopw), "GET", ME))
    assert actors.client.get("/browser", headers=auth("nopw", "")).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "http://testserver.evil.example"},
    ],
)
def test_another_site_cannot_make_a_change_with_the_cookie(
    actors: Actors, headers: dict[str, str]
) -> None:
    cookie = login(actors, "admin")
    body = {"username": "mallory", "password": "pw", "roles": ["ADMIN"]}
    attempt = with_cookie(
        actors, cookie, "POST", "/rest/user-management/users", json=body, headers=headers
    )
    assert attempt.status_code == 403, attempt.text
    assert "another site" in attempt.json()["reason"]
    with actors.node.store.db.read() as conn:
        assert actors.node.store.users.get(conn, "mallory") is None
    out = with_cookie(actors, cookie, "POST", "/logout", headers=headers)
    assert out.status_code == 403
    assert with_cookie(actors, cookie, "GET", ME).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a command-line client
        {"Origin": "http://testserver"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        {"Referer": "http://testserver/ui/users"},
    ],
)
def test_the_servers_own_pages_and_clis_make_changes_with_the_cookie(
    actors: Actors, headers: dict[str, str]
) -> None:
    cookie = login(actors, "admin")
    body = {"username": "carol", "password": "pw"}
    made = with_cookie(
        actors, cookie, "POST", "/rest/user-management/users", json=body, headers=headers
    )
    assert made.json() == {"status": "success", "username": "carol"}


def test_basic_credentials_win_over_a_cookie(actors: Actors) -> None:
    eve = login(actors, "eve")
    response = actors.client.get(ME, headers={**auth("bob"), "Cookie": f"{COOKIE_NAME}={eve}"})
    assert response.json()["username"] == "bob"
    wrong = actors.client.get(
        ME, headers={**auth("bob", "wrong"), "Cookie": f"{COOKIE_NAME}={eve}"}
    )
    assert wrong.status_code == 401


def test_the_key_is_made_once_private_and_kept(actors: Actors) -> None:
    home = actors.node.settings.resolved_home
    path = home / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_bytes()
    cookie = login(actors, "eve")
    # A restarted server (a new app on the same home) keeps the key: the cookie still works.
    with TestClient(create_app(actors.node.settings, actors.node.jobs)) as again:
        response = again.get(ME, headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
    assert response.json()["username"] == "eve"
    assert path.read_bytes() == key
    # A configured key is used instead, and signs differently.
    configured = load_secret(home, "from-the-settings")
    assert configured != load_secret(home, None)
