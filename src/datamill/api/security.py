"""HTTP Basic authentication for every route."""

from __future__ import annotations

import base64
import binascii

from fastapi import Request

from datamill.domain.records import User
from datamill.errors import NotAuthenticated


def current_user(request: Request) -> User:
    """The authenticated caller (a FastAPI dependency)."""
    name, password = basic_credentials(request.headers.get("authorization", ""))
    user: User = request.app.state.authenticator.authenticate(name, password)
    return user


def basic_credentials(header: str) -> tuple[str, str]:
    """(name, password) of an Authorization header value; NotAuthenticated unless Basic."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise NotAuthenticated("authentication required: use HTTP Basic (curl -u user:password)")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise NotAuthenticated("malformed Basic credentials") from None
    name, sep, password = decoded.partition(":")
    if not sep:
        raise NotAuthenticated("malformed Basic credentials")
    return name, password
