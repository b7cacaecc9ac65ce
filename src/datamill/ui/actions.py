"""What the UI's forms do (POST): sign in, sign out, trigger, stop, start a plan.

Each answers with a redirect to the page that shows the outcome (post,
redirect, get), after the form token and cross-site checks of ui/auth.py.
The service call checks the user's rights again, whatever the page showed.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from datamill.api.types import EntityId
from datamill.domain.definitions import MAX_VALUE_LENGTH, MAX_VARIABLES
from datamill.errors import InvalidInput, NotAuthenticated, TooManyRequests
from datamill.services import plans
from datamill.services.auth import Authenticator
from datamill.services.jobs import JobService
from datamill.services.sessions import COOKIE_NAME, Sessions
from datamill.ui.auth import (
    CSRF_FIELD,
    SIGN_IN_COOKIE,
    SIGN_IN_PATH,
    check_sign_in_token,
    cookie_options,
    first,
    form_user,
    read_form,
    safe_next,
    sign_in_token,
)
from datamill.ui.rendering import PageRoute, render

router = APIRouter(route_class=PageRoute)
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_NAME_LENGTH = 128
MAX_PASSWORD_LENGTH = 1024


def _jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


def _sign_in_form(
    request: Request, *, message: str = "", status: int = 200, name: str = ""
) -> Response:
    token, new = sign_in_token(request)
    target = safe_next(request.query_params.get("next", ""))
    context = {"token": token, "message": message, "next": target, "name": name}
    response = render(request, "sign_in.html", context, status)
    if new:
        options = cookie_options(request)
        options["path"] = SIGN_IN_PATH
        response.set_cookie(SIGN_IN_COOKIE, token, **options)
    return response


@router.get(SIGN_IN_PATH, include_in_schema=False)
def sign_in_page(request: Request) -> Response:
    """The sign-in form."""
    return _sign_in_form(request)


@router.post(SIGN_IN_PATH, include_in_schema=False)
async def sign_in(request: Request) -> Response:
    """Check the name and password like Basic sign-in (same limits); set the session cookie."""
    form = await read_form(request)
    check_sign_in_token(request, form)
    name, password = first(form, "name"), first(form, "password")
    if not name or len(name) > MAX_NAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        return _sign_in_form(request, message="Enter your user name and password.", status=400)
    authenticator: Authenticator = request.app.state.authenticator
    client = request.client.host if request.client is not None else None
    try:
        user = await run_in_threadpool(authenticator.authenticate, name, password, client)
    except NotAuthenticated:
        return _sign_in_form(request, message="Wrong user name or password.", status=401, name=name)
    except TooManyRequests as error:
        response = _sign_in_form(request, message=error.message, status=429, name=name)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    sessions: Sessions = request.app.state.sessions
    response = RedirectResponse(safe_next(first(form, "next")), status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sessions.issue(user),
        max_age=int(sessions.lifetime_seconds),
        **cookie_options(request),
    )
    return response


@router.post("/ui/sign-out", include_in_schema=False)
async def sign_out(request: Request) -> Response:
    """End the user's sessions (every device, as /logout does) and clear the cookie."""
    user, _form = await form_user(request)
    sessions: Sessions = request.app.state.sessions
    await run_in_threadpool(sessions.end, user)
    response = RedirectResponse(f"{SIGN_IN_PATH}?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE_NAME, **cookie_options(request))
    return response


@router.post("/ui/jobs/{file_id}/trigger", include_in_schema=False)
async def trigger(request: Request, file_id: EntityId) -> Response:
    """Queue a run with the form's variables; on to the new run's page."""
    user, form = await form_user(request)
    jobs = _jobs(request)
    given = _variables_of_form(form)
    execution = await run_in_threadpool(
        lambda: jobs.trigger(str(file_id), user, variables=given or None)
    )
    return RedirectResponse(f"/ui/runs/{execution.id}", status_code=303)


@router.post("/ui/jobs/{file_id}/stop", include_in_schema=False)
async def stop(request: Request, file_id: EntityId) -> Response:
    """Stop the job's active run; back to the job page."""
    user, _form = await form_user(request)
    await run_in_threadpool(_jobs(request).stop, str(file_id), user)
    return RedirectResponse(f"/ui/jobs/{file_id}", status_code=303)


@router.post("/ui/plan", include_in_schema=False)
async def start_plan(request: Request) -> Response:
    """Trigger the chosen jobs as one sequential plan; on to its progress."""
    user, form = await form_user(request)
    references = form.get("job", [])
    if not references:
        raise InvalidInput("choose at least one job for the plan")
    if len(references) > 1_000 or not all(r.isdigit() and len(r) < 16 for r in references):
        raise InvalidInput("the chosen jobs must be file ids")
    variables = _variables_of_text(first(form, "variables"))
    plan = await run_in_threadpool(
        plans.sequential_trigger, _jobs(request), references, user, variables
    )
    ids = ",".join(str(m.execution_id) for m in plan if m.execution_id is not None)
    return RedirectResponse(
        "/ui/plan/runs?" + urllib.parse.urlencode({"runs": ids}), status_code=303
    )


def _variables_of_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """`var.<name>` fields; empty ones keep the workbook's default."""
    given: dict[str, Any] = {}
    for key, values in form.items():
        if key == CSRF_FIELD or not key.startswith("var.") or not values or values[0] == "":
            continue
        given[key[4:]] = values[0]
    return _checked(given)


def _variables_of_text(text: str) -> dict[str, Any]:
    """`name=value` lines (blank lines skipped) as a plan's variables."""
    given: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise InvalidInput(f"variables, line {number}: write name=value")
        given[name.strip()] = value.strip()
    return _checked(given)


def _checked(given: dict[str, str]) -> dict[str, Any]:
    """Bounded like the API's variables."""
    if len(given) > MAX_VARIABLES:
        raise InvalidInput(f"variables: at most {MAX_VARIABLES}")
    checked: dict[str, Any] = {}
    for name, value in given.items():
        if not _VARIABLE_NAME.match(name):
            raise InvalidInput(f"variables: {name[:64]!r} is not a plain name")
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(f"variables.{name} is longer than {MAX_VALUE_LENGTH} characters")
        # Text as typed: the run coerces it to the type the workbook declares.
        checked[name] = value
    return checked
