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
from datamill.store import users as user_store
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


# ---------------------------------------------------------------- the path of a document


@pytest.mark.parametrize(
    ("base", "path", "saved"),
    [
        ("/rest/import-job", "  sales  ", "/Data/ImportJobs/sales.imp"),
        ("/rest/import-job", "sales.imp", "/Data/ImportJobs/sales.imp"),
        ("/rest/import-job", " /Users/eve/sales ", "/Users/eve/sales.imp"),
        ("/rest/workbook", "sums", "/Analytics/Workbooks/sums.wbk"),
        ("/rest/export-job", "out.exp", "/Data/ExportJobs/out.exp"),
    ],
)
def test_a_document_path_is_trimmed_placed_and_given_its_extension_once(
    team: Actors, files_root: Path, base: str, path: str, saved: str
) -> None:
    made = team.call("eve", "POST", base, {**_definition(base, files_root), "path": path})
    assert made.status_code == 200, made.text
    read = team.call("eve", "GET", f"{base}/{made.json()['configuration-id']}").json()
    assert read["path"] == saved


@pytest.mark.parametrize(
    ("base", "path", "reason"),
    [
        ("/rest/import-job", None, "path: required, e.g. /Data/ImportJobs/name.imp or just a name"),
        (
            "/rest/import-job",
            "   ",
            "path: required, e.g. /Data/ImportJobs/name.imp or just a name",
        ),
        ("/rest/import-job", 7, "path: required, e.g. /Data/ImportJobs/name.imp or just a name"),
        (
            "/rest/workbook",
            "",
            "path: required, e.g. /Analytics/Workbooks/name.wbk or just a name",
        ),
        ("/rest/import-job", "x.wbk", "path: a import job file name must end with .imp"),
        ("/rest/import-job", "/Users/eve/x.exp", "path: a import job file name must end with .imp"),
        ("/rest/workbook", "x.imp", "path: a workbook job file name must end with .wbk"),
        ("/rest/export-job", "x.wbk", "path: a export job file name must end with .exp"),
    ],
)
def test_a_document_path_that_names_no_job_file_is_refused_exactly(
    team: Actors, files_root: Path, base: str, path: Any, reason: str
) -> None:
    document = _definition(base, files_root)
    if path is not None:
        document["path"] = path
    before = team.call("admin", "GET", base).json()
    refused = team.call("eve", "POST", base, document)
    assert (refused.status_code, refused.json()) == (400, {"status": "failure", "reason": reason})
    assert team.call("admin", "GET", base).json() == before


def _definition(base: str, files_root: Path) -> dict[str, Any]:
    """A valid definition (without path) for each kind, reading eve's orders.imp."""
    if base == "/rest/import-job":
        return orders_import(files_root / "users" / "eve" / "orders.csv")
    if base == "/rest/workbook":
        return {
            "sheets": [
                {"kind": "data", "name": "o", "source": {"importJob": IMP}},
                {"kind": "sql", "name": "all", "keep": True, "sql": "SELECT * FROM o"},
            ]
        }
    sink = {"kind": "csv", "path": str(files_root / "users" / "eve" / "out.csv")}
    return {"source": {"importJob": IMP}, "sink": sink}


# ---------------------------------------------------------------- update and delete


def _config_id(team: Actors, path: str) -> int:
    with team.node.store.db.read() as conn:
        config = team.node.store.jobs.for_file(conn, _file(team, path)["id"])
    assert config is not None
    return config.id


