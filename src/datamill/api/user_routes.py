"""User management routes (spec §7): users, groups, roles, passwords."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from datamill.api.bodies import lenient_json_body, raw_text
from datamill.api.types import MAX_ID, CurrentUser
from datamill.api.wire import PrettyJSONResponse
from datamill.domain.records import User
from datamill.errors import InvalidInput
from datamill.services import users
from datamill.store.store import Store
from datamill.store.users import Group, Role

T = TypeVar("T")

router = APIRouter(prefix="/rest/user-management")

_SUCCESS = {"status": "success"}
_PASSWORD_BODY_BYTES = 8192
_USER_FIELDS = {"name", "username", "email", "password", "groups", "roles"}
_ROLE_FIELDS = {"name", "capabilities", "builtin"}  # builtin: read-only, accepted for round trips


def _store(request: Request) -> Store:
    store: Store = request.app.state.jobs.store
    return store


def _paging(
    max_results: Annotated[int, Query(alias="maxResults", ge=0)] = users.DEFAULT_PAGE_SIZE,
    start_index: Annotated[int | None, Query(alias="startIndex", ge=0, le=MAX_ID)] = None,
    first_result: Annotated[int | None, Query(alias="firstResult", ge=0, le=MAX_ID)] = None,
) -> tuple[int, int]:
    # firstResult is the name Datameer's own user-management API documents.
    start = start_index if start_index is not None else first_result
    return start or 0, max_results


Paging = Annotated[tuple[int, int], Depends(_paging)]


def _listing(page: users.Page[T], render: Callable[[T], dict[str, Any]]) -> Response:
    return PrettyJSONResponse(
        {
            "maxResults": page.max_results,
            "total": page.total,
            "elements": [render(element) for element in page.elements],
        }
    )


def _user_json(user: User) -> dict[str, Any]:
    # Deliberately field by field: the password hash never leaves the server.
    return {
        "username": user.name,
        "email": user.email,
        "groups": list(user.groups),
        "roles": list(user.roles),
    }


def _group_json(group: Group) -> dict[str, Any]:
    return {"name": group.name, "members": list(group.members)}


def _role_json(role: Role) -> dict[str, Any]:
    return {"name": role.name, "capabilities": list(role.capabilities), "builtin": role.builtin}


# --- reading bodies ------------------------------------------------------------------------


async def _object(request: Request, example: str) -> dict[str, Any]:
    body = await lenient_json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, e.g. {example}")
    return body


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s): {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}"
        )


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string; put it in quotes")
    return value


def _list(body: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput(f'{key} must be a list of names, e.g. "{key}": ["a", "b"]')
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidInput(f"{key}[{index}] must be a string; put it in quotes")
    return tuple(value)


def _body_name(body: dict[str, Any], *keys: str) -> str | None:
    names = {value for key in keys if (value := _text(body, key)) is not None}
    if len(names) > 1:
        raise InvalidInput(f"{' and '.join(keys)} differ; give the name once")
    return names.pop() if names else None


def _same_name(body: dict[str, Any], name: str, *keys: str) -> None:
    # A GET answer may be sent back unchanged, but the name in the path is the one that counts.
    given = _body_name(body, *keys)
    if given is not None and given != name:
        raise InvalidInput(
            f"the body names {given!r} but the path {name!r}; renaming is not supported"
        )


def _new_user(body: dict[str, Any]) -> users.NewUser:
    _only(body, _USER_FIELDS)
    name = _body_name(body, "name", "username")
    if name is None:
        raise InvalidInput("name (or username) is required")
    roles = _list(body, "roles")
    return users.NewUser(
        name=name,
        # Datameer clients create {username, email, groups, roles} and set the
        # password afterwards; until then the user cannot log in.
        password=_text(body, "password"),
        email=_text(body, "email"),
        groups=_list(body, "groups") or (),
        roles=users.DEFAULT_ROLES if roles is None else roles,
    )


def _user_changes(name: str, body: dict[str, Any]) -> users.UserChanges:
    if "password" in body:
        raise InvalidInput(
            "the password is not changed here: PUT /rest/user-management/password/"
            f"{name} with the new password as the body"
        )
    _only(body, _USER_FIELDS - {"password"})
    _same_name(body, name, "name", "username")
    return users.UserChanges(
        email=_text(body, "email"),
        change_email="email" in body,
        groups=_list(body, "groups"),
        roles=_list(body, "roles"),
    )


def _group_name(body: dict[str, Any], missing: str) -> str:
    """The name of a group body {"name": ...}; memberships are not set here."""
    if "members" in body:
        raise InvalidInput(
            "members are set on each user: PUT /rest/user-management/users/<name>"
            ' with {"groups": [...]}'
        )
    _only(body, {"name"})
    name = _body_name(body, "name")
    if name is None:
        raise InvalidInput(missing)
    return name


def _without_newline(text: str) -> str:
    # `curl --data-binary @file` and here-strings add one; anything else is the password.
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


# --- users ---------------------------------------------------------------------------------


@router.get("/users")
def list_users(request: Request, user: CurrentUser, paging: Paging) -> Response:
    """A page of users: {"maxResults", "total", "elements"}."""
    return _listing(users.list_users(_store(request), user, *paging), _user_json)


@router.get("/logged-in-user")
def logged_in_user(user: CurrentUser) -> Response:
    """The caller's own user element, as GET /users/<name> answers it."""
    return PrettyJSONResponse(_user_json(user))


