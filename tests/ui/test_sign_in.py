"""Signing in and out of the web UI, and the checks on every form (CSRF, cross-site)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.services.sessions import COOKIE_NAME
from tests.ui.conftest import IMPORT, World, csrf_of, sign_in


def test_pages_redirect_to_sign_in_and_back(world: World) -> None:
    anonymous = TestClient(world.app)
    assert anonymous.get("/", follow_redirects=False).headers["location"] == "/ui/files"
    for url in ("/ui/files?folder=/Users", f"/ui/jobs/{world.import_id}", "/ui/running"):
        answer = anonymous.get(url, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith("/ui/sign-in?next=%2Fui%2F")
    polled = anonymous.get("/ui/running/table", headers={"HX-Request": "true"})
    assert polled.headers["hx-redirect"] == "/ui/sign-in"  # htmx loads the sign-in page
    assert "Nothing is queued" not in polled.text


def test_sign_in_sets_the_same_cookie_as_browser_login(world: World) -> None:
    client = TestClient(world.app)
    answer = sign_in(client, "bob")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/files"
    cookie = answer.cookies[COOKIE_NAME]
    header = answer.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header
    # The API takes the same cookie: it is the /browser session.
    me = client.get("/browser")
    assert me.json() == {"status": "success", "username": "bob"}
    assert client.cookies[COOKIE_NAME] == cookie


def test_wrong_password_is_refused_and_sets_no_session(world: World) -> None:
    client = TestClient(world.app)
    answer = sign_in(client, "bob", "wrong")
    assert answer.status_code == 401
    assert "Wrong user name or password." in answer.text
    assert COOKIE_NAME not in client.cookies
    unknown = sign_in(client, "nobody", "wrong")
    assert unknown.status_code == 401 and "Wrong user name or password." in unknown.text


def test_failed_sign_ins_are_limited_like_basic(world: World) -> None:
    # Failures forgiven only after an hour, so twelve argon2 checks on a loaded
    # machine cannot outlast the refill (one a second by default) and pass the limit.
    settings = world.node.settings.model_copy(update={"login_refill_seconds": 3600.0})
    client = TestClient(create_app(settings, world.node.jobs))
    codes = [sign_in(client, "bob", "wrong").status_code for _ in range(12)]
    assert codes[0] == 401 and codes[-1] == 429
    limited = sign_in(client, "bob", "wrong")
    assert "too many failed sign-ins" in limited.text and "Retry-After" in limited.headers
    # The same bucket as Basic: the API refuses the name from this address as well.
    basic = client.get("/browser", auth=("bob", "wrong"))
    assert basic.status_code == 429


def test_sign_in_without_its_form_token_is_refused(world: World) -> None:
    client = TestClient(world.app)
    client.get("/ui/sign-in")
    fields = {"name": "bob", "password": "pw", "next": "/ui/files"}
    for token in ("", "0" * 32):
        answer = client.post("/ui/sign-in", data={**fields, "csrf": token}, follow_redirects=False)
        assert answer.status_code == 403 and "security token" in answer.text
        assert COOKIE_NAME not in client.cookies
    # A login form posted from another site (login CSRF) is refused even with a token.
    form = client.get("/ui/sign-in")
    cross = client.post(
        "/ui/sign-in",
        data={**fields, "csrf": csrf_of(form)},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert cross.status_code == 403 and COOKIE_NAME not in client.cookies


def test_next_never_leads_to_another_site(world: World) -> None:
    client = TestClient(world.app)
    form = client.get("/ui/sign-in")
    for target in ("//evil.example/ui/", "https://evil.example", "/ui/../rest"):
        answer = client.post(
            "/ui/sign-in",
            data={"csrf": csrf_of(form), "name": "bob", "password": "pw", "next": target},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert (
            answer.headers["location"] in ("/ui/files", target)
            and "evil" not in (answer.headers["location"])
        )
    assert client.post("/ui/sign-in", data={}, follow_redirects=False).status_code == 403


@pytest.mark.parametrize("token", ["missing", "empty", "wrong", "carols"])
def test_a_form_without_this_sessions_token_is_refused(world: World, token: str) -> None:
    fields: dict[str, str] = {}
    if token != "missing":
        fields["csrf"] = {
            "empty": "",
            "wrong": "0" * 64,
            "carols": csrf_of(world.get("carol", "/ui/files")),
        }[token]
    answer = world.clients["bob"].post(
        f"/ui/jobs/{world.import_id}/trigger", data=fields, follow_redirects=False
    )
    assert answer.status_code == 403, answer.text
    assert "security token is missing or wrong" in answer.text
    assert "Never run." in world.get("bob", f"/ui/jobs/{world.import_id}/status").text
    sign_out = world.clients["bob"].post("/ui/sign-out", data=fields, follow_redirects=False)
    assert sign_out.status_code == 403
    assert world.get("bob", "/ui/files").status_code == 200  # still signed in


def test_a_form_posted_from_another_site_is_refused_even_with_the_token(world: World) -> None:
    token = csrf_of(world.get("bob", "/ui/files"))
    answer = world.clients["bob"].post(
        f"/ui/jobs/{world.import_id}/trigger",
        data={"csrf": token},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert answer.status_code == 403 and "another site" in answer.text
    assert "Never run." in world.get("bob", f"/ui/jobs/{world.import_id}/status").text


def test_a_token_dies_with_its_session(world: World) -> None:
    bob = world.clients["bob"]
    old = csrf_of(world.get("bob", "/ui/files"))
    assert world.post("bob", "/ui/sign-out", {"csrf": old}).status_code == 303
    assert sign_in(bob, "bob").status_code == 303
    new = csrf_of(world.get("bob", "/ui/files"))
    assert new != old
    stale = bob.post(f"/ui/jobs/{world.import_id}/trigger", data={"csrf": old})
    assert stale.status_code == 403 and "security token" in stale.text
    fresh = world.post("bob", f"/ui/jobs/{world.import_id}/trigger", {"csrf": new})
    assert fresh.status_code == 303


def test_sign_out_ends_the_session_everywhere(world: World) -> None:
    bob = world.clients["bob"]
    cookie = bob.cookies[COOKIE_NAME]
    answer = world.post("bob", "/ui/sign-out")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/sign-in")
    assert COOKIE_NAME not in bob.cookies
    # The old cookie, replayed, opens neither the pages nor the API.
    replay = TestClient(world.app, cookies={COOKIE_NAME: cookie})
    page = replay.get("/ui/files", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/sign-in")
    assert replay.get("/browser").status_code == 401
    assert IMPORT not in replay.get("/ui/running").text
