"""References obey permissions (issue #10, F1 and F10): when saved and when run.

eve names admin's private jobs in her workbooks and export jobs, in every
spelling of a reference, and tries to keep what she once could read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.domain.records import User
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.store import data as data_store
from datamill.store import tables as t
from tests.helpers import orders_import, totals_workbook, wait_terminal, write_orders_csv
from tests.security.conftest import Actors

SECRET_IMP = "/Data/ImportJobs/secret.imp"
SECRET_WBK = "/Analytics/Workbooks/secret.wbk"


def _ids(actors: Actors, path: str) -> tuple[int, str, int]:
    """(file id, uuid, configuration id) of a job."""
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, path)
        assert entry is not None
        config = actors.node.store.jobs.for_file(conn, entry.id)
    assert config is not None
    return entry.id, entry.uuid, config.id


@pytest.fixture
def secrets(actors: Actors, files_root: Path) -> Actors:
    """admin's private import job and workbook (job files are private by default)."""
    source = write_orders_csv(files_root / "admin", rows=6)
    actors.node.jobs.define_job(SECRET_IMP, JobKind.IMPORT, orders_import(source), "admin")
    actors.node.jobs.define_job(SECRET_WBK, JobKind.WORKBOOK, totals_workbook(SECRET_IMP), "admin")
    return actors


def _forms(actors: Actors, path: str) -> dict[str, str]:
    file_id, uuid, _ = _ids(actors, path)
    return {
        "id": str(file_id),
        "id with leading zeros": f"000{file_id}",
        "uuid": uuid,
        "upper-case uuid": uuid.upper(),
        "path": path,
        "doubled slashes": path.replace("/", "//"),
        "trailing slash": path + "/",
        "no leading slash": path.lstrip("/"),
        "other case": path.upper(),
    }


def _source(kind: str, reference: str) -> dict[str, Any]:
    if kind == "importJob":
        return {"importJob": reference}
    return {"workbook": reference, "sheet": "totals"}


