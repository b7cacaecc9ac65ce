"""File system routes (spec §6, §7): folders, files, permissions, with HAL links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from datamill.api.bodies import lenient_json_body
from datamill.api.types import CurrentUser
from datamill.api.wire import Clock, PrettyJSONResponse
from datamill.domain.records import FileEntry
from datamill.errors import InvalidInput, NotFound
from datamill.services.filesystem import (
    FileSystemService,
    FlagChange,
    FolderView,
    PermissionView,
)
from datamill.services.jobs import JobService
from datamill.services.permissions import Access
from datamill.store.files import Flags

FS = "/api/filesystem"
FOLDERS = f"{FS}/folders"
FILES = f"{FS}/files"
ROOT = "/"


class FileRefConvertor(Convertor[str]):
    """A decimal id or a uuid: the only references a sub-resource route takes.

    A path reference may itself end in '/permission', so sub-resources are
    addressed through ids and uuids only; anything else is read as a path.
    """

    regex = r"[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def convert(self, value: str) -> str:
        """The reference as text."""
        return value

    def to_string(self, value: str) -> str:
        """The reference for a URL."""
        return value


register_url_convertor("fileref", FileRefConvertor())

router = APIRouter()


def _service(request: Request) -> FileSystemService:
    jobs: JobService = request.app.state.jobs
    return FileSystemService(jobs)


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


# ---------------------------------------------------------------- rendering


def _href(url: str) -> dict[str, str]:
    return {"href": url}


def _self_url(entry: FileEntry) -> str:
    if entry.parent_id is None:
        return f"{FS}/root-folder"
    return f"{FOLDERS if entry.is_folder else FILES}/{entry.id}"


def _permission_url(entry: FileEntry) -> str:
    return f"{FOLDERS if entry.is_folder else FILES}/{entry.id}/permission"


def _entry(entry: FileEntry, clock: Clock) -> dict[str, Any]:
    links = {"self": _href(_self_url(entry))}
    if entry.parent_id is not None:
        links["parent"] = _href(f"{FOLDERS}/{entry.parent_id}")
        if not entry.is_folder:
            links["folder"] = links["parent"]  # the name Datameer's files use
    if entry.is_folder:
        links["children"] = _href(f"{FOLDERS}/{entry.id}/children")
    links["permission"] = _href(_permission_url(entry))
    return {
        "id": entry.id,
        "uuid": entry.uuid,
        "name": entry.name or ROOT,
        "path": entry.path,
        "type": _type(entry),
        "owner": entry.owner,
        "createdAt": clock.local(entry.created_at).isoformat(timespec="milliseconds"),
        "_links": links,
    }


def _type(entry: FileEntry) -> str:
    if entry.resource is not None:
        return entry.resource
    return "folder" if entry.is_folder or entry.kind is None else entry.kind.value


def _embedded(view: FolderView, clock: Clock) -> dict[str, list[dict[str, Any]]]:
    return {
        "folders": [_entry(c, clock) for c in view.children if c.is_folder],
        "files": [_entry(c, clock) for c in view.children if not c.is_folder],
    }


def _folder(view: FolderView, clock: Clock) -> Response:
    body = _entry(view.folder, clock)
    body["_embedded"] = _embedded(view, clock)
    return PrettyJSONResponse(body)


def _flags(flags: Flags) -> dict[str, bool]:
    return {a.value: getattr(flags, a.value) for a in Access}


def _group(entry: FileEntry, name: str, flags: Flags) -> dict[str, Any]:
    base = _permission_url(entry)
    return {
        "name": name,
        "flags": _flags(flags),
        "_links": {
            "self": _href(f"{base}/groups/{quote(name, safe='')}"),
            "permission": _href(base),
        },
    }


def _permission(view: PermissionView) -> Response:
    entry, permissions = view.entry, view.permissions
    base = _permission_url(entry)
    return PrettyJSONResponse(
        {
            "owner": permissions.owner,
            "groups": [_group(entry, n, f) for n, f in permissions.groups],
            "others": _flags(permissions.others),
            "_links": {
                "self": _href(base),
                "folder" if entry.is_folder else "file": _href(_self_url(entry)),
                "owner": _href(f"{base}/owner"),
                "groups": _href(f"{base}/groups"),
                "others": _href(f"{base}/others"),
            },
        }
    )


# ---------------------------------------------------------------- bodies


async def _object(request: Request, allowed: set[str]) -> dict[str, Any]:
    body = await lenient_json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown member(s) {', '.join(unknown)}; use {', '.join(sorted(allowed))}"
        )
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"'{key}' must be a string")
    return value


def _reference(value: Any, key: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise InvalidInput(f"'{key}' must be a folder id, uuid or path")


_FLAG_NAMES = {a.value: a for a in Access}


def _flag_change(body: dict[str, Any]) -> FlagChange:
    """Flags given flat ({readable: true}) or inside a 'flags' object."""
    given = {k: v for k, v in body.items() if k in _FLAG_NAMES}
    if "flags" in body:
        if given:
            raise InvalidInput("give the flags either inside 'flags' or beside it, not both")
        given = body["flags"]
        if not isinstance(given, dict):
            raise InvalidInput("'flags' must be an object such as {readable: true}")
    change: dict[Access, bool] = {}
    for key, value in given.items():
        if key not in _FLAG_NAMES:
            raise InvalidInput(f"unknown flag {key!r}; use readable, writable, executable")
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise InvalidInput(f"the flag {key!r} must be true or false")
        change[_FLAG_NAMES[key]] = value
    return change


_FLAT = {"flags", *_FLAG_NAMES}


# ---------------------------------------------------------------- folders and files


@router.get(f"{FS}/root-folder")
@router.get(FOLDERS)
def root_folder(request: Request, user: CurrentUser) -> Response:
    """The root folder and the entries in it that the caller may read."""
    return _folder(_service(request).folder(ROOT, user), _clock(request))


def folder_children(reference: str, request: Request, user: CurrentUser) -> Response:
    """Only the readable entries inside a folder."""
    view = _service(request).folder(reference, user)
    clock = _clock(request)
    return PrettyJSONResponse(
        {
            "_links": {
                "self": _href(f"{FOLDERS}/{view.folder.id}/children"),
                "folder": _href(_self_url(view.folder)),
            },
            "_embedded": _embedded(view, clock),
        }
    )


@router.post(FOLDERS)
async def create_root_folder(request: Request, user: CurrentUser) -> Response:
    """Create a folder in the root folder; body {"name": "..."}."""
    return await create_folder(ROOT, request, user)


async def create_folder(reference: str, request: Request, user: CurrentUser) -> Response:
    """Create a folder inside the referenced one; body {"name": "..."}."""
    name = _text(await _object(request, {"name"}), "name")
    view = await run_in_threadpool(_service(request).create_folder, reference, name, user)
    return _folder(view, _clock(request))


@router.put(FOLDERS)
async def update_root_folder(request: Request, user: CurrentUser) -> Response:
    """Refused: the root folder is a default folder."""
    return await update_folder(ROOT, request, user)


@router.delete(FOLDERS)
def delete_root_folder(request: Request, user: CurrentUser) -> Response:
    """Refused: the root folder is a default folder."""
    return delete_folder(ROOT, request, user)


def get_folder(reference: str, request: Request, user: CurrentUser) -> Response:
    """A folder by id, uuid or path, with its readable children."""
    return _folder(_service(request).folder(reference, user), _clock(request))


async def update_folder(reference: str, request: Request, user: CurrentUser) -> Response:
    """Rename and/or move a folder; body {"name": "...", "parent": <folder reference>}."""
    body = await _object(request, {"name", "parent"})
    if not body:
        raise InvalidInput("give a new 'name', a new 'parent', or both")
    name = _text(body, "name") if "name" in body else None
    parent = _reference(body["parent"], "parent") if "parent" in body else None
    view = await run_in_threadpool(
        lambda: _service(request).update_folder(reference, user, name=name, parent_reference=parent)
    )
    return _folder(view, _clock(request))


def delete_folder(reference: str, request: Request, user: CurrentUser) -> Response:
    """Delete an empty folder."""
    _service(request).delete_folder(reference, user)
    return PrettyJSONResponse({"status": "success"})


def get_file(reference: str, request: Request, user: CurrentUser) -> Response:
    """A job file by id, uuid or path."""
    view = _service(request).file(reference, user)
    body = _entry(view.file, _clock(request))
    body["jobConfigurationId"] = view.configuration_id
    return PrettyJSONResponse(body)


# ---------------------------------------------------------------- permissions


def read_permission(reference: str, request: Request, user: CurrentUser) -> Response:
    """Owner, group flags and others flags of an entry."""
    return _permission(_service(request).permissions(reference, user))


def read_owner(reference: str, request: Request, user: CurrentUser) -> Response:
    """The owner of an entry."""
    view = _service(request).permissions(reference, user)
    base = _permission_url(view.entry)
    return PrettyJSONResponse(
        {
            "owner": view.permissions.owner,
            "_links": {"self": _href(f"{base}/owner"), "permission": _href(base)},
        }
    )


async def change_owner(reference: str, request: Request, user: CurrentUser) -> Response:
    """Hand an entry to another user; body {owner: <name>}."""
    owner = _text(await _object(request, {"owner"}), "owner")
    view = await run_in_threadpool(_service(request).set_owner, reference, user, owner)
    return _permission(view)


def read_groups(reference: str, request: Request, user: CurrentUser) -> Response:
    """Every group's flags on an entry."""
    view = _service(request).permissions(reference, user)
    base = _permission_url(view.entry)
    groups = [_group(view.entry, n, f) for n, f in view.permissions.groups]
    return PrettyJSONResponse(
        {
            "_links": {"self": _href(f"{base}/groups"), "permission": _href(base)},
            "_embedded": {"groups": groups},
        }
    )


