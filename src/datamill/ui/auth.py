"""Who is signed in to the web UI, and the checks every form passes (CSRF, cross-site).

The UI signs in with the same session cookie as `GET /browser`
(services/sessions.py): a page is the signed-in user's, or a redirect to the
sign-in form. Every change is a POST carrying a per-session token in a hidden
field: an HMAC of the session cookie under a key derived from the server's
session secret, so it needs no storage, changes with every sign-in and dies
with the session. The cross-site check of the API (api/security.py) runs too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from typing import Any

from fastapi import Request

from datamill.api.bodies import raw_bytes
from datamill.api.security import refuse_cross_site
from datamill.domain.records import User
from datamill.errors import DatamillError, Forbidden, InvalidInput, NotAuthenticated
from datamill.services.sessions import COOKIE_NAME, Sessions

CSRF_FIELD = "csrf"
# The sign-in form has no session yet: its token is a random value in a cookie
# of its own that the form repeats (double submit), besides the cross-site check.
SIGN_IN_COOKIE = "datamill_signin"
SIGN_IN_PATH = "/ui/sign-in"
MAX_FORM_FIELDS = 1_000


class SignInRequired(DatamillError):
    """Sign in to see this page."""

    http_status = 401


class FormKeys:
    """The key the per-session form tokens are signed with."""

    def __init__(self, session_secret: bytes) -> None:
        self._key = hmac.new(session_secret, b"ui-form-token", hashlib.sha256).digest()

    def token(self, cookie: str) -> str:
        """The form token of one session cookie."""
        return hmac.new(self._key, cookie.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def _keys(request: Request) -> FormKeys:
    keys: FormKeys = request.app.state.ui_form_keys
    return keys


def page_user(request: Request) -> User:
    """The signed-in user of a page (a dependency); SignInRequired without a live session.

    Only the cookie counts: the pages are for browsers. It also puts the
    session's form token where the templates find it.
    """
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        raise SignInRequired()
    sessions: Sessions = request.app.state.sessions
    try:
        user = sessions.authenticate(cookie)
    except NotAuthenticated:
        raise SignInRequired() from None
    request.state.ui_user = user
    request.state.csrf = _keys(request).token(cookie)
    return user


async def read_form(request: Request) -> dict[str, list[str]]:
    """The url-encoded form of a POST, bounded like every body."""
    raw = await raw_bytes(request)
    try:
        text = raw.decode("utf-8")
        return urllib.parse.parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form could not be read") from None


async def form_user(request: Request) -> tuple[User, dict[str, list[str]]]:
    """The signed-in user of a form post and its fields, once its token and origin are checked."""
    user = page_user(request)
    refuse_cross_site(request)
    form = await read_form(request)
    sent = first(form, CSRF_FIELD)
    if not hmac.compare_digest(sent.encode(), str(request.state.csrf).encode()):
        raise Forbidden(_BAD_TOKEN)
    return user, form


_BAD_TOKEN = (
    "this form is out of date or did not come from this server's pages"
    " (its security token is missing or wrong); reload the page and try again"
)


def sign_in_token(request: Request) -> tuple[str, bool]:
    """The sign-in form's token, and whether it is new (so the answer must set its cookie)."""
    current = request.cookies.get(SIGN_IN_COOKIE, "")
    if len(current) == 32 and current.isalnum():
        return current, False
    return secrets.token_hex(16), True


def check_sign_in_token(request: Request, form: dict[str, list[str]]) -> None:
    """Forbidden unless the sign-in form repeats its cookie and comes from this server."""
    refuse_cross_site(request)
    cookie = request.cookies.get(SIGN_IN_COOKIE, "")
    sent = first(form, CSRF_FIELD)
    if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        raise Forbidden(_BAD_TOKEN)


def first(form: dict[str, list[str]], name: str, default: str = "") -> str:
    """The first value of a form field."""
    values = form.get(name)
    return values[0] if values else default


def safe_next(target: str) -> str:
    """Where to go after signing in: a page of the UI, never another site."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/files"


def cookie_options(request: Request) -> dict[str, Any]:
    """The attributes of the session cookie, the same as GET /browser sets."""
    return {
        "path": "/",
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
    }
