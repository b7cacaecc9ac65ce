"""Whose rights a run holds (attack review of issue #10: A1, A6, A7).

A run reads with its owner's rights, so who may make someone the owner of a
job, what becomes of a deleted user's jobs, and which runs start by
themselves are all part of the isolation between users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from datamill.domain.status import JobStatus, TriggerType
from datamill.store import data as data_store
from datamill.store import tables as t
from datamill.store import users as user_store
from datamill.store.executions import create_execution
from datamill.store.triggers import fire_data_driven
from tests.helpers import (
    admin,
    orders_import,
    password_hash,
    totals_workbook,
    wait_terminal,
    write_orders_csv,
)
from tests.security.conftest import Actors, auth

FS = "/api/filesystem"
BOB_JOB = "/Data/ImportJobs/bob.imp"


def _file(actors: Actors, path: str) -> tuple[int, str, int | None]:
    """(file id, uuid, configuration id or None) of an entry."""
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, path)
        assert entry is not None, path
        config = actors.node.store.jobs.for_file(conn, entry.id)
    return entry.id, entry.uuid, config.id if config is not None else None


def _bob_shares_a_job(actors: Actors, files_root: Path, path: str = BOB_JOB) -> int:
    source = write_orders_csv(files_root / "users" / "bob", rows=3)
    made = actors.call("bob", "POST", "/rest/import-job", {"path": path, **orders_import(source)})
    assert made.status_code == 200, made.text
    file_id, _, _ = _file(actors, path)
    _others(actors, "bob", file_id, readable=True)
    return file_id


def _others(actors: Actors, user: str, file_id: int, **flags: bool) -> None:
    answer = actors.call(user, "PUT", f"{FS}/files/{file_id}/permission/others", flags)
    assert answer.status_code == 200, answer.text


def _workbook(actors: Actors, user: str, path: str, reference: str, mode: str) -> int:
    document = {"path": path, **totals_workbook(reference), "triggering": {"mode": mode}}
    if mode == "SCHEDULED":
        document["triggering"]["cron"] = "0 3 * * *"
    made = actors.call(user, "POST", "/rest/workbook", document)
    assert made.status_code == 200, made.text
    return int(made.json()["configuration-id"])


# ---------------------------------------------------------------- A1: owners


def test_a1_only_an_admin_hands_an_entry_to_another_user(actors: Actors, files_root: Path) -> None:
    """eve gives herself every flag on her workbook, then tries to make admin its owner."""
    _bob_shares_a_job(actors, files_root)
    steal = "/Users/eve/steal.wbk"
    _workbook(actors, "eve", steal, BOB_JOB, "DATA_DRIVEN")
    file_id, uuid, _ = _file(actors, steal)
    _others(actors, "eve", file_id, readable=True, writable=True, executable=True)
    home_id, _, _ = _file(actors, "/Users/eve")
    for who in ("eve", "bob"):  # the owner, and a writer through the others flags
        for ref in (str(file_id), uuid, str(home_id)):
            for owner in ("admin", "bob", "eve"):
                url = f"{FS}/files/{ref}/permission/owner"
                if ref == str(home_id):
                    if who == "bob":
                        continue  # eve's home is private: bob gets the 404 of a missing one
                    url = f"{FS}/folders/{ref}/permission/owner"
                refused = actors.call(who, "PUT", url, {"owner": owner})
                assert refused.status_code == 403, (who, ref, refused.text)
                assert "only an ADMIN" in refused.json()["reason"]
    assert actors.call("admin", "GET", f"{FS}/files/{file_id}").json()["owner"] == "eve"
    # An ADMIN may, deliberately.
    given = actors.call("admin", "PUT", f"{FS}/files/{file_id}/permission/owner", {"owner": "bob"})
    assert given.status_code == 200 and given.json()["owner"] == "bob"


def test_a1_variant_revoked_read_still_fails_the_run_of_eves_workbook(
    running: Actors, files_root: Path
) -> None:
    """eve cannot make admin the owner, so bob's revoke keeps his new data from her."""
    bob_file = _bob_shares_a_job(running, files_root)
    steal = "/Users/eve/steal.wbk"
    config_id = _workbook(running, "eve", steal, BOB_JOB, "MANUAL")
    file_id, _, _ = _file(running, steal)
    url = f"{FS}/files/{file_id}/permission/owner"
    assert running.call("eve", "PUT", url, {"owner": "admin"}).status_code == 403
    _others(running, "bob", bob_file, readable=False)
    ran = running.call("bob", "POST", f"/api/job-execution{BOB_JOB}/trigger")
    wait_terminal(running.node, ran.json()["job-execution-id"])
    run = running.call("eve", "POST", f"/api/job-execution{steal}/trigger")
    failed = wait_terminal(running.node, run.json()["job-execution-id"])
    assert failed.status is JobStatus.ERROR
    assert "that eve can read" in (failed.error_message or "")
    with running.node.store.db.read() as conn:
        assert data_store.data_for_configuration(conn, config_id) == []


