"""Authentication for every route: HTTP Basic, or the session cookie of a browser login."""

from __future__ import annotations

import base64
import urllib.parse

from fastapi import Request

from datamill.domain.records import User
from datamill.errors import Forbidden, NotAuthenticated
from datamill.services.sessions import COOKIE_NAME, Sessions

# A user name (128) and a password (1024) in base64 fit with room to spare.
MAX_AUTHORIZATION_LENGTH = 4096
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What request.state.auth holds: how the caller authenticated.
BASIC, SESSION = "basic", "session"


def current_user(request: Request) -> User:
    """The authenticated caller (a FastAPI dependency).

    Basic credentials win when both are sent; the session cookie counts only
    without an Authorization header.
    """
    header = request.headers.get("authorization")
    cookie = request.cookies.get(COOKIE_NAME)
    if header is None and cookie:
        sessions: Sessions = request.app.state.sessions
        user = sessions.authenticate(cookie)
        if request.method not in SAFE_METHODS:
            refuse_cross_site(request)
        request.state.auth = SESSION
        return user
    name, password = basic_credentials(header or "")
    client = request.client.host if request.client is not None else None
    authenticated: User = request.app.state.authenticator.authenticate(name, password, client)
    request.state.auth = BASIC
    return authenticated


def refuse_cross_site(request: Request) -> None:
    """Forbidden unless a cookie-authenticated change comes from this server's own pages.

    A browser attaches the cookie to requests another site makes it send; it
    also says where they come from (Sec-Fetch-Site, Origin, Referer), which a
    page cannot forge. A command-line client sends none of them and is let
    through: it holds the cookie itself. Basic credentials are never sent by a
    browser on its own, so requests with them need no such check.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden(_CROSS_SITE)
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return
        parts = urllib.parse.urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise Forbidden(_CROSS_SITE)


_CROSS_SITE = (
    "a change made with a session cookie must come from this server's own pages;"
    " another site's request is refused (send Basic credentials instead)"
)


def basic_credentials(header: str) -> tuple[str, str]:
    """(name, password) of an Authorization header value; NotAuthenticated unless Basic.

    Whatever the header holds (non-ASCII bytes, bad base64, text that is not
    UTF-8, a NUL, megabytes), the answer is a 401, never an error.
    """
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        raise NotAuthenticated("malformed Basic credentials: the header is too long")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise NotAuthenticated("authentication required: use HTTP Basic (curl -u user:password)")
    try:
        # Header values arrive decoded as latin-1: encoding them as ASCII
        # refuses every byte base64 cannot hold (b64decode raised ValueError
        # on them, past its binascii.Error, which is what gave a 500).
        raw = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
        decoded = raw.decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeError are ValueErrors
        raise NotAuthenticated("malformed Basic credentials") from None
    name, sep, password = decoded.partition(":")
    if not sep or not name or "\x00" in decoded:
        raise NotAuthenticated("malformed Basic credentials")
    return name, password
