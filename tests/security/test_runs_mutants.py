"""What a run dropped, as a reader sees it: the mutants of services/runs.py the suite let live.

docs/testing.md, "Surviving mutants", services/runs.py, names the mutants each test kills.
"""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import Actors
from tests.security.test_run_logs import BOBS, IMP, _define, _get, _run, add_dora
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
