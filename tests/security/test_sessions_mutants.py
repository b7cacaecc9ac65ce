"""Session cookies at their edges: the mutants of services/sessions.py the suite let live.

Each test asserts what a client would notice: a cookie that works, a cookie
refused with the exact answer, never a 500 (docs/testing.md, "Surviving mutants").
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from datamill.services.sessions import COOKIE_NAME, Sessions, load_secret
from tests.security.conftest import Actors, auth
from tests.security.test_sessions import ME, login, sessions_of, with_cookie

ENDED = (
    "the session has ended or is not valid; log in again (GET /browser with"
    " curl -u user:password) or send Basic credentials"
)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("name", ["é" * 127, "\U0001f600" * 63, "a" * 128])
def test_a_long_name_in_any_characters_keeps_its_session(actors: Actors, name: str) -> None:
    # The longest names a user may have (128 characters, and a home folder name
    # of at most 255 bytes). Escaped as \uXXXX in the claim (12 characters per
    # emoji) such a cookie was longer than the 1,024 characters a cookie may be:
    # the login answered a cookie that never worked.
    made = actors.call(
        "admin", "POST", "/rest/user-management/users", {"username": name, "password": "pw"}
    )
    assert made.status_code == 200, made.text
    cookie = login(actors, name)
    assert with_cookie(actors, cookie, "GET", ME).json()["username"] == name


def test_the_cookie_is_one_plain_token_that_clients_keep_as_it_is(actors: Actors) -> None:
    # No base64 padding: '=' is no token character, so the cookie would be sent
    # as a quoted string, which cookie jars and scripts that cut the header keep
    # with its quotes.
    header = actors.client.get("/browser", headers=auth("eve")).headers["set-cookie"]
    value = header.split(";")[0].removeprefix(f"{COOKIE_NAME}=")
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", value), header
    assert with_cookie(actors, value, "GET", ME).json()["username"] == "eve"


def test_a_cookie_ends_at_its_expiry_second(actors: Actors) -> None:
    key = load_secret(actors.node.settings.resolved_home, None)
    with actors.node.store.db.read() as conn:
        eve = actors.node.store.users.get(conn, "eve")
    assert eve is not None
    cookie = Sessions(actors.node.store, key, 3600, clock=lambda: 1000.0).issue(eve)
    assert Sessions(actors.node.store, key, 3600, clock=lambda: 4599.0).claim(cookie) is not None
    assert Sessions(actors.node.store, key, 3600, clock=lambda: 4600.0).claim(cookie) is None


def _signed(keyed: Sessions, claim: object) -> str:
    """A cookie for any claim, signed with the server's key (what a newer server could issue)."""
    payload = _encode(json.dumps(claim).encode())
    return f"{payload}.{keyed._sign(payload)}"


def test_a_signed_claim_of_another_version_or_shape_is_refused_not_a_500(actors: Actors) -> None:
    keyed = sessions_of(actors)
    with actors.node.store.db.read() as conn:
        eve = actors.node.store.users.get(conn, "eve")
    assert eve is not None
    good = {"v": 1, "u": "eve", "e": eve.session_epoch, "h": keyed.fingerprint(eve), "x": 2**40}
    assert with_cookie(actors, _signed(keyed, good), "GET", ME).json()["username"] == "eve"
    for claim in (
        {**good, "v": 2},  # a later cookie format, e.g. during a rolling upgrade
        [good],
        "eve",
        {**good, "u": 7},
        {**good, "e": float(eve.session_epoch)},
        {**good, "e": str(eve.session_epoch)},
        {**good, "h": 5},
        {**good, "x": str(2**40)},
        {**good, "x": 2.0**40},
    ):
        answer = with_cookie(actors, _signed(keyed, claim), "GET", ME)
        assert (answer.status_code, answer.json()) == (
            401,
            {"status": "failure", "reason": ENDED},
        ), claim
