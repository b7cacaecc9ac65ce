"""Permission matrix: file system, permissions, users, groups, roles (rows; see matrix.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.security.matrix import (
    ACTORS,
    ADMIN_DENIED,
    ADMIN_ONLY,
    CHANGE,
    CHANGE_DENIED,
    EVERYONE,
    MISSING_ID,
    OWNER_CHANGE,
    READ,
    Call,
    Outcome_,
    Row,
    Target,
    World,
    admin_get,
    body_of,
    check,
    id_of,
    rows_by_name,
    run_cell,
)
from tests.security.matrix import world as world  # one node per backend for this module

# ---------------------------------------------------------------- file system and permissions


def _folder_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert body_of(r)["id"] == t.file_id and body_of(r)["path"] == t.path


def _file_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert body_of(r)["id"] == t.file_id and body_of(r)["path"] == t.path


def _permission_of(world: World, t: Target) -> dict[str, Any]:
    kind = "folders" if t.config_id == 0 else "files"
    body: dict[str, Any] = admin_get(world, f"/api/filesystem/{kind}/{t.file_id}/permission").json()
    return body


def _permission_is(**expected: Any) -> Callable[[World, Target, str, httpx.Response], None]:
    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        body = body_of(r)
        for key, value in expected.items():
            assert _simple(body[key]) == value, (key, body)
        assert _simple(_permission_of(world, t)[key]) == value

    return ok


def _simple(value: Any) -> Any:
    # The flags without their links, so the rows read as the grants they check.
    if isinstance(value, list):
        return [_simple(v) for v in value]
    if isinstance(value, dict):
        return {k: _simple(v) for k, v in value.items() if k != "_links"}
    return value


def _flags(readable: bool = False, writable: bool = False, executable: bool = False) -> Any:
    return {"readable": readable, "writable": writable, "executable": executable}


READERS_R = {"name": "readers", "flags": _flags(readable=True)}


def _permissions_unchanged(world: World, t: Target) -> None:
    body = _permission_of(world, t)
    assert body["owner"] == "owner" and _simple(body["groups"]) == [READERS_R]
    assert _simple(body["others"]) == _flags()


def _folder_exists(world: World, t: Target) -> None:
    assert admin_get(world, f"/api/filesystem/folders/{t.file_id}").json()["path"] == t.path


def _permission_rows(what: str, make: Callable[[World], Target]) -> list[Row]:
    kind = "folders" if what == "folder" else "files"

    def url(t: Target, tail: str) -> str:
        return f"/api/filesystem/{kind}/{t.file_id}/permission{tail}"

    def on(method: str, tail: str, body: Any = None) -> Callable[[Target], Call]:
        return lambda t: Call(method, url(t, tail), body, typed=id_of(t))

    def on_missing(method: str, tail: str, body: Any = None) -> Callable[[Target], Call]:
        return lambda t: Call(
            method,
            f"/api/filesystem/{kind}/{MISSING_ID}/permission{tail}",
            body,
            typed=str(MISSING_ID),
        )

    def read_row(name: str, tail: str, ok: Callable[[Any], bool]) -> Row:
        return Row(
            f"{what} {name}",
            READ,
            make,
            on("GET", tail),
            lambda w, t, a, r: check(ok(_simple(body_of(r)))),
            missing=on_missing("GET", tail),
        )

    def change_row(
        name: str,
        method: str,
        tail: str,
        body: Any,
        rule: dict[str, Outcome_],
        ok: Callable[[World, Target, str, httpx.Response], None],
        denied: str,
    ) -> Row:
        return Row(
            f"{what} {name}",
            rule,
            make,
            on(method, tail, body),
            ok,
            missing=on_missing(method, tail, body),
            denied=denied,
            intact=_permissions_unchanged,
        )

    return [
        read_row(
            "permission: read", "", lambda b: b["owner"] == "owner" and b["groups"] == [READERS_R]
        ),
        read_row("owner: read", "/owner", lambda b: b == {"owner": "owner"}),
        read_row(
            "groups: read", "/groups", lambda b: _simple(b["_embedded"]["groups"]) == [READERS_R]
        ),
        read_row("group: read", "/groups/readers", lambda b: b == READERS_R),
        read_row("others: read", "/others", lambda b: b == _flags()),
        change_row(
            "owner: change",
            "PUT",
            "/owner",
            {"owner": "admin"},
            OWNER_CHANGE,
            _permission_is(owner="admin"),
            "only an ADMIN may change the owner of a file or folder",
        ),
        change_row(
            "groups: add",
            "POST",
            "/groups",
            {"name": "readers", "writable": True},
            CHANGE,
            _permission_is(groups=[{"name": "readers", "flags": _flags(True, True)}]),
            CHANGE_DENIED,
        ),
        change_row(
            "group: change",
            "PUT",
            "/groups/readers",
            {"writable": True},
            CHANGE,
            _permission_is(groups=[{"name": "readers", "flags": _flags(True, True)}]),
            CHANGE_DENIED,
        ),
        change_row(
            "group: remove",
            "DELETE",
            "/groups/readers",
            None,
            CHANGE,
            _permission_is(groups=[]),
            CHANGE_DENIED,
        ),
        change_row(
            "others: change",
            "PUT",
            "/others",
            {"readable": True},
            CHANGE,
            _permission_is(others=_flags(readable=True)),
            CHANGE_DENIED,
        ),
    ]


def _folder_call(method: str, tail: str = "", body: Any = None) -> Callable[[Target], Call]:
    return lambda t: Call(
        method, f"/api/filesystem/folders/{t.file_id}{tail}", body, typed=id_of(t)
    )


def _no_folder(method: str, tail: str = "", body: Any = None) -> Callable[[Target], Call]:
    return lambda t: Call(
        method, f"/api/filesystem/folders/{MISSING_ID}{tail}", body, typed=str(MISSING_ID)
    )


FILESYSTEM_ROWS = [
    Row(
        "folder: read by id",
        READ,
        lambda w: w.folder(),
        _folder_call("GET"),
        _folder_ok,
        missing=_no_folder("GET"),
    ),
    Row(
        "folder: read by path",
        READ,
        lambda w: w.folder(),
        lambda t: Call("GET", f"/api/filesystem/folders{t.path}", typed=t.path),
        _folder_ok,
        missing=lambda t: Call(
            "GET", "/api/filesystem/folders/Shared/no-such", typed="/Shared/no-such"
        ),
    ),
    Row(
        "folder: children",
        READ,
        lambda w: w.folder(),
        _folder_call("GET", "/children"),
        lambda w, t, a, r: check(body_of(r)["_embedded"] == {"folders": [], "files": []}),
        missing=_no_folder("GET", "/children"),
    ),
    Row(
        "folder: create inside",
        CHANGE,
        lambda w: w.folder(),
        _folder_call("POST", "", {"name": "sub"}),
        lambda w, t, a, r: check(body_of(r)["path"] == f"{t.path}/sub"),
        missing=_no_folder("POST", "", {"name": "sub"}),
        denied="you are not allowed to create anything in the folder {path}",
        intact=lambda w, t: check(
            admin_get(w, f"/api/filesystem/folders{t.path}/sub").status_code == 404
        ),
    ),
    Row(
        "folder: rename",
        CHANGE,
        lambda w: w.folder(inside=w.folder()),
        _folder_call("PUT", "", {"name": "renamed"}),
        lambda w, t, a, r: check(
            admin_get(w, f"/api/filesystem/folders/{t.file_id}").json()["name"] == "renamed"
        ),
        missing=_no_folder("PUT", "", {"name": "renamed"}),
        denied=CHANGE_DENIED,
        intact=_folder_exists,
    ),
    Row(
        "folder: delete",
        CHANGE,
        lambda w: w.folder(),
        _folder_call("DELETE"),
        lambda w, t, a, r: check(
            admin_get(w, f"/api/filesystem/folders/{t.file_id}").status_code == 404
        ),
        missing=_no_folder("DELETE"),
        denied=CHANGE_DENIED,
        intact=_folder_exists,
    ),
    Row(
        "file: read by id",
        READ,
        lambda w: w.job(),
        lambda t: Call("GET", f"/api/filesystem/files/{t.file_id}", typed=id_of(t)),
        _file_ok,
        missing=lambda t: Call("GET", f"/api/filesystem/files/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "file: read by path",
        READ,
        lambda w: w.job(),
        lambda t: Call("GET", f"/api/filesystem/files{t.path}", typed=t.path),
        _file_ok,
        missing=lambda t: Call(
            "GET", "/api/filesystem/files/Data/ImportJobs/no.imp", typed="/Data/ImportJobs/no.imp"
        ),
    ),
    *_permission_rows("file", lambda w: w.job()),
    *_permission_rows("folder", lambda w: w.folder()),
]


# ---------------------------------------------------------------- users, groups, roles

UM = "/rest/user-management"


def _named(stem: str) -> Callable[[World], Target]:
    """A fresh user, group or role made by the admin; its name in extra['name']."""

    def make(world: World) -> Target:
        name = world.name(stem)
        bodies = {
            "users": {"name": name, "password": "a long enough password"},
            "groups": {"name": name},
            "roles": {"name": name, "capabilities": ["job.read"]},
        }
        made = world.call("admin", Call("POST", f"{UM}/{stem}", bodies[stem]))
        assert made.status_code == 200, made.text
        return Target(0, "", extra={"name": name, "new": world.name(stem)})

    return make


def _exists(stem: str) -> Callable[[World, Target], None]:
    def intact(world: World, t: Target) -> None:
        assert admin_get(world, f"{UM}/{stem}/{t.extra['name']}").status_code == 200

    return intact


def _success(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert body_of(r)["status"] == "success", r.text


def _gone(stem: str) -> Callable[[World, Target, str, httpx.Response], None]:
    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        assert body_of(r) == {"status": "success"}
        assert admin_get(world, f"{UM}/{stem}/{t.extra['name']}").status_code == 404

    return ok


def _lists(stem: str) -> Callable[[World, Target, str, httpx.Response], None]:
    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        key = "username" if stem == "users" else "name"
        assert t.extra["name"] in [element[key] for element in body_of(r)["elements"]], r.text

    return ok


def _user_rows(stem: str) -> list[Row]:
    one = lambda t: f"{UM}/{stem}/{t.extra['name']}"  # noqa: E731
    rows = [
        Row(
            f"{stem}: list",
            ADMIN_ONLY,
            _named(stem),
            # Every entry on one page: the module's world holds the users, groups and
            # roles of the cells before, and the new one need not be among the first 10.
            lambda t: Call("GET", f"{UM}/{stem}?maxResults=1000"),
            _lists(stem),
            denied=ADMIN_DENIED,
        ),
        Row(
            f"{stem}: read one",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call("GET", one(t)),
            lambda w, t, a, r: check(
                body_of(r)["username" if stem == "users" else "name"] == t.extra["name"]
            ),
            denied=ADMIN_DENIED,
        ),
        Row(
            f"{stem}: create",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call(
                "POST",
                f"{UM}/{stem}",
                {"name": t.extra["new"], "password": "a long enough password"}
                if stem == "users"
                else {"name": t.extra["new"]},
            ),
            _success,
            denied=ADMIN_DENIED,
            intact=lambda w, t: check(
                admin_get(w, f"{UM}/{stem}/{t.extra['new']}").status_code == 404
            ),
        ),
        Row(
            f"{stem}: delete",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call("DELETE", one(t)),
            _gone(stem),
            denied=ADMIN_DENIED,
            intact=_exists(stem),
        ),
    ]
    if stem == "users":
        rows.append(
            Row(
                "users: change",
                ADMIN_ONLY,
                _named(stem),
                lambda t: Call("PUT", one(t), {"email": "x@example.org"}),
                lambda w, t, a, r: check(admin_get(w, one(t)).json()["email"] == "x@example.org"),
                denied=ADMIN_DENIED,
            )
        )
        rows.append(
            Row(
                "users: someone else's password",
                ADMIN_ONLY,
                _named(stem),
                lambda t: Call("PUT", f"{UM}/password/{t.extra['name']}", "another long password"),
                _success,
                denied="you may change only your own password",
            )
        )
    if stem == "roles":
        rows.append(
            Row(
                "roles: change",
                ADMIN_ONLY,
                _named(stem),
                lambda t: Call("PUT", one(t), {"capabilities": ["job.run"]}),
                lambda w, t, a, r: check(
                    admin_get(w, one(t)).json()["capabilities"] == ["job.run"]
                ),
                denied=ADMIN_DENIED,
            )
        )
    return rows


USER_ROWS = [row for stem in ("users", "groups", "roles") for row in _user_rows(stem)]
USER_ROWS.append(
    Row(
        "users: read oneself",
        EVERYONE,
        lambda w: Target(0, ""),
        lambda t: Call("GET", f"{UM}/users/{t.extra['actor']}"),
        lambda w, t, a, r: check(body_of(r)["username"] == a),
    )
)


ROWS = rows_by_name([*FILESYSTEM_ROWS, *USER_ROWS])


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("row_name", list(ROWS))
def test_matrix(world: World, row_name: str, actor: str) -> None:
    run_cell(world, ROWS[row_name], actor)