@router.get("/users/{name}")
def get_user(name: str, request: Request, user: CurrentUser) -> Response:
    """One user (ADMIN, or the user themself)."""
    return PrettyJSONResponse(_user_json(users.get_user(_store(request), user, name)))


@router.post("/users")
async def create_user(request: Request, user: CurrentUser) -> Response:
    """Create a user and their home folder; answers the new user's name."""
    # Checked before the body is read, so a non-admin learns nothing from a body error.
    users.require_admin(user)
    new = _new_user(await _object(request, '{"name": "bob", "password": "..."}'))
    created = await run_in_threadpool(users.create_user, _store(request), user, new)
    return PrettyJSONResponse({**_SUCCESS, "username": created.name})


@router.put("/users/{name}")
async def update_user(name: str, request: Request, user: CurrentUser) -> Response:
    """Change a user's email, groups or roles (members left out stay as they are)."""
    users.require_admin(user)
    changes = _user_changes(name, await _object(request, '{"roles": ["ANALYST"]}'))
    await run_in_threadpool(users.update_user, _store(request), user, name, changes)
    return PrettyJSONResponse(_SUCCESS)


@router.delete("/users/{name}")
def delete_user(name: str, request: Request, user: CurrentUser) -> Response:
    """Delete a user."""
    users.delete_user(_store(request), user, name)
    return PrettyJSONResponse(_SUCCESS)


@router.put("/password/{name}")
async def change_password(name: str, request: Request, user: CurrentUser) -> Response:
    """Set a password from the raw body (not JSON): one's own, or anyone's for ADMIN."""
    users.require_password_right(user, name)
    password = _without_newline(await raw_text(request, max_bytes=_PASSWORD_BODY_BYTES))
    await run_in_threadpool(users.change_password, _store(request), user, name, password)
    return PrettyJSONResponse(_SUCCESS)


# --- groups --------------------------------------------------------------------------------


@router.get("/groups")
def list_groups(request: Request, user: CurrentUser, paging: Paging) -> Response:
    """A page of groups with their members."""
    return _listing(users.list_groups(_store(request), user, *paging), _group_json)


@router.get("/groups/{name}")
def get_group(name: str, request: Request, user: CurrentUser) -> Response:
    """One group with its members."""
    return PrettyJSONResponse(_group_json(users.get_group(_store(request), user, name)))


@router.post("/groups")
async def create_group(request: Request, user: CurrentUser) -> Response:
    """Create an empty group; members join it through their user's groups."""
    users.require_admin(user)
    name = _group_name(await _object(request, '{"name": "sales"}'), "name is required")
    await run_in_threadpool(users.create_group, _store(request), user, name)
    return PrettyJSONResponse({**_SUCCESS, "name": name})


@router.put("/groups/{name}")
async def rename_group(name: str, request: Request, user: CurrentUser) -> Response:
    """Rename a group: {"name": "<new>"}; members and file rights follow."""
    users.require_admin(user)
    new_name = _group_name(
        await _object(request, '{"name": "marketing"}'),
        'name is required: the new name, e.g. {"name": "marketing"}',
    )
    await run_in_threadpool(users.rename_group, _store(request), user, name, new_name)
    return PrettyJSONResponse(_SUCCESS)


@router.delete("/groups/{name}")
def delete_group(name: str, request: Request, user: CurrentUser) -> Response:
    """Delete a group; its members leave it."""
    users.delete_group(_store(request), user, name)
    return PrettyJSONResponse(_SUCCESS)


# --- roles ---------------------------------------------------------------------------------


@router.get("/roles")
def list_roles(request: Request, user: CurrentUser, paging: Paging) -> Response:
    """A page of roles with their capabilities."""
    return _listing(users.list_roles(_store(request), user, *paging), _role_json)


@router.get("/roles/{name}")
def get_role(name: str, request: Request, user: CurrentUser) -> Response:
    """One role with its capabilities."""
    return PrettyJSONResponse(_role_json(users.get_role(_store(request), user, name)))


@router.post("/roles")
async def create_role(request: Request, user: CurrentUser) -> Response:
    """Create a custom role with a list of capabilities."""
    users.require_admin(user)
    body = await _object(request, '{"name": "viewer", "capabilities": ["job.read"]}')
    _only(body, _ROLE_FIELDS)
    name = _body_name(body, "name")
    if name is None:
        raise InvalidInput("name is required")
    capabilities = _list(body, "capabilities") or ()
    await run_in_threadpool(users.create_role, _store(request), user, name, capabilities)
    return PrettyJSONResponse({**_SUCCESS, "name": name})


@router.put("/roles/{name}")
async def update_role(name: str, request: Request, user: CurrentUser) -> Response:
    """Replace a custom role's capabilities."""
    users.require_admin(user)
    body = await _object(request, '{"capabilities": ["job.read"]}')
    _only(body, _ROLE_FIELDS)
    _same_name(body, name, "name")
    capabilities = _list(body, "capabilities")
    if capabilities is None:
        raise InvalidInput("capabilities is required: the complete new list")
    await run_in_threadpool(users.update_role, _store(request), user, name, capabilities)
    return PrettyJSONResponse(_SUCCESS)


@router.delete("/roles/{name}")
def delete_role(name: str, request: Request, user: CurrentUser) -> Response:
    """Delete a custom role; its holders lose it."""
    users.delete_role(_store(request), user, name)
    return PrettyJSONResponse(_SUCCESS)