def test_a1_a_deleted_users_jobs_stop_running_by_themselves_and_go_private(
    actors: Actors, files_root: Path
) -> None:
    """mal's shared, self-running workbooks must not start reading with admin's rights."""
    made = actors.call(
        "admin",
        "POST",
        "/rest/user-management/users",
        {"name": "mal", "password": "mal-password", "roles": ["ANALYST"]},
    )
    assert made.status_code in (200, 201), made.text
    with actors.node.store.db.write() as conn:
        user_store.insert_group(conn, "team")
    _bob_shares_a_job(actors, files_root)
    saved: dict[str, int] = {}
    for mode in ("DATA_DRIVEN", "SCHEDULED", "MANUAL"):
        path = f"/Users/mal/{mode.lower()}.wbk"
        document = {"path": path, **totals_workbook(BOB_JOB), "triggering": {"mode": mode}}
        if mode == "SCHEDULED":
            document["triggering"]["cron"] = "0 3 * * *"
        answer = actors.client.post(
            "/rest/workbook", json=document, headers=auth("mal", "mal-password")
        )
        assert answer.status_code == 200, answer.text
        file_id, _, _ = _file(actors, path)
        flags = {"readable": True, "writable": True, "executable": True}
        for url, body in (
            (f"{FS}/files/{file_id}/permission/others", flags),
            (f"{FS}/files/{file_id}/permission/groups", {"name": "team", "flags": flags}),
        ):
            shared = actors.client.request(
                "PUT" if url.endswith("others") else "POST",
                url,
                json=body,
                headers=auth("mal", "mal-password"),
            )
            assert shared.status_code == 200, shared.text
        saved[path] = file_id
    deleted = actors.call("admin", "DELETE", "/rest/user-management/users/mal")
    assert deleted.status_code in (200, 204), deleted.text
    node = actors.node
    with node.store.db.read() as conn:
        for path, file_id in saved.items():
            entry = node.store.files.get(conn, file_id)
            assert entry.owner == "admin", path
            permissions = node.store.files.permissions(conn, file_id)
            others = permissions.others
            assert (others.readable, others.writable, others.executable) == (False,) * 3
            assert dict(permissions.groups) == {}
            config = node.store.jobs.for_file(conn, file_id)
            assert config is not None and config.trigger_mode == "MANUAL", path
            assert config.definition["triggering"] == {"mode": "MANUAL"}
            row = conn.execute(
                sa.select(t.job_configurations.c.next_fire_at).where(
                    t.job_configurations.c.id == config.id
                )
            ).one()
            assert row.next_fire_at is None
        # Nothing fires when bob's job succeeds.
    _, _, bob_config = _file(actors, BOB_JOB)
    assert bob_config is not None
    with node.store.db.write() as conn:
        assert fire_data_driven(conn, bob_config) == []
    for path in saved:
        assert actors.call("eve", "GET", f"{FS}/files{path}").status_code == 404
    # The ADMIN sees what they now own and may re-enable it deliberately.
    document = actors.call(
        "admin", "GET", f"/rest/workbook/{_file(actors, '/Users/mal/data_driven.wbk')[2]}"
    )
    assert document.status_code == 200 and document.json()["triggering"] == {"mode": "MANUAL"}


