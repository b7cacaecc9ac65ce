"""Items 15 and 16 of issue 11: job dependencies, and a workbook's document by uuid.

The Ruby client sends `GET /api/import-job/<id>/dependencies?direction=&level=`
(both empty when the caller gives none) and `GET /api/filesystem/workbooks/<uuid>`.
bob's chain is orders.imp -> totals.wbk -> totals.exp; admin's hidden.wbk also
reads orders.imp, and admin's after.exp (readable by everyone) reads hidden.wbk.
"""

from __future__ import annotations

from typing import Any

import pytest

from datamill.domain.status import JobKind
from tests.compat.conftest import EXP, IMP, ROLE, WBK, World
from tests.helpers import password_hash, totals_workbook
from tests.security.conftest import PASSWORD

HIDDEN = "/Analytics/Workbooks/hidden.wbk"
AFTER = "/Data/ExportJobs/after.exp"


@pytest.fixture
def chain(world: World) -> World:
    """bob's chain plus admin's hidden workbook and its export that everyone may read."""
    node = world.actors.node
    entry, config = node.jobs.define_job(HIDDEN, *_workbook(IMP), "admin")
    world.configs[HIDDEN], world.files[HIDDEN] = config.id, entry.id
    after, after_config = node.jobs.define_job(
        AFTER,
        *_export(HIDDEN, str(node.settings.home / "after.csv")),
        "admin",
    )
    world.configs[AFTER], world.files[AFTER] = after_config.id, after.id
    with node.store.db.write() as conn:
        node.store.files.set_others_flags(
            conn, after.id, readable=True, writable=False, executable=False
        )
    return world


def _workbook(source: str) -> tuple[JobKind, dict[str, Any]]:
    return JobKind.WORKBOOK, totals_workbook(source)


def _export(source: str, out: str) -> tuple[JobKind, dict[str, Any]]:
    return JobKind.EXPORT, {
        "source": {"workbook": source, "sheet": "totals"},
        "sink": {"kind": "csv", "path": out},
    }


def _ids(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(item["path"], item["level"]) for item in items]


def test_empty_direction_and_level_mean_both_ways_one_step(chain: World) -> None:
    answer = chain.send(
        "bob", "GET", f"/api/workbook/{chain.configs[WBK]}/dependencies?direction=&level="
    )
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["id", "path", "uuid", "direction", "level", "upstream", "downstream"]
    assert (body["id"], body["path"], body["direction"], body["level"]) == (
        chain.configs[WBK],
        WBK,
        "BOTH",
        1,
    )
    assert body["upstream"] == [
        {
            "id": chain.configs[IMP],
            "type": "import-job",
            "path": IMP,
            "name": "orders",
            "fileId": chain.files[IMP],
            "uuid": chain.uuids[IMP],
            "level": 1,
        }
    ]
    assert _ids(body["downstream"]) == [(EXP, 1)]


def test_unreadable_neighbours_are_left_out_and_not_walked_through(chain: World) -> None:
    url = f"/api/import-job/{chain.configs[IMP]}/dependencies?direction=DOWNSTREAM&level=3"
    expected = {
        "bob": [(WBK, 1), (EXP, 2)],
        "rita": [(WBK, 1), (EXP, 2)],
        "admin": [(WBK, 1), (HIDDEN, 1), (EXP, 2), (AFTER, 2)],
    }
    for user, wanted in expected.items():
        answer = chain.send(user, "GET", url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "upstream" not in body and sorted(_ids(body["downstream"])) == sorted(wanted)
        if user != "admin":
            assert "hidden" not in answer.text and "after" not in answer.text
    # sam may read none of bob's jobs: the job itself answers as missing.
    hidden = chain.send("sam", "GET", url)
    missing = chain.send("sam", "GET", "/api/import-job/999999/dependencies?direction=&level=")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["reason"] == missing.json()["reason"].replace(
        "999999", str(chain.configs[IMP])
    )
    # An export's id under /api/import-job names no import job.
    wrong = chain.send("admin", "GET", f"/api/import-job/{chain.configs[EXP]}/dependencies")
    assert wrong.status_code == 404


def test_upstream_levels_and_bad_parameters(chain: World) -> None:
    export = chain.configs[EXP]
    up = chain.send(
        "bob", "GET", f"/api/export-job/{export}/dependencies?direction=upstream&level=2"
    )
    assert _ids(up.json()["upstream"]) == [(WBK, 1), (IMP, 2)] and "downstream" not in up.json()
    one = chain.send("bob", "GET", f"/api/export-job/{export}/dependencies?direction=UPSTREAM")
    assert _ids(one.json()["upstream"]) == [(WBK, 1)]
    for query, member in (
        ("direction=sideways", "direction"),
        ("level=0", "level"),
        ("level=abc", "level"),
        ("level=101", "level"),
        ("level=99999999999999999999", "level"),
    ):
        refused = chain.send("bob", "GET", f"/api/export-job/{export}/dependencies?{query}")
        assert refused.status_code == 400, (query, refused.text)
        assert refused.json()["reason"].startswith(f"{member}:")


def test_a_workbook_by_uuid_is_its_document(chain: World) -> None:
    url = f"/api/filesystem/workbooks/{chain.uuids[WBK]}"
    expected = chain.send("bob", "GET", f"/rest/workbook/{chain.configs[WBK]}").json()
    for user in ("bob", "rita", "admin"):
        answer = chain.send(user, "GET", url)
        assert (answer.status_code, answer.json()) == (200, expected)
    # What it answers can be sent back to the workbook route unchanged.
    back = chain.send("bob", "PUT", f"/rest/workbook/{chain.configs[WBK]}", answer.content)
    assert back.status_code == 200, back.text
    # Unreadable, missing, another kind, not a uuid: the same 404 (modulo what was typed).
    unknown = "00000000-0000-4000-8000-000000000000"
    refusals = {
        chain.uuids[WBK]: chain.send("sam", "GET", url),
        unknown: chain.send("bob", "GET", f"/api/filesystem/workbooks/{unknown}"),
        chain.uuids[IMP]: chain.send("bob", "GET", f"/api/filesystem/workbooks/{chain.uuids[IMP]}"),
        "42": chain.send("bob", "GET", "/api/filesystem/workbooks/42"),
    }
    for typed, refused in refusals.items():
        assert refused.status_code == 404
        assert refused.json() == {
            "status": "failure",
            "reason": f"Entity of type 'workbook' with uuid '{typed}' not found.",
        }


def test_both_routes_need_the_capability_to_read_jobs(chain: World) -> None:
    # nora may define connections but not read jobs: refused before any job is looked up.
    chain.actors.node.store.users.create("nora", password_hash(PASSWORD), roles=(ROLE,))
    for url in (
        f"/api/workbook/{chain.configs[WBK]}/dependencies?direction=&level=",
        f"/api/filesystem/workbooks/{chain.uuids[WBK]}",
    ):
        refused = chain.send("nora", "GET", url)
        assert refused.status_code == 403, refused.text
        assert "job.read" in refused.json()["reason"]
