"""The read check of data-driven firing (store/triggers.py) that mutation testing found untested.

A DATA_DRIVEN workbook fires after a job it reads succeeds only if its owner
may read that job (A6). The store writes services/permissions.has_access once
more in SQL for this; a group grants READ only through its `readable` flag,
and only on the file it is set on.
"""

from __future__ import annotations

from pathlib import Path

from datamill.store import users as user_store
from datamill.store.triggers import fire_data_driven
from tests.helpers import execution
from tests.security.conftest import Actors
from tests.security.test_owners import BOB_JOB, _bob_shares_a_job, _file, _others, _workbook


def _grant(
    actors: Actors, file_id: int, *, readable: bool, writable: bool, group: str = "team"
) -> None:
    with actors.node.store.db.write() as conn:
        actors.node.store.files.set_group_flags(
            conn, file_id, group, readable=readable, writable=writable, executable=True
        )


def _fired(actors: Actors, config_id: int) -> list[int]:
    with actors.node.store.db.write() as conn:
        return fire_data_driven(conn, config_id)


def test_a_group_grants_read_for_firing_only_with_its_read_flag_on_that_job(
    actors: Actors, files_root: Path
) -> None:
    bob_file = _bob_shares_a_job(actors, files_root)
    other_file = _bob_shares_a_job(actors, files_root, "/Data/ImportJobs/other.imp")
    _workbook(actors, "eve", "/Users/eve/g.wbk", BOB_JOB, "DATA_DRIVEN")
    for file_id in (bob_file, other_file):
        _others(actors, "bob", file_id, readable=False)
    _, _, bob_config = _file(actors, BOB_JOB)
    assert bob_config is not None
    with actors.node.store.db.write() as conn:
        user_store.insert_group(conn, "team")
        user_store.replace_groups(conn, "eve", ["team"])
        user_store.insert_group(conn, "others")

    # Read for a group eve is not in: nothing fires.
    _grant(actors, bob_file, readable=True, writable=False, group="others")
    assert _fired(actors, bob_config) == []

    # Write and execute, but not read, for eve's group: nothing fires.
    _grant(actors, bob_file, readable=False, writable=True)
    assert _fired(actors, bob_config) == []
    # Read on another of bob's jobs is no read on this one.
    _grant(actors, other_file, readable=True, writable=False)
    assert _fired(actors, bob_config) == []
    # The control: read on the job that ran fires her workbook, as hers.
    _grant(actors, bob_file, readable=True, writable=False)
    fired = _fired(actors, bob_config)
    assert [execution(actors.node, run).triggered_by for run in fired] == ["eve"]
