"""Browser-style login and logout: `GET /browser` hands out a session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from datamill.api.security import BASIC, current_user
from datamill.api.types import CurrentUser
from datamill.api.wire import PrettyJSONResponse
from datamill.errors import NotAuthenticated
from datamill.services.sessions import COOKIE_NAME, Sessions

router = APIRouter()


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


@router.get("/browser")
def browser_login(request: Request, user: CurrentUser) -> Response:
    """Log in with Basic credentials; the answer sets the session cookie.

    Called with the cookie alone it answers who is logged in without a new
    cookie: a session is never extended past the lifetime of its login.
    """
    response = PrettyJSONResponse({"status": "success", "username": user.name})
    if request.state.auth == BASIC:
        sessions = _sessions(request)
        response.set_cookie(
            COOKIE_NAME,
            sessions.issue(user),
            max_age=int(sessions.lifetime_seconds),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


@router.api_route("/logout", methods=["GET", "POST"])
def logout(request: Request) -> Response:
    """End the caller's sessions (every device) and clear the cookie.

    A stale or missing cookie is not an error: the answer clears it all the
    same. Wrong Basic credentials are (a 401), as on every route.
    """
    try:
        user = current_user(request)
    except NotAuthenticated:
        if "authorization" in request.headers:
            raise
    else:
        _sessions(request).end(user)
    response = PrettyJSONResponse({"status": "success"})
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
