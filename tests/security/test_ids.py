"""Ids are never reused (issue #10 A2, issue #11 item 1), on both backends.

A reference by id (a workbook sheet naming job "22", a monitoring check run
with `-j 22`, a script that keeps an execution id) must never silently name
a job or run created after the one it meant was deleted: every id space only
grows, whatever was deleted, also after the server restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node, open_node
from datamill.domain.status import JobStatus
from datamill.store import tables as t
from datamill.worker.worker import Worker
from tests.helpers import wait_terminal
from tests.security.conftest import Actors

CSV = "name,salary\nalice,100\n"


def _import(owner: str, name: str) -> dict[str, Any]:
    """An import job of `owner` reading x.csv in their private location."""
    source = {"kind": "csv", "path": "x.csv", "location": f"/Users/{owner}/files.loc"}
    return {"path": f"/Users/{owner}/{name}.imp", "source": source}


def _csv(actors: Actors, owner: str) -> None:
    folder = Path(actors.node.settings.resolved_source_roots[0]) / "users" / owner
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.csv").write_text(CSV)


def _create(actors: Actors, user: str, document: dict[str, Any]) -> tuple[int, int]:
    """(file id, configuration id) of a new import job."""
    made = actors.call(user, "POST", "/rest/import-job", document)
    assert made.status_code == 200, made.text
    config_id = int(made.json()["configuration-id"])
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, document["path"])
    assert entry is not None
    return entry.id, config_id


def _trigger(actors: Actors, user: str, config_id: int) -> int:
    """Queue a run through the Datameer route a client uses; its execution id."""
    started = actors.call(user, "POST", f"/rest/job-execution?configuration={config_id}")
    assert started.status_code == 200, started.text
    return int(started.json()["id"])


def _delete(actors: Actors, user: str, config_id: int, execution_id: int | None = None) -> None:
    """Delete a job through the REST route, stopping its queued run first."""
    if execution_id is not None:
        stop = actors.call(user, "POST", f"/rest/job-execution/job-kill/{execution_id}")
        assert stop.status_code == 200, stop.text
    gone = actors.call(user, "DELETE", f"/rest/import-job/{config_id}")
    assert gone.status_code == 200, gone.text


def _top(actors: Actors, table: sa.Table) -> int:
    with actors.node.store.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar())


@pytest.fixture
def reopen(actors: Actors) -> Iterator[Any]:
    """Restart the server on the same home: a new node and client, the old ones closed."""
    opened: list[tuple[Node, TestClient]] = []

    def restart() -> None:
        actors.client.__exit__(None, None, None)
        actors.node.store.close()
        node = open_node(actors.node.settings)
        client = TestClient(create_app(node.settings, node.jobs))
        client.__enter__()
        opened.append((node, client))
        actors.node, actors.client = node, client

    yield restart
    for node, client in opened:
        client.__exit__(None, None, None)
        node.store.close()


def test_a_workbook_naming_a_deleted_job_by_id_never_reads_the_next_job(running: Actors) -> None:
    # The attack: eve's DATA_DRIVEN workbook names her own import by id; she
    # deletes the import, bob's next job would get the freed id on SQLite
    # and her workbook would read it. bob's job is readable by all here, so
    # only the id (not a permission) stands between her and his data.
    _csv(running, "eve")
    seed_file, _ = _create(running, "eve", _import("eve", "seed"))

    def workbook(reference: int) -> dict[str, Any]:
        return {
            "path": "/Users/eve/w2.wbk",
            "triggering": {"mode": "DATA_DRIVEN"},
            "sheets": [
                {"kind": "data", "name": "src", "source": {"importJob": str(reference)}},
                {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM src"},
            ],
        }

    made = running.call("eve", "POST", "/rest/workbook", workbook(seed_file))
    assert made.status_code == 200, made.text
    # x.imp is created last, so its ids are the highest of their spaces.
    file_id, config_id = _create(running, "eve", _import("eve", "x"))
    url = f"/rest/workbook/{made.json()['configuration-id']}"
    assert running.call("eve", "PUT", url, workbook(file_id)).status_code == 200
    _delete(running, "eve", config_id)

    _csv(running, "bob")
    bob_file, bob_config = _create(running, "bob", _import("bob", "payroll"))
    with running.node.store.db.write() as conn:
        running.node.store.files.set_others_flags(
            conn, bob_file, readable=True, writable=False, executable=True
        )
    done = wait_terminal(running.node, _trigger(running, "bob", bob_config))
    assert done.status == JobStatus.COMPLETED, done.error_message
    # Bob's run fired nothing of eve's, and her workbook run reads nothing of his.
    run = running.call("eve", "POST", "/api/job-execution/Users/eve/w2.wbk/trigger")
    assert run.status_code == 200, run.text
    failed = wait_terminal(running.node, run.json()["job-execution-id"])
    assert failed.status == JobStatus.ERROR
    assert f"reads {file_id}," in (failed.error_message or "")
    assert "payroll" not in (failed.error_message or "")
    assert bob_file > file_id


def test_a_monitoring_check_by_id_never_follows_another_job(actors: Actors) -> None:
    # check_datameer_job -j <configuration id>; a script keeping an execution id.
    _, config_id = _create(actors, "eve", _import("eve", "x"))
    execution_id = _trigger(actors, "eve", config_id)
    _delete(actors, "eve", config_id, execution_id)
    _, bob_config = _create(actors, "bob", _import("bob", "y"))
    bob_run = _trigger(actors, "bob", bob_config)
    assert bob_config > config_id and bob_run > execution_id
    for user in ("eve", "bob", "admin"):
        status = actors.call(user, "GET", f"/rest/job-configuration/job-status/{config_id}")
        assert status.status_code == 404, status.text
        details = actors.call(user, "GET", f"/rest/job-execution/job-details/{execution_id}")
        assert details.status_code == 404, details.text


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_ids_of_deleted_jobs_and_runs_never_come_back(
    actors: Actors, reopen: Any, restart: bool
) -> None:
    seen: dict[str, int] = {"file": 0, "configuration": 0, "execution": 0}
    for round_ in range(3):
        file_id, config_id = _create(actors, "eve", _import("eve", f"j{round_}"))
        execution_id = _trigger(actors, "eve", config_id)
        now = {"file": file_id, "configuration": config_id, "execution": execution_id}
        for space, value in now.items():
            assert value > seen[space], f"{space} id {value} handed out again (round {round_})"
        seen = now
        # The newest of each id space goes, so the next create would take its id back.
        _delete(actors, "eve", config_id, execution_id)
        assert _top(actors, t.files) < file_id and _top(actors, t.executions) < execution_id
        if restart:
            reopen()


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_ids_of_deleted_folders_locations_and_connections_never_come_back(
    actors: Actors, reopen: Any, restart: bool
) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    (files / "shared").mkdir(parents=True, exist_ok=True)
    made: list[int] = []

    def folder() -> int:
        url = "/api/filesystem/folders/Users/eve"
        answer = actors.call("eve", "POST", url, {"name": f"f{len(made)}"})
        assert answer.status_code == 200, answer.text
        with actors.node.store.db.read() as conn:
            entry = actors.node.store.files.find(conn, f"/Users/eve/f{len(made)}")
        assert entry is not None
        return entry.id

    def resource(kind: str, body: dict[str, Any]) -> int:
        body = {**body, "path": f"/Connections/r{len(made)}.{kind[:3]}"}
        answer = actors.call("admin", "POST", f"/rest/{kind}", body)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["id"])

    for kind in ("folder", "location", "connection", "folder"):
        if kind == "folder":
            entry_id = folder()
            gone = actors.call("eve", "DELETE", f"/api/filesystem/folders/{entry_id}")
        elif kind == "location":
            entry_id = resource(kind, {"folder": str(files / "shared")})
            gone = actors.call("admin", "DELETE", f"/rest/location/{entry_id}")
        else:
            entry_id = resource(kind, {"url": f"sqlite:///{files}/shared/x.db"})
            gone = actors.call("admin", "DELETE", f"/rest/connection/{entry_id}")
        assert gone.status_code == 200, gone.text
        assert not made or entry_id > max(made), f"{kind} got file id {entry_id} again"
        assert _top(actors, t.files) < entry_id
        made.append(entry_id)
        if restart:
            reopen()


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_ids_of_deleted_users_groups_and_roles_never_come_back(
    actors: Actors, reopen: Any, restart: bool
) -> None:
    spaces = {
        "users": (t.users, {"username": "u{}", "password": "pw-{}-long", "roles": ["ANALYST"]}),
        "groups": (t.groups, {"name": "g{}"}),
        "roles": (t.roles, {"name": "r{}", "capabilities": ["job.read"]}),
    }
    for space, (table, template) in spaces.items():
        before = 0
        for round_ in range(2):
            body = {k: v.format(round_) if isinstance(v, str) else v for k, v in template.items()}
            name = body.get("username", body.get("name"))
            made = actors.call("admin", "POST", f"/rest/user-management/{space}", body)
            assert made.status_code == 200, made.text
            with actors.node.store.db.read() as conn:
                row_id = conn.execute(sa.select(table.c.id).where(table.c.name == name)).scalar()
            assert row_id is not None and row_id > before, f"{space} id {row_id} handed out again"
            before = row_id
            gone = actors.call("admin", "DELETE", f"/rest/user-management/{space}/{name}")
            assert gone.status_code == 200, gone.text
            assert _top(actors, table) < row_id
            if restart:
                reopen()


def test_ids_of_deleted_data_never_come_back(actors: Actors, reopen: Any) -> None:
    # Data ids name folders under the data root, and clients read /rest/data/<id>.
    seen = 0
    for round_ in range(2):
        _csv(actors, "eve")
        worker = Worker(actors.node.store, actors.node.settings, actors.node.wakeup)
        worker.start()
        try:
            _, config_id = _create(actors, "eve", _import("eve", f"d{round_}"))
            done = wait_terminal(actors.node, _trigger(actors, "eve", config_id))
        finally:
            worker.shutdown(grace_seconds=1.0)
        assert done.status == JobStatus.COMPLETED, done.error_message
        data_id = _top(actors, t.data)
        assert data_id > seen, f"data id {data_id} handed out again"
        seen = data_id
        _delete(actors, "eve", config_id)
        assert _top(actors, t.data) < data_id
        reopen()