def _document(
    referrer: str, source: dict[str, Any], files_root: Path
) -> tuple[str, dict[str, Any]]:
    if referrer == "workbook":
        return "/rest/workbook", {
            "path": "/Analytics/Workbooks/eve.wbk",
            "sheets": [
                {"kind": "data", "name": "stolen", "source": source},
                {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM stolen"},
            ],
        }
    return "/rest/export-job", {
        "path": "/Data/ExportJobs/eve.exp",
        "source": source,
        "sink": {"kind": "csv", "path": str(files_root / "users" / "eve" / "out.csv")},
    }


REFERRERS = ["workbook", "export"]
SOURCE_KINDS = ["importJob", "workbook"]


@pytest.mark.parametrize("referrer", REFERRERS)
@pytest.mark.parametrize("source_kind", SOURCE_KINDS)
def test_a_reference_eve_may_not_read_is_refused_like_a_missing_one(
    secrets: Actors, files_root: Path, referrer: str, source_kind: str
) -> None:
    target = SECRET_IMP if source_kind == "importJob" else SECRET_WBK
    missing_ref = "/Data/ImportJobs/nothing.imp" if source_kind == "importJob" else "/nothing.wbk"
    base, missing_doc = _document(referrer, _source(source_kind, missing_ref), files_root)
    missing = secrets.call("eve", "POST", base, missing_doc)
    assert missing.status_code == 400
    # A saved job of eve's own, to update with each form as well.
    own_source = write_orders_csv(files_root / "users" / "eve", rows=2)
    secrets.call("eve", "POST", "/rest/import-job", {"path": "mine", **orders_import(own_source)})
    own = _source("importJob", "/Data/ImportJobs/mine.imp")
    _, own_doc = _document(referrer, own, files_root)
    created = secrets.call("eve", "POST", base, own_doc)
    assert created.status_code == 200, created.text
    url = f"{base}/{created.json()['configuration-id']}"
    for form, reference in _forms(secrets, target).items():
        _, document = _document(referrer, _source(source_kind, reference), files_root)
        for method, where in (("POST", base), ("PUT", url)):
            if method == "POST":
                document = {**document, "path": document["path"].replace("eve.", "eve2.")}
            answer = secrets.call("eve", method, where, document)
            said = f"{form} {method}: {answer.text}"
            assert answer.status_code == 400, said
            assert answer.json()["reason"].replace(reference, "X") == missing.json()[
                "reason"
            ].replace(missing_ref, "X"), said
    # Nothing was saved; the update left her own reference in place.
    assert secrets.call("eve", "GET", url).json()["path"] == own_doc["path"]
    listing = secrets.call("eve", "GET", base).json()
    assert [item["path"] for item in listing] == [own_doc["path"]]


@pytest.mark.parametrize("referrer", REFERRERS)
def test_a_reference_she_may_read_is_accepted(
    secrets: Actors, files_root: Path, referrer: str
) -> None:
    file_id, _, _ = _ids(secrets, SECRET_IMP)
    admin_grants_others_read(secrets, file_id)
    base, document = _document(referrer, _source("importJob", str(file_id)), files_root)
    assert secrets.call("eve", "POST", base, document).status_code == 200


def admin_grants_others_read(actors: Actors, file_id: int, readable: bool = True) -> None:
    """admin sets (or clears) the others-readable flag of one of his files."""
    body = {"readable": readable}
    url = f"/api/filesystem/files/{file_id}/permission/others"
    assert actors.call("admin", "PUT", url, body).status_code == 200


def _run(actors: Actors, user: str, path: str) -> Any:
    answer = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert answer.status_code == 200, answer.text
    return wait_terminal(actors.node, answer.json()["job-execution-id"])


def _data_of(actors: Actors, path: str) -> list[Any]:
    _, _, config_id = _ids(actors, path)
    with actors.node.store.db.read() as conn:
        return data_store.data_for_configuration(conn, config_id)


def _eve_workbook_saved_by_an_older_version(actors: Actors, reference: str, mode: str) -> None:
    # Definitions saved before references were checked are in databases today.
    definition = totals_workbook(reference)
    definition["triggering"] = {"mode": mode}
    actors.node.jobs.define_job("/Analytics/Workbooks/eve.wbk", JobKind.WORKBOOK, definition, "eve")


def test_f1_a_run_reads_only_what_its_owner_may_read(secrets_running: Actors) -> None:
    """F1 at run time: manual, legacy and data-driven runs of eve's workbook all fail."""
    running = secrets_running
    _run(running, "admin", SECRET_IMP)
    _eve_workbook_saved_by_an_older_version(running, SECRET_IMP, "DATA_DRIVEN")
    manual = _run(running, "eve", "/Analytics/Workbooks/eve.wbk")
    assert manual.status is JobStatus.ERROR
    reason = manual.error_message or ""
    assert f"reads {SECRET_IMP}, which is not an import job that eve can read" in reason
    _, _, config_id = _ids(running, "/Analytics/Workbooks/eve.wbk")
    legacy = running.call("eve", "POST", f"/rest/job-execution?configuration={config_id}")
    assert wait_terminal(running.node, legacy.json()["id"]).status is JobStatus.ERROR
    # admin refreshes his data: eve's data-driven copy does not even fire (A6: it
    # would show her when admin's job runs), so it reads nothing either.
    _run(running, "admin", SECRET_IMP)
    assert _data_driven_runs(running, config_id) == []
    assert _data_of(running, "/Analytics/Workbooks/eve.wbk") == []


def _data_driven_runs(actors: Actors, config_id: int) -> list[int]:
    """Ids of the DATA_DRIVEN executions of one configuration, whatever their status."""
    with actors.node.store.db.read() as conn:
        return list(
            conn.execute(
                sa.select(t.executions.c.id).where(
                    t.executions.c.job_configuration_id == config_id,
                    t.executions.c.trigger_type == TriggerType.DATA_DRIVEN.value,
                )
            ).scalars()
        )


def _wait_data_driven(actors: Actors, config_id: int, timeout: float = 60.0) -> list[Any]:
    """Wait until a DATA_DRIVEN run of the configuration exists, then until all have ended."""
    deadline = time.monotonic() + timeout
    while not (fired := _data_driven_runs(actors, config_id)):
        assert time.monotonic() < deadline, "no data-driven run was created"
        time.sleep(0.05)
    return [wait_terminal(actors.node, execution_id) for execution_id in fired]


@pytest.fixture(name="secrets_running")
def _secrets_running(secrets: Actors, running: Actors) -> Actors:
    return secrets


def test_revoked_read_fails_the_next_run(secrets_running: Actors, files_root: Path) -> None:
    actors = secrets_running
    file_id, _, _ = _ids(actors, SECRET_IMP)
    admin_grants_others_read(actors, file_id)
    _run(actors, "admin", SECRET_IMP)
    base, document = _document("workbook", _source("importJob", str(file_id)), files_root)
    assert actors.call("eve", "POST", base, document).status_code == 200
    assert _run(actors, "eve", document["path"]).status is JobStatus.COMPLETED
    admin_grants_others_read(actors, file_id, readable=False)
    failed = _run(actors, "eve", document["path"])
    assert failed.status is JobStatus.ERROR
    assert f"reads {file_id}, which is not an import job that eve can read" in (
        failed.error_message or ""
    )
    # Saving it again is refused as well.
    config_id = actors.call("eve", "GET", base).json()[0]["id"]
    assert actors.call("eve", "PUT", f"{base}/{config_id}", document).status_code == 400


def test_a_path_that_names_another_file_later_is_checked_again(
    secrets_running: Actors, files_root: Path
) -> None:
    """bob's shared job is deleted, admin moves his private job to its path: eve gets nothing."""
    actors = secrets_running
    shared = "/Data/ImportJobs/shared.imp"
    source = write_orders_csv(files_root / "users" / "bob", rows=3)
    made = actors.call("bob", "POST", "/rest/import-job", {"path": shared, **orders_import(source)})
    bob_config = made.json()["configuration-id"]
    file_id, _, _ = _ids(actors, shared)
    body = {"readable": True}
    actors.call("bob", "PUT", f"/api/filesystem/files/{file_id}/permission/others", body)
    base, document = _document("workbook", _source("importJob", shared), files_root)
    assert actors.call("eve", "POST", base, document).status_code == 200
    assert actors.call("bob", "DELETE", f"/rest/import-job/{bob_config}").status_code == 200
    _, _, secret_config = _ids(actors, SECRET_IMP)
    moved = actors.call("admin", "GET", f"/rest/import-job/{secret_config}").json()
    moved["path"] = shared
    assert (
        actors.call("admin", "PUT", f"/rest/import-job/{secret_config}", moved).status_code == 200
    )
    _run(actors, "admin", shared)
    failed = _run(actors, "eve", document["path"])
    assert failed.status is JobStatus.ERROR
    assert "not an import job that eve can read" in (failed.error_message or "")
    assert _data_of(actors, document["path"]) == []


def test_a_new_owner_runs_with_their_own_rights(secrets_running: Actors, files_root: Path) -> None:
    """Owner changes: the run reads as the job's owner now, not as whoever saved it."""
    actors = secrets_running
    _run(actors, "admin", SECRET_IMP)
    actors.node.jobs.define_job(
        "/Analytics/Workbooks/adm.wbk", JobKind.WORKBOOK, totals_workbook(SECRET_IMP), "admin"
    )
    wbk_id, _, _ = _ids(actors, "/Analytics/Workbooks/adm.wbk")
    url = f"/api/filesystem/files/{wbk_id}/permission"
    actors.call("admin", "PUT", f"{url}/others", {"readable": True, "executable": True})
    assert actors.call("admin", "PUT", f"{url}/owner", {"owner": "eve"}).status_code == 200
    failed = _run(actors, "eve", "/Analytics/Workbooks/adm.wbk")
    assert failed.status is JobStatus.ERROR
    assert "that eve can read" in (failed.error_message or "")


def test_f10_deleting_a_job_that_others_read_needs_nobody(
    secrets_running: Actors, files_root: Path
) -> None:
    """bob deletes and plans freely although eve's private data-driven workbook reads his job."""
    actors = secrets_running
    bob_job = "/Data/ImportJobs/bob.imp"
    source = write_orders_csv(files_root / "users" / "bob", rows=3)
    made = actors.call(
        "bob", "POST", "/rest/import-job", {"path": bob_job, **orders_import(source)}
    )
    bob_file, _, bob_config = _ids(actors, bob_job)
    body = {"readable": True}
    actors.call("bob", "PUT", f"/api/filesystem/files/{bob_file}/permission/others", body)
    eve_path = "/Users/eve/private.wbk"
    definition = {**totals_workbook(bob_job), "triggering": {"mode": "DATA_DRIVEN"}}
    assert made.status_code == 200
    saved = actors.call("eve", "POST", "/rest/workbook", {"path": eve_path, **definition})
    assert saved.status_code == 200, saved.text
    # bob's sequential trigger neither fails nor names eve's workbook.
    plan = actors.call("bob", "POST", "/api/job-execution/sequential-trigger", [bob_file])
    assert plan.status_code == 200, plan.text
    assert "private" not in plan.text and "/Users/eve" not in plan.text
    assert [m["job-configuration-name"] for m in plan.json()["execution-plan"]] == ["bob"]
    wait_terminal(actors.node, plan.json()["execution-plan"][0]["job-execution-id"])
    # eve's workbook still ran, by its own data-driven trigger, as eve. Under load
    # that run may not exist yet or may have ended already: poll the store for it.
    _, _, eve_config = _ids(actors, eve_path)
    eve_runs = _wait_data_driven(actors, eve_config)
    assert [(e.status, e.triggered_by) for e in eve_runs] == [(JobStatus.COMPLETED, "eve")]
    # bob deletes his job: no Conflict, nothing of eve's named.
    deleted = actors.call("bob", "DELETE", f"/rest/import-job/{bob_config}")
    assert deleted.status_code == 200, deleted.text
    failed = _run(actors, "eve", eve_path)
    assert failed.status is JobStatus.ERROR
    assert f"reads {bob_job}, which is not an import job that eve can read" in (
        failed.error_message or ""
    )


def test_cycle_messages_name_only_what_the_user_may_read(secrets: Actors, files_root: Path) -> None:
    actors = secrets
    node = actors.node
    source = write_orders_csv(files_root / "users" / "eve", rows=2)
    actors.call("eve", "POST", "/rest/import-job", {"path": "e", **orders_import(source)})
    mine = "/Analytics/Workbooks/mine.wbk"
    made = actors.call(
        "eve", "POST", "/rest/workbook", {"path": mine, **_reader("/Data/ImportJobs/e.imp", None)}
    )
    assert made.status_code == 200, made.text
    mine_file, _, mine_config = _ids(actors, mine)
    actors.call(
        "eve", "PUT", f"/api/filesystem/files/{mine_file}/permission/others", {"readable": True}
    )
    # bob's private workbook reads eve's; admin's shared one reads bob's.
    hidden = "/Analytics/Workbooks/bob-hidden.wbk"
    node.jobs.define_job(hidden, JobKind.WORKBOOK, _reader(mine, "out"), "bob")
    shared = "/Analytics/Workbooks/admin-shared.wbk"
    node.jobs.define_job(shared, JobKind.WORKBOOK, _reader(hidden, "out"), "admin")
    shared_file, _, _ = _ids(actors, shared)
    admin_grants_others_read(actors, shared_file)
    looped = {"path": mine, **_reader(shared, "out")}
    refused = actors.call("eve", "PUT", f"/rest/workbook/{mine_config}", looped)
    assert refused.status_code == 400
    reason = refused.json()["reason"]
    assert "cycle" in reason and shared in reason and mine in reason
    assert "bob-hidden" not in reason and "a job you cannot see" in reason


def _reader(reference: str, sheet: str | None) -> dict[str, Any]:
    source = {"importJob": reference} if sheet is None else {"workbook": reference, "sheet": sheet}
    return {
        "sheets": [
            {"kind": "data", "name": "s", "source": source},
            {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s"},
        ]
    }


def test_users_are_looked_up_with_roles_and_groups(actors: Actors) -> None:
    """The run's identity is the owner as a full user (groups grant READ too)."""
    with actors.node.store.db.read() as conn:
        eve = actors.node.store.users.get(conn, "eve")
    assert isinstance(eve, User) and eve.roles == ("ANALYST",)
