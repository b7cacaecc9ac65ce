"""Job documents (services/artifacts.py): what the mutation run showed no test asserted.

eve owns the jobs, rita may only read them (group `readers`), bob has no
rights on them, admin holds ADMIN. Each test names the mutants it kills in
docs/testing.md ("Surviving mutants", services/artifacts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datamill.domain.status import JobKind
from tests.helpers import orders_import, password_hash, write_orders_csv
from tests.security.conftest import PASSWORD, Actors

IMP = "/Data/ImportJobs/orders.imp"


def _no_workbook(typed: str) -> dict[str, str]:
    reason = f"Entity of type 'workbook' with uuid '{typed}' not found."
    return {"status": "failure", "reason": reason}


@pytest.fixture
def team(actors: Actors, files_root: Path) -> Actors:
    """eve's import job, readable by the group `readers` (rita); bob holds no rights on it."""
    actors.node.store.users.create("rita", password_hash(PASSWORD), groups=("readers",))
    source = write_orders_csv(files_root / "users" / "eve", rows=3)
    made = actors.call("eve", "POST", "/rest/import-job", {"path": IMP, **orders_import(source)})
    assert made.status_code == 200, made.text
    file_id = _file(actors, IMP)["id"]
    shared = actors.call(
        "eve",
        "POST",
        f"/api/filesystem/files/{file_id}/permission/groups",
        {"name": "readers", "readable": True},
    )
    assert shared.status_code == 200, shared.text
    return actors


def _file(actors: Actors, path: str) -> dict[str, Any]:
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, path)
    assert entry is not None, path
    return {"id": entry.id, "uuid": entry.uuid, "owner": entry.owner}


# ---------------------------------------------------------------- the workbook by uuid


def test_only_a_uuid_names_a_workbook_by_uuid_not_a_name_of_the_same_length(
    actors: Actors,
) -> None:
    # A 36-character name that is no uuid: the store would find it as a path
    # ("/<name>"), so the route must refuse it before looking (_is_uuid 1 and 8).
    name = "q" * 32 + ".wbk"
    assert len(name) == 36
    actors.node.jobs.define_job(
        f"/{name}",
        JobKind.WORKBOOK,
        {"sheets": [{"kind": "sql", "name": "one", "keep": True, "sql": "SELECT 1 AS n"}]},
        "admin",
    )
    refused = actors.call("admin", "GET", f"/api/filesystem/workbooks/{name}")
    assert (refused.status_code, refused.json()) == (404, _no_workbook(name))
    # The same workbook by its real uuid is served: the refusal is the name's.
    uuid = _file(actors, f"/{name}")["uuid"]
    served = actors.call("admin", "GET", f"/api/filesystem/workbooks/{uuid}")
    assert served.status_code == 200 and served.json()["path"] == f"/{name}"


def test_a_folders_uuid_is_no_workbook(actors: Actors) -> None:
    # A folder exists but has no configuration (read_by_uuid 26: a 500 instead).
    uuid = _file(actors, "/Analytics/Workbooks")["uuid"]
    for user in ("admin", "eve"):
        refused = actors.call(user, "GET", f"/api/filesystem/workbooks/{uuid}")
        assert (refused.status_code, refused.json()) == (404, _no_workbook(uuid)), user


# ---------------------------------------------------------------- names with dots


def test_a_job_name_keeps_its_inner_dots_in_lists_and_dependencies(
    team: Actors, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "users" / "eve" / "q3", rows=3)
    dotted = "/Data/ImportJobs/q3.orders.v2.imp"
    document = {"path": dotted, **orders_import(source), "description": "third quarter"}
    made = team.call("eve", "POST", "/rest/import-job", document)
    assert made.status_code == 200, made.text
    config_id = made.json()["configuration-id"]
    entry = _file(team, dotted)
    team.call(
        "eve",
        "POST",
        f"/api/filesystem/files/{entry['id']}/permission/groups",
        {"name": "readers", "readable": True},
    )
    item = {
        "path": dotted,
        "id": config_id,
        "name": "q3.orders.v2",
        "file-id": entry["id"],
        "uuid": entry["uuid"],
        "owner": "eve",
        "description": "third quarter",
    }
    for user, sees in (("eve", True), ("rita", True), ("bob", False), ("admin", True)):
        listed = team.call(user, "GET", "/rest/import-job").json()
        assert [i for i in listed if i["path"] == dotted] == ([item] if sees else []), user
    workbook = {
        "path": "/Analytics/Workbooks/q3.totals.wbk",
        "sheets": [
            {"kind": "data", "name": "orders", "source": {"importJob": dotted}},
            {"kind": "sql", "name": "all", "keep": True, "sql": "SELECT * FROM orders"},
        ],
    }
    wbk = team.call("eve", "POST", "/rest/workbook", workbook)
    assert wbk.status_code == 200, wbk.text
    url = f"/api/workbook/{wbk.json()['configuration-id']}/dependencies?direction=upstream"
    upstream = team.call("eve", "GET", url).json()["upstream"]
    assert upstream == [
        {
            "id": config_id,
            "type": "import-job",
            "path": dotted,
            "name": "q3.orders.v2",
            "fileId": entry["id"],
            "uuid": entry["uuid"],
            "level": 1,
        }
    ]
    # A job saved without a description lists an empty one.
    (plain,) = [i for i in team.call("rita", "GET", "/rest/import-job").json() if i["path"] == IMP]
    assert (plain["name"], plain["description"], plain["owner"]) == ("orders", "", "eve")