# ---------------------------------------------------------------- A6: data-driven firing


def _runs_of(actors: Actors, config_id: int) -> list[tuple[int, str, str]]:
    with actors.node.store.db.read() as conn:
        rows = conn.execute(
            sa.select(t.executions.c.id, t.executions.c.status, t.executions.c.trigger_type)
            .where(t.executions.c.job_configuration_id == config_id)
            .order_by(t.executions.c.id)
        ).all()
    return [(r.id, r.status, r.trigger_type) for r in rows]


def test_a6_data_driven_runs_neither_fire_nor_wait_on_jobs_their_owner_cannot_read(
    actors: Actors, files_root: Path
) -> None:
    """eve's workbook reads her job and bob's; bob revokes: his runs no longer show in hers."""
    node = actors.node
    bob_file = _bob_shares_a_job(actors, files_root)
    source = write_orders_csv(files_root / "users" / "eve", rows=2)
    eve_job = "/Users/eve/mine.imp"
    made = actors.call(
        "eve", "POST", "/rest/import-job", {"path": eve_job, **orders_import(source)}
    )
    assert made.status_code == 200, made.text
    document = totals_workbook(eve_job)
    document["sheets"].insert(0, {"kind": "data", "name": "bobs", "source": {"importJob": BOB_JOB}})
    document["triggering"] = {"mode": "DATA_DRIVEN"}
    wbk = actors.call("eve", "POST", "/rest/workbook", {"path": "/Users/eve/w.wbk", **document})
    assert wbk.status_code == 200, wbk.text
    workbook = int(wbk.json()["configuration-id"])
    _, _, eve_config = _file(actors, eve_job)
    _, _, bob_config = _file(actors, BOB_JOB)
    assert eve_config is not None and bob_config is not None

    def fire(upstream: int) -> list[tuple[int, str, str]]:
        bob_run = node.jobs.trigger(BOB_JOB, admin(node)).id  # bob's job is running
        with node.store.db.write() as conn:
            fire_data_driven(conn, upstream)
        runs = _runs_of(actors, workbook)
        node.jobs.stop_execution(bob_run, admin(node))
        for execution_id, status, _ in _runs_of(actors, workbook):
            if status in (JobStatus.QUEUED.value, JobStatus.WAITING_FOR_OTHER_JOB.value):
                node.jobs.stop_execution(execution_id, admin(node))
        return runs

    # While eve may read bob's job, her run waits for his (the control).
    readable = fire(eve_config)
    assert [(s, tt) for _, s, tt in readable] == [
        (JobStatus.WAITING_FOR_OTHER_JOB.value, TriggerType.DATA_DRIVEN.value)
    ]
    _others(actors, "bob", bob_file, readable=False)
    # bob's job succeeding fires nothing of eve's ...
    with node.store.db.write() as conn:
        assert fire_data_driven(conn, bob_config) == []
    assert len(_runs_of(actors, workbook)) == 1
    # ... and her own job's run does not wait on his (it fails alone, as hers).
    unreadable = fire(eve_config)
    assert [(s, tt) for _, s, tt in unreadable[1:]] == [
        (JobStatus.QUEUED.value, TriggerType.DATA_DRIVEN.value)
    ]


