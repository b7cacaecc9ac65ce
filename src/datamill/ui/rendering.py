"""Templates, the route class that answers errors as pages, and redirects to sign in."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from datamill.api.wire import Clock
from datamill.errors import DatamillError, TooManyRequests
from datamill.ui import format as fmt
from datamill.ui.auth import SIGN_IN_PATH, SignInRequired

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(
    status_class=fmt.status_class,
    duration=fmt.duration_text,
    pretty_json=fmt.pretty_json,
    percent=fmt.percent,
)
templates.env.globals.update(duration_of=fmt.duration_of)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page or fragment, with the signed-in user, the form token and time formatting."""
    clock: Clock = request.app.state.clock
    base = {
        "user": getattr(request.state, "ui_user", None),
        "csrf": getattr(request.state, "csrf", ""),
        "when": lambda value: fmt.time_text(clock, value),
        "iso": lambda value: fmt.iso_text(clock, value),
        "path": request.url.path,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def sign_in_redirect(request: Request) -> Response:
    """To the sign-in form, coming back here after; htmx polls are told to reload the page."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": SIGN_IN_PATH})
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = here if request.method == "GET" else "/ui/files"
    query = urllib.parse.urlencode({"next": target})
    return RedirectResponse(f"{SIGN_IN_PATH}?{query}", status_code=303)


def error_page(request: Request, status: int, message: str) -> Response:
    """An error as a page: what the API would say, in the UI's frame."""
    return render(request, "error.html", {"status": status, "message": message}, status)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """A UI route: sign-in redirects and errors answered as pages, not as JSON."""

    def get_route_handler(self) -> Handler:
        """Wrap the handler so the UI's errors render as pages."""
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return sign_in_redirect(request)
            except TooManyRequests as error:
                response = error_page(request, error.http_status, error.message)
                response.headers["Retry-After"] = str(error.retry_after)
                return response
            except DatamillError as error:
                return error_page(request, error.http_status, error.message)
            except RequestValidationError:
                return error_page(request, 400, "the address holds a value that is not valid")

        return route