def test_moving_a_job_needs_the_right_to_create_where_it_goes(team: Actors) -> None:
    url = f"/rest/import-job/{_config_id(team, IMP)}"
    document = team.call("eve", "GET", url).json()
    # bob's home is no place for eve's files: the move is refused, the job stays.
    moved = team.call("eve", "PUT", url, {**document, "path": "/Users/bob/orders.imp"})
    assert (moved.status_code, moved.json()) == (
        403,
        {
            "status": "failure",
            "reason": "/Users/bob is reserved as the home folder of the user 'bob': "
            "only that user (or an ADMIN) may create anything there",
        },
    )
    assert team.call("eve", "GET", url).json() == document
    listed = [i["path"] for i in team.call("admin", "GET", "/rest/import-job").json()]
    assert listed == [IMP]
    # Into her own home it moves, keeping its id.
    home = team.call("eve", "PUT", url, {**document, "path": "/Users/eve/orders.imp"})
    assert home.json() == {"status": "success"}, home.text
    assert team.call("rita", "GET", url).json() == {**document, "path": "/Users/eve/orders.imp"}


def test_an_update_without_a_path_keeps_the_path(team: Actors) -> None:
    url = f"/rest/import-job/{_config_id(team, IMP)}"
    document = team.call("eve", "GET", url).json()
    without = {k: v for k, v in document.items() if k != "path"}
    changed = team.call("eve", "PUT", url, {**without, "description": "kept where it was"})
    assert changed.json() == {"status": "success"}, changed.text
    assert team.call("eve", "GET", url).json() == {**document, "description": "kept where it was"}


def test_a_job_with_a_queued_run_is_not_deleted(team: Actors) -> None:
    config_id = _config_id(team, IMP)
    url = f"/rest/import-job/{config_id}"
    document = team.call("eve", "GET", url).json()
    queued = team.call("eve", "POST", f"/api/job-execution{IMP}/trigger")
    assert queued.status_code == 200, queued.text
    conflict = {
        "status": "failure",
        "reason": f"{IMP} cannot be deleted while it is queued or running",
    }
    missing = team.call("bob", "DELETE", "/rest/import-job/987654").json()
    expected = {
        "eve": (409, conflict),
        "rita": (403, {"status": "failure", "reason": f"you are not allowed to change {IMP}"}),
        "bob": (404, {**missing, "reason": missing["reason"].replace("987654", str(config_id))}),
        "admin": (409, conflict),
    }
    for user, answer in expected.items():
        refused = team.call(user, "DELETE", url)
        assert (refused.status_code, refused.json()) == answer, user
    assert team.call("admin", "GET", url).json() == document
    run = queued.json()["job-execution-id"]
    details = team.call("eve", "GET", f"/rest/job-execution/job-details/{run}").json()
    assert details["jobStatus"] == "QUEUED"


def test_deleting_a_job_removes_its_data_from_disk(team: Actors) -> None:
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from datamill.domain.status import JobStatus
    from datamill.store.data import newest_data
    from datamill.store.queue import Outcome

    node = team.node
    config_id = _config_id(team, IMP)
    run = team.call("eve", "POST", f"/api/job-execution{IMP}/trigger").json()["job-execution-id"]
    node.store.queue.register_worker("w", "host", os.getpid())
    claimed = node.store.queue.claim_next_execution("w")
    assert claimed is not None and claimed.id == run
    staging = node.settings.staging_root / str(run)
    staging.mkdir(parents=True)
    pq.write_table(pa.table({"n": [1, 2]}), staging / "data.parquet")
    outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 2}, staging_dir=str(staging))
    assert node.store.queue.finish(claimed, "w", outcome)
    with node.store.db.read() as conn:
        data = newest_data(conn, config_id)
    assert data is not None and data.location and Path(data.location).is_dir()
    deleted = team.call("eve", "DELETE", f"/rest/import-job/{config_id}")
    assert deleted.json() == {"status": "success"}, deleted.text
    assert not Path(data.location).exists()


# ---------------------------------------------------------------- workbooks that run by themselves


