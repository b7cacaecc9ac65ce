"""Permission matrix: job documents, locations and connections (rows; see matrix.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from datamill.domain.status import JobKind
from tests.security.matrix import (
    ACTORS,
    CHANGE,
    CHANGE_DENIED,
    DEFINITIONS,
    EVERYONE,
    MISSING_ID,
    READ,
    SEES,
    Call,
    Row,
    Target,
    World,
    admin_get,
    body_of,
    check,
    id_of,
    resource_document,
    rows_by_name,
    run_cell,
)
from tests.security.matrix import world as world  # one node per backend for this module

# ---------------------------------------------------------------- job documents

KIND_OF = {"import-job": JobKind.IMPORT, "workbook": JobKind.WORKBOOK, "export-job": JobKind.EXPORT}


def _document_target(kind: str) -> Callable[[World], Target]:
    def make(world: World) -> Target:
        target = world.job(KIND_OF[kind])
        read = admin_get(world, f"/rest/{kind}/{target.config_id}")
        target.extra["document"] = read.json()
        return target

    return make


def _changed_document(t: Target) -> dict[str, Any]:
    return {**t.extra["document"], "description": "changed by the matrix"}


def _document_unchanged(kind: str) -> Callable[[World, Target], None]:
    def intact(world: World, t: Target) -> None:
        assert admin_get(world, f"/rest/{kind}/{t.config_id}").json() == t.extra["document"]

    return intact


def _creation_folder(world: World) -> Target:
    folder = world.folder()
    folder.extra["name"] = world.name("new")
    return folder


def _document_rows(kind: str) -> list[Row]:
    base = f"/rest/{kind}"
    job_kind = KIND_OF[kind]

    def new_document(t: Target) -> dict[str, Any]:
        return {"path": f"{t.path}/{t.extra['name']}{job_kind.extension}", **t.extra["definition"]}

    def creation_target(world: World) -> Target:
        target = _creation_folder(world)
        target.extra["definition"] = DEFINITIONS[job_kind](world)
        return target

    def created(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        body = body_of(r)
        assert body["status"] == "success"
        document = admin_get(world, f"{base}/{body['configuration-id']}").json()
        assert document["path"] == new_document(t)["path"]
        listed = world.call(actor, Call("GET", base)).json()
        assert [i["owner"] for i in listed if i["id"] == body["configuration-id"]] == [actor]

    def not_created(world: World, t: Target) -> None:
        listed = admin_get(world, base).json()
        assert new_document(t)["path"] not in [i["path"] for i in listed]

    return [
        Row(
            f"{kind}: create in a folder",
            CHANGE,
            creation_target,
            lambda t: Call("POST", base, new_document(t)),
            created,
            missing=lambda t: Call(
                "POST", base, {**new_document(t), "path": f"/Shared/no-such/x{job_kind.extension}"}
            ),
            denied="you are not allowed to create anything in the folder {path}",
            intact=not_created,
        ),
        Row(
            f"{kind}: read",
            READ,
            _document_target(kind),
            lambda t: Call("GET", f"{base}/{t.config_id}", typed=str(t.config_id)),
            lambda w, t, a, r: check(
                body_of(r) == t.extra["document"] and body_of(r)["path"] == t.path
            ),
            missing=lambda t: Call("GET", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
        ),
        Row(
            f"{kind}: update",
            CHANGE,
            _document_target(kind),
            lambda t: Call(
                "PUT", f"{base}/{t.config_id}", _changed_document(t), typed=str(t.config_id)
            ),
            lambda w, t, a, r: check(
                body_of(r) == {"status": "success"}
                and admin_get(w, f"{base}/{t.config_id}").json() == _changed_document(t)
            ),
            missing=lambda t: Call(
                "PUT", f"{base}/{MISSING_ID}", _changed_document(t), typed=str(MISSING_ID)
            ),
            denied=CHANGE_DENIED,
            intact=_document_unchanged(kind),
        ),
        Row(
            f"{kind}: delete",
            CHANGE,
            _document_target(kind),
            lambda t: Call("DELETE", f"{base}/{t.config_id}", typed=str(t.config_id)),
            lambda w, t, a, r: check(
                body_of(r) == {"status": "success"}
                and admin_get(w, f"{base}/{t.config_id}").status_code == 404
            ),
            missing=lambda t: Call("DELETE", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
            denied=CHANGE_DENIED,
            intact=_document_unchanged(kind),
        ),
        Row(
            f"{kind}: list",
            EVERYONE,
            _document_target(kind),
            lambda t: Call("GET", base),
            lambda w, t, a, r: check((t.config_id in [i["id"] for i in body_of(r)]) is SEES[a]),
        ),
    ]


ARTIFACT_ROWS = [row for kind in KIND_OF for row in _document_rows(kind)]


# ---------------------------------------------------------------- locations and connections


def _resource_rows(kind: str) -> list[Row]:
    base = f"/rest/{kind}"

    def make(world: World) -> Target:
        target = world.resource(kind)
        target.extra["document"] = admin_get(world, f"{base}/{target.file_id}").json()
        target.extra["change"] = resource_document(world, kind)
        return target

    def unchanged(world: World, t: Target) -> None:
        assert admin_get(world, f"{base}/{t.file_id}").json() == t.extra["document"]

    def created(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        document = admin_get(world, f"{base}/{body_of(r)['id']}").json()
        assert document["owner"] == actor and body_of(r)["status"] == "success"
        assert document["path"].startswith(f"{t.path}/new")

    def in_folder(world: World) -> Target:
        target = world.folder()
        target.extra["change"] = resource_document(world, kind)
        return target

    def not_created(world: World, t: Target) -> None:
        assert admin_get(world, f"/api/filesystem/folders/{t.file_id}/children").json()[
            "_embedded"
        ] == {"folders": [], "files": []}

    return [
        Row(
            f"{kind}: create in a folder",
            CHANGE,
            in_folder,
            lambda t: Call(
                "POST", base, {"path": f"{t.path}/new", **t.extra["change"]}, typed=t.path
            ),
            created,
            missing=lambda t: Call(
                "POST",
                base,
                {"path": "/Shared/no-such/new", **t.extra["change"]},
                typed="/Shared/no-such",
            ),
            denied=CHANGE_DENIED,
            intact=not_created,
        ),
        Row(
            f"{kind}: read",
            READ,
            make,
            lambda t: Call("GET", f"{base}/{t.file_id}", typed=id_of(t)),
            lambda w, t, a, r: check(
                body_of(r) == t.extra["document"] and body_of(r)["owner"] == "owner"
            ),
            missing=lambda t: Call("GET", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
        ),
        Row(
            f"{kind}: update",
            CHANGE,
            make,
            lambda t: Call("PUT", f"{base}/{t.file_id}", t.extra["change"], typed=id_of(t)),
            lambda w, t, a, r: check(body_of(r) == {"status": "success"}),
            missing=lambda t: Call(
                "PUT", f"{base}/{MISSING_ID}", t.extra["change"], typed=str(MISSING_ID)
            ),
            denied=CHANGE_DENIED,
            intact=unchanged,
        ),
        Row(
            f"{kind}: delete",
            CHANGE,
            make,
            lambda t: Call("DELETE", f"{base}/{t.file_id}", typed=id_of(t)),
            lambda w, t, a, r: check(
                body_of(r) == {"status": "success"}
                and admin_get(w, f"{base}/{t.file_id}").status_code == 404
            ),
            missing=lambda t: Call("DELETE", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
            denied=CHANGE_DENIED,
            intact=unchanged,
        ),
        Row(
            f"{kind}: list",
            EVERYONE,
            make,
            lambda t: Call("GET", base),
            lambda w, t, a, r: check((t.file_id in [i["id"] for i in body_of(r)]) is SEES[a]),
        ),
    ]


RESOURCE_ROWS = [*_resource_rows("location"), *_resource_rows("connection")]


ROWS = rows_by_name([*ARTIFACT_ROWS, *RESOURCE_ROWS])


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("row_name", list(ROWS))
def test_matrix(world: World, row_name: str, actor: str) -> None:
    run_cell(world, ROWS[row_name], actor)