def test_a6_group_and_admin_rights_count_when_firing(actors: Actors, files_root: Path) -> None:
    """The SQL form of the read check agrees with has_access for groups and ADMIN."""
    node = actors.node
    bob_file = _bob_shares_a_job(actors, files_root)
    _workbook(actors, "eve", "/Users/eve/g.wbk", BOB_JOB, "DATA_DRIVEN")
    _workbook(actors, "admin", "/Users/admin/a.wbk", BOB_JOB, "DATA_DRIVEN")
    _others(actors, "bob", bob_file, readable=False)
    _, _, bob_config = _file(actors, BOB_JOB)
    assert bob_config is not None
    with node.store.db.write() as conn:
        user_store.insert_group(conn, "team")
        user_store.replace_groups(conn, "eve", ["team"])
        node.store.files.set_group_flags(
            conn, bob_file, "team", readable=True, writable=False, executable=False
        )
        fired = fire_data_driven(conn, bob_config)
    owners = sorted(_owner_of_run(actors, execution_id) for execution_id in fired)
    assert owners == ["admin", "eve"]


def _owner_of_run(actors: Actors, execution_id: int) -> str:
    with actors.node.store.db.read() as conn:
        return str(
            conn.execute(
                sa.select(t.executions.c.triggered_by).where(t.executions.c.id == execution_id)
            ).scalar_one()
        )


# ---------------------------------------------------------------- A7: runs nobody asked for


def _definer(actors: Actors) -> None:
    with actors.node.store.db.write() as conn:
        user_store.insert_role(conn, "definer", ["job.define", "job.read", "data.read"])
    actors.node.store.users.create("carl", _hash(), roles=("definer",))


def _hash() -> str:
    return password_hash("pw")


def test_a7_saving_a_self_running_workbook_needs_job_run(actors: Actors, files_root: Path) -> None:
    _definer(actors)
    _bob_shares_a_job(actors, files_root)
    base: dict[str, Any] = {"path": "/Users/carl/w.wbk", **totals_workbook(BOB_JOB)}
    for triggering in ({"mode": "SCHEDULED", "cron": "* * * * *"}, {"mode": "DATA_DRIVEN"}):
        refused = actors.call("carl", "POST", "/rest/workbook", {**base, "triggering": triggering})
        assert refused.status_code == 403, refused.text
        assert "needs the capability job.run" in refused.json()["reason"]
    made = actors.call("carl", "POST", "/rest/workbook", {**base, "triggering": {"mode": "MANUAL"}})
    assert made.status_code == 200, made.text
    url = f"/rest/workbook/{made.json()['configuration-id']}"
    changed = actors.call("carl", "PUT", url, {**base, "triggering": {"mode": "DATA_DRIVEN"}})
    assert changed.status_code == 403, changed.text
    assert actors.call("carl", "GET", url).json()["triggering"] == {"mode": "MANUAL"}


def test_a7_an_owner_who_lost_job_run_gets_no_automatic_runs(
    running: Actors, files_root: Path
) -> None:
    node = running.node
    _bob_shares_a_job(running, files_root)
    config_id = _workbook(running, "eve", "/Users/eve/auto.wbk", BOB_JOB, "DATA_DRIVEN")
    with node.store.db.write() as conn:
        user_store.insert_role(conn, "definer", ["job.define", "job.read", "data.read"])
        user_store.replace_roles(conn, "eve", ["definer"])
        config = node.store.jobs.get(conn, config_id)
        runs = [
            create_execution(conn, config, trigger, "eve")
            for trigger in (TriggerType.SCHEDULER, TriggerType.DATA_DRIVEN)
        ]
    for execution_id in runs:
        failed = wait_terminal(node, execution_id)
        assert failed.status is JobStatus.ERROR
        assert "eve may no longer run jobs" in (failed.error_message or "")
    # A run an ADMIN asks for is not refused for that reason.
    manual = wait_terminal(node, node.jobs.trigger("/Users/eve/auto.wbk", admin(node)).id)
    assert "may no longer run" not in (manual.error_message or "")
