"""HTTP Basic authentication for every route."""

from __future__ import annotations

import base64

from fastapi import Request

from datamill.domain.records import User
from datamill.errors import NotAuthenticated

# A user name (128) and a password (1024) in base64 fit with room to spare.
MAX_AUTHORIZATION_LENGTH = 4096


def current_user(request: Request) -> User:
    """The authenticated caller (a FastAPI dependency)."""
    name, password = basic_credentials(request.headers.get("authorization", ""))
    client = request.client.host if request.client is not None else None
    user: User = request.app.state.authenticator.authenticate(name, password, client)
    return user


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