async def add_group(reference: str, request: Request, user: CurrentUser) -> Response:
    """Set a group's flags; body {name="<group>", flags:{readable:true,...}}."""
    body = await _object(request, {"name", *_FLAT})
    group, change = _text(body, "name"), _flag_change(body)
    view = await run_in_threadpool(_service(request).set_group, reference, user, group, change)
    return _permission(view)


def read_group(reference: str, group: str, request: Request, user: CurrentUser) -> Response:
    """One group's flags on an entry."""
    view = _service(request).permissions(reference, user)
    flags = dict(view.permissions.groups).get(group)
    if flags is None:
        raise NotFound(f"the group {group!r} has no permission on {view.entry.path}")
    return PrettyJSONResponse(_group(view.entry, group, flags))


async def change_group(reference: str, group: str, request: Request, user: CurrentUser) -> Response:
    """Change a group's flags; body {flags:{...}} or {readable: ..., ...}."""
    change = _flag_change(await _object(request, _FLAT))
    view = await run_in_threadpool(_service(request).set_group, reference, user, group, change)
    return _permission(view)


def remove_group(reference: str, group: str, request: Request, user: CurrentUser) -> Response:
    """Take a group's flags off an entry."""
    return _permission(_service(request).remove_group(reference, user, group))


def read_others(reference: str, request: Request, user: CurrentUser) -> Response:
    """What every other user may do with an entry."""
    view = _service(request).permissions(reference, user)
    base = _permission_url(view.entry)
    body: dict[str, Any] = _flags(view.permissions.others)
    body["_links"] = {"self": _href(f"{base}/others"), "permission": _href(base)}
    return PrettyJSONResponse(body)