def test_a_self_running_workbook_is_changed_only_by_who_may_run_jobs(team: Actors) -> None:
    # update's A7 check (update 13-15): eve, who may run jobs, changes her data-driven
    # workbook; carl, who may define but not run jobs, is refused by the capability
    # before his rights on the file are even looked at, and the workbook stays as it was.
    with team.node.store.db.write() as conn:
        user_store.insert_role(conn, "definer", ["job.define", "job.read", "data.read"])
    team.node.store.users.create("carl", password_hash(PASSWORD), roles=("definer",))
    sheets = [
        {"kind": "data", "name": "s", "source": {"importJob": IMP}},
        {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s"},
    ]
    document = {"path": "/Users/eve/auto.wbk", "triggering": {"mode": "DATA_DRIVEN"}}
    made = team.call("eve", "POST", "/rest/workbook", {**document, "sheets": sheets})
    assert made.status_code == 200, made.text
    url = f"/rest/workbook/{made.json()['configuration-id']}"
    before = team.call("eve", "GET", url).json()
    limited = [sheets[0], {**sheets[1], "sql": "SELECT * FROM s LIMIT 1"}]
    refused = team.call("carl", "PUT", url, {**document, "sheets": limited})
    assert (refused.status_code, refused.json()) == (
        403,
        {
            "status": "failure",
            "reason": "your roles do not allow you to run or stop jobs "
            "(this needs the capability job.run)",
        },
    )
    assert team.call("eve", "GET", url).json() == before
    changed = team.call("eve", "PUT", url, {**document, "sheets": limited})
    assert changed.json() == {"status": "success"}, changed.text
    assert team.call("eve", "GET", url).json()["sheets"][1]["sql"] == "SELECT * FROM s LIMIT 1"


def test_a_job_is_renamed_within_its_shared_job_folder(team: Actors) -> None:
    # update 59, 64, 65 (`job=True` of the move's require_create dropped): eve may put
    # job files in /Data/ImportJobs without WRITE on it, so she may rename hers there too.
    url = f"/rest/import-job/{_config_id(team, IMP)}"
    document = team.call("eve", "GET", url).json()
    renamed = "/Data/ImportJobs/orders-2026.imp"
    moved = team.call("eve", "PUT", url, {**document, "path": renamed})
    assert moved.json() == {"status": "success"}, moved.text
    assert team.call("rita", "GET", url).json() == {**document, "path": renamed}
    listed = [i["path"] for i in team.call("admin", "GET", "/rest/import-job").json()]
    assert listed == [renamed]


# ---------------------------------------------------------------- a cycle made by a creation


def _reads(workbook: str, sheet: str) -> dict[str, Any]:
    """A workbook definition whose one kept sheet reads a sheet of another workbook."""
    source = {"workbook": workbook, "sheet": sheet}
    return {
        "sheets": [
            {"kind": "data", "name": "src", "source": source},
            {"kind": "sql", "name": "all", "keep": True, "sql": "SELECT * FROM src"},
        ]
    }


def test_a_job_created_where_a_reader_waits_for_it_may_not_close_a_cycle(
    team: Actors, files_root: Path
) -> None:
    # create 52, 53, 62, 68 (the creation's cycle check dropped or given None): a job
    # may be deleted while others read it, so a job created again at its path is
    # read at once by them; if it reads them in turn, the creation is refused.
    first = "/Users/eve/first.wbk"
    second = "/Users/eve/second.wbk"
    made = team.call(
        "eve",
        "POST",
        "/rest/workbook",
        {"path": first, **_definition("/rest/workbook", files_root)},
    )
    assert made.status_code == 200, made.text
    reader = team.call("eve", "POST", "/rest/workbook", {"path": second, **_reads(first, "all")})
    assert reader.status_code == 200, reader.text
    gone = team.call("eve", "DELETE", f"/rest/workbook/{made.json()['configuration-id']}")
    assert gone.json() == {"status": "success"}, gone.text
    refused = team.call("eve", "POST", "/rest/workbook", {"path": first, **_reads(second, "all")})
    reason = f"the jobs would read from each other in a cycle: {second} -> {first} -> {second}"
    assert (refused.status_code, refused.json()) == (400, {"status": "failure", "reason": reason})
    listed = [i["path"] for i in team.call("eve", "GET", "/rest/workbook").json()]
    assert listed == [second]
