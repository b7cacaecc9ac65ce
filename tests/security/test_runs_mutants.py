"""What a run dropped, as a reader sees it: the mutants of services/runs.py the suite let live.

docs/testing.md, "Surviving mutants", services/runs.py, names the mutants each test kills.
"""

from __future__ import annotations

from pathlib import Path

from datamill.domain import runlog as rl
from datamill.store import runlog
from tests.helpers import write_orders_csv
from tests.security.conftest import Actors
from tests.security.test_run_logs import BOBS, IMP, _define, _get, _import, _run, add_dora
from tests.security.test_run_logs import world as world  # bob's running world, carol


def test_a_drop_without_a_sample_is_not_said_to_withhold_one(
    world: Actors, files_root: Path
) -> None:
    # Lines that are no JSON object are dropped with no sample (the engine quotes
    # none). dora may read the job but not data: she sees the same warning as
    # bob, with nothing said to be withheld, since nothing was.
    add_dora(world)
    lines = ['{"order_id": 1, "region": "north"}', "[1, 2]", '{"order_id": 2, "region": "south"}']
    (files_root / "users" / "bob" / "orders.jsonl").write_text("\n".join(lines) + "\n")
    definition = {
        "source": {"kind": "jsonl", "location": BOBS, "path": "orders.jsonl"},
        "schema": [{"name": "order_id", "type": "BIGINT"}, {"name": "region", "type": "VARCHAR"}],
        "errorMode": "DROP_RECORD",
    }
    execution_id = _run(world, _define(world, IMP, definition))
    reason = "the line is not a JSON object"
    expected = {"message": f"dropped 1 record(s): {reason}", "count": 1, "reason": reason}
    for user in ("bob", "dora"):
        details = _get(world, user, f"/rest/job-execution/job-details/{execution_id}").json()
        assert details["warnings"] == [expected], (user, details)


def test_a_claim_that_could_not_read_its_configuration_leaves_the_version_as_claimed_before(
    world: Actors, files_root: Path
) -> None:
    # The worker logs a claim without the configuration when it could not read
    # it (worker/runlog.py `claimed`): lineage names the version the run was
    # claimed with before, and is never a 500 for it.
    write_orders_csv(files_root / "users" / "bob", rows=3)
    execution_id = _run(world, _define(world, IMP, _import()))
    lineage = _get(world, "bob", f"/api/job-execution/{execution_id}/lineage").json()
    version = lineage["job-configuration"]
    assert len(version["sha256"]) == 64
    with world.node.store.db.write() as conn:
        runlog.append(conn, execution_id, [rl.pending(rl.CLAIMED, worker="w2", attempt=2)])
    again = _get(world, "bob", f"/api/job-execution/{execution_id}/lineage")
    assert (again.status_code, again.json()["job-configuration"]) == (200, version)