async def change_others(reference: str, request: Request, user: CurrentUser) -> Response:
    """Set what every other user may do; body {readable: true, ...} or {flags:{...}}."""
    change = _flag_change(await _object(request, _FLAT))
    view = await run_in_threadpool(_service(request).set_others, reference, user, change)
    return _permission(view)


# ---------------------------------------------------------------- registration


def _not_allowed() -> Response:
    raise StarletteHTTPException(405)


Endpoint = Callable[..., Any]
_SUBRESOURCES: dict[str, dict[str, Endpoint]] = {
    "/permission": {"GET": read_permission},
    "/permission/owner": {"GET": read_owner, "PUT": change_owner},
    "/permission/groups": {"GET": read_groups, "POST": add_group},
    "/permission/groups/{group}": {"GET": read_group, "PUT": change_group, "DELETE": remove_group},
    "/permission/others": {"GET": read_others, "PUT": change_others},
}

# Sub-resources first: a folder's catch-all path route would swallow them.
for _prefix in (FOLDERS, FILES):
    _routes = dict(_SUBRESOURCES)
    if _prefix == FOLDERS:
        _routes["/children"] = {"GET": folder_children}
    for _suffix, _endpoints in _routes.items():
        _path = _prefix + "/{reference:fileref}" + _suffix
        for _method, _endpoint in _endpoints.items():
            router.add_api_route(_path, _endpoint, methods=[_method])
        _others = sorted({"GET", "POST", "PUT", "DELETE"} - set(_endpoints))
        router.add_api_route(_path, _not_allowed, methods=_others, include_in_schema=False)

router.add_api_route(FOLDERS + "/{reference:path}", get_folder, methods=["GET"])
router.add_api_route(FOLDERS + "/{reference:path}", create_folder, methods=["POST"])
router.add_api_route(FOLDERS + "/{reference:path}", update_folder, methods=["PUT"])
router.add_api_route(FOLDERS + "/{reference:path}", delete_folder, methods=["DELETE"])
router.add_api_route(FILES + "/{reference:path}", get_file, methods=["GET"])
