"""F8: one user cannot hold the workers for others.

Eve's endless runs are stopped by the time limit, her endless output by the
output limit, and while she keeps the queue full, a free slot goes to bob.
Limits here are small (settings below); the tests assert states, reasons and
order, never how long anything took.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from datamill.bootstrap import Node, open_node
from datamill.domain.records import Execution, User
from datamill.domain.status import JobKind, JobStatus
from datamill.engine.windows import window_prefix
from datamill.settings import Settings
from datamill.store import data as data_store
from datamill.worker.housekeeping import remove_stale_staging
from datamill.worker.limits import effective_limits, run_bytes, staged_bytes
from tests.helpers import execution, password_hash, wait_for, wait_terminal
from tests.security.conftest import Actors

DEFAULT_SECONDS = 2
MAX_SECONDS = 3600
DEFAULT_BYTES = 1_000_000
MAX_BYTES = 1_000_000_000
# Generous own limits for runs that must not be stopped by the small defaults.
ROOMY = {"timeSeconds": 600, "outputBytes": 100_000_000}

ENDLESS = "SELECT sum(hash(x)) AS s FROM range(1000000000000) AS t(x)"
ENDLESS_OUTPUT = "SELECT md5(CAST(x AS VARCHAR)) AS m FROM range(1000000000000) AS t(x)"
# About 4 MB of Parquet, written in well under a second.
BIG_OUTPUT = "SELECT md5(CAST(x AS VARCHAR)) AS m FROM range(120000) AS t(x)"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with small run limits."""
    return settings.model_copy(
        update={
            "run_time_limit_seconds": DEFAULT_SECONDS,
            "run_time_limit_max_seconds": MAX_SECONDS,
            "run_output_limit_bytes": DEFAULT_BYTES,
            "run_output_limit_max_bytes": MAX_BYTES,
        }
    )


def _workbook(
    actors: Actors, user: str, name: str, sql: str, limits: dict[str, int] | None = None
) -> str:
    """Define a one-sheet workbook as `user`; returns its path."""
    document: dict[str, Any] = {
        "path": f"/Analytics/Workbooks/{name}.wbk",
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": sql}],
    }
    if limits is not None:
        document["limits"] = limits
    created = actors.call(user, "POST", "/rest/workbook", document)
    assert created.status_code == 200, created.text
    return str(document["path"])


def _trigger(actors: Actors, user: str, path: str) -> int:
    response = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert response.status_code == 200, response.text
    return int(response.json()["job-execution-id"])


def _staging(node: Node, execution_id: int) -> Path:
    return node.settings.staging_root / str(execution_id)


def _no_data(node: Node, path: str) -> bool:
    with node.store.db.read() as conn:
        entry = node.store.files.find(conn, path)
        assert entry is not None
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        return data_store.newest_data(conn, config.id) is None


# ---------------------------------------------------------------- time limit


def test_f8_endless_runs_end_by_the_time_limit_and_bob_runs_then(running: Actors) -> None:
    node = running.node
    spins = [_workbook(running, "eve", f"spin{i}", ENDLESS) for i in (1, 2)]
    mine = _workbook(running, "bob", "mine", "SELECT 1 AS one", ROOMY)
    eve_runs = [_trigger(running, "eve", path) for path in spins]
    # Alone, eve may use every slot (the shares are work-conserving).
    for run in eve_runs:
        wait_for(node, run, {JobStatus.RUNNING})
    bob_run = _trigger(running, "bob", mine)

    for run in eve_runs:
        ended = wait_terminal(node, run)
        assert ended.status is JobStatus.ERROR
        assert ended.error_message == f"ran longer than its time limit of {DEFAULT_SECONDS} s"
        assert ended.attempts == 1  # stopped for good, never run again
        assert not _staging(node, run).exists()
    assert wait_terminal(node, bob_run).status is JobStatus.COMPLETED
    # The killed children were replaced: eve's next run runs, and is stopped again.
    again = wait_terminal(node, _trigger(running, "eve", spins[0]))
    assert again.error_message == f"ran longer than its time limit of {DEFAULT_SECONDS} s"


def test_a_job_sets_its_own_time_limit(running: Actors) -> None:
    lower = _workbook(running, "eve", "lower", ENDLESS, {"timeSeconds": 1})
    higher = _workbook(running, "eve", "higher", ENDLESS, {"timeSeconds": 3})
    for path, seconds in ((lower, 1), (higher, 3)):
        ended = wait_terminal(running.node, _trigger(running, "eve", path))
        assert ended.status is JobStatus.ERROR
        assert ended.error_message == f"ran longer than its time limit of {seconds} s"


def test_the_operator_maximum_holds_for_jobs_saved_before_it_was_lowered(
    settings: Settings,
) -> None:
    definition = {"limits": {"timeSeconds": 500, "outputBytes": 5000}}
    assert effective_limits(definition, settings).time_seconds == 500
    lowered = Settings(
        home=settings.home,
        run_time_limit_seconds=10,
        run_time_limit_max_seconds=100,
        run_output_limit_bytes=1000,
        run_output_limit_max_bytes=2000,
    )
    limits = effective_limits(definition, lowered)
    assert (limits.time_seconds, limits.output_bytes) == (100, 2000)
    defaults = effective_limits({}, lowered)
    assert (defaults.time_seconds, defaults.output_bytes) == (10, 1000)


def test_an_operator_default_above_the_maximum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_time_limit_seconds"):
        Settings(home=tmp_path, run_time_limit_seconds=10, run_time_limit_max_seconds=5)
    with pytest.raises(ValueError, match="run_output_limit_bytes"):
        Settings(home=tmp_path, run_output_limit_bytes=10, run_output_limit_max_bytes=5)


# ---------------------------------------------------------------- output limit


def test_endless_output_is_stopped_by_the_output_limit(running: Actors) -> None:
    node = running.node
    # Its time limit is far away: only the output limit can stop it.
    path = _workbook(running, "eve", "flood", ENDLESS_OUTPUT, {"timeSeconds": 600})
    run = _trigger(running, "eve", path)
    ended = wait_terminal(node, run)
    assert ended.status is JobStatus.ERROR
    assert ended.error_message is not None
    assert ended.error_message.startswith(
        f"wrote more than its output limit of {DEFAULT_BYTES} bytes"
    )
    assert _no_data(node, path)
    assert not _staging(node, run).exists()
    # The killed child's window went with it: no links keeping inputs alive,
    # no partial output left behind.
    assert [p.name for p in node.settings.staging_root.iterdir()] == []


def test_an_output_over_the_limit_at_the_end_publishes_nothing(running: Actors) -> None:
    node = running.node
    small = _workbook(running, "eve", "small", BIG_OUTPUT, {"outputBytes": 100_000})
    ended = wait_terminal(node, _trigger(running, "eve", small))
    assert ended.status is JobStatus.ERROR
    assert ended.error_message is not None
    assert ended.error_message.startswith("wrote more than its output limit of 100000 bytes")
    assert _no_data(node, small)
    # The same output within a job's own, higher limit is published.
    roomy = _workbook(running, "eve", "roomy", BIG_OUTPUT, ROOMY)
    assert wait_terminal(node, _trigger(running, "eve", roomy)).status is JobStatus.COMPLETED
    assert not _no_data(node, roomy)


def test_an_export_file_over_its_limit_is_never_written(running: Actors, files_root: Path) -> None:
    node = running.node
    source = _workbook(running, "eve", "rows", BIG_OUTPUT, ROOMY)
    assert wait_terminal(node, _trigger(running, "eve", source)).status is JobStatus.COMPLETED
    target = files_root / "users" / "eve" / "out" / "rows.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "path": "/Data/ExportJobs/rows.exp",
        "source": {"workbook": source, "sheet": "out"},
        "sink": {"kind": "csv", "path": str(target)},
        "limits": {"outputBytes": 100_000},
    }
    created = running.call("eve", "POST", "/rest/export-job", document)
    assert created.status_code == 200, created.text
    ended = wait_terminal(node, _trigger(running, "eve", document["path"]))
    assert ended.status is JobStatus.ERROR
    assert ended.error_message is not None
    assert ended.error_message.startswith("wrote more than its output limit of 100000 bytes")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_spill_files_do_not_count_as_output(tmp_path: Path) -> None:
    (tmp_path / ".duckdb_tmp").mkdir()
    (tmp_path / ".duckdb_tmp" / "spill.bin").write_bytes(b"x" * 5000)
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "out.csv").write_bytes(b"x" * 300)
    (tmp_path / "out.parquet").write_bytes(b"x" * 200)
    # Copies of object-store sources are the run's input, not its output.
    (tmp_path / "_objects" / "00000").mkdir(parents=True)
    (tmp_path / "_objects" / "00000" / "in.csv").write_bytes(b"x" * 7000)
    assert staged_bytes(str(tmp_path)) == 500
    assert staged_bytes(str(tmp_path / "gone")) == 0


def test_a_workbook_is_measured_in_its_window_inputs_and_spill_left_out(tmp_path: Path) -> None:
    staging = tmp_path / "42"
    (staging / ".duckdb_tmp").mkdir(parents=True)
    (staging / ".duckdb_tmp" / "spill.bin").write_bytes(b"x" * 5000)
    # A workbook writes into the output folder of its child's window.
    run = tmp_path / f"{window_prefix(777)}2" / "run"
    (run / "output" / "_work").mkdir(parents=True)
    (run / "output" / "out.parquet").write_bytes(b"x" * 300)
    (run / "output" / "_work" / "mid.parquet").write_bytes(b"x" * 200)
    # Its links to its inputs lie beside the output folder, not in it.
    (run / "0.parquet").write_bytes(b"x" * 7000)
    # Another child's window is not this run's output.
    (tmp_path / f"{window_prefix(778)}1" / "run" / "output").mkdir(parents=True)
    other = tmp_path / f"{window_prefix(778)}1" / "run" / "output" / "o.parquet"
    other.write_bytes(b"x" * 9000)
    assert run_bytes(str(staging), 777) == 500
    assert run_bytes(str(tmp_path / "44"), 779) == 0


# ---------------------------------------------------------------- saving limits


def _documents(files_root: Path) -> dict[str, dict[str, Any]]:
    # Eve's own private location: the only files she may read and write.
    folder = files_root / "users" / "eve" / "lim"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.csv").write_text("a\n1\n", encoding="utf-8")
    return {
        "/rest/import-job": {
            "path": "/Data/ImportJobs/lim.imp",
            "source": {"kind": "csv", "path": str(folder / "in.csv")},
        },
        "/rest/workbook": {
            "path": "/Analytics/Workbooks/lim.wbk",
            "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS one"}],
        },
        "/rest/export-job": {
            "path": "/Data/ExportJobs/lim.exp",
            "source": {"importJob": "/Data/ImportJobs/lim.imp"},
            "sink": {"kind": "csv", "path": str(folder / "out.csv")},
        },
    }


OVER_THE_MAXIMUM = [
    ({"timeSeconds": MAX_SECONDS + 1}, "limits.timeSeconds: at most 3600 seconds"),
    ({"outputBytes": MAX_BYTES + 1}, "limits.outputBytes: at most 1000000000 bytes"),
    ({"timeSeconds": 2**70}, "limits.timeSeconds: at most"),
]
INVALID = [
    {"timeSeconds": 0},
    {"timeSeconds": -1},
    {"outputBytes": 0},
    {"timeSeconds": "soon"},
    {"timeSeconds": 1.5},
    {"cpuSeconds": 10},
    "600",
]


def test_limits_above_the_operator_maximum_are_refused_for_every_kind(
    actors: Actors, files_root: Path
) -> None:
    for base, document in _documents(files_root).items():
        for limits, message in OVER_THE_MAXIMUM:
            refused = actors.call("eve", "POST", base, {**document, "limits": limits})
            assert refused.status_code == 400, (base, limits, refused.text)
            assert message in refused.text
        for limits in INVALID:
            refused = actors.call("eve", "POST", base, {**document, "limits": limits})
            assert refused.status_code == 400, (base, limits, refused.text)
        # At the maximum: accepted, and read back as sent.
        at_most = {"timeSeconds": MAX_SECONDS, "outputBytes": MAX_BYTES}
        created = actors.call("eve", "POST", base, {**document, "limits": at_most})
        assert created.status_code == 200, (base, created.text)
        config_id = created.json()["configuration-id"]
        read = actors.call("eve", "GET", f"{base}/{config_id}").json()
        assert read["limits"] == at_most
        # An update above the maximum is refused and changes nothing.
        for limits, message in OVER_THE_MAXIMUM:
            refused = actors.call("eve", "PUT", f"{base}/{config_id}", {**read, "limits": limits})
            assert refused.status_code == 400, (base, limits, refused.text)
            assert message in refused.text
        assert actors.call("eve", "GET", f"{base}/{config_id}").json() == read
        lowered = {**read, "limits": {"timeSeconds": 5}}
        assert actors.call("eve", "PUT", f"{base}/{config_id}", lowered).status_code == 200
        assert actors.call("eve", "GET", f"{base}/{config_id}").json() == lowered


def test_a_job_over_both_maxima_is_told_both_in_one_answer(
    actors: Actors, files_root: Path
) -> None:
    document = _documents(files_root)["/rest/import-job"]
    over = {"timeSeconds": MAX_SECONDS + 1, "outputBytes": MAX_BYTES + 1}
    refused = actors.call("eve", "POST", "/rest/import-job", {**document, "limits": over})
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"].split("; ") == [
        f"limits.timeSeconds: at most {MAX_SECONDS} seconds (the operator's maximum)",
        f"limits.outputBytes: at most {MAX_BYTES} bytes (the operator's maximum)",
    ]
    assert actors.call("eve", "GET", "/rest/import-job").json() == []


def test_a_job_without_limits_reads_back_without_them(actors: Actors, files_root: Path) -> None:
    document = _documents(files_root)["/rest/workbook"]
    created = actors.call("eve", "POST", "/rest/workbook", document)
    config_id = created.json()["configuration-id"]
    assert "limits" not in actors.call("eve", "GET", f"/rest/workbook/{config_id}").json()


# ---------------------------------------------------------------- slot shares


def test_bob_gets_the_next_free_slot_while_eve_keeps_the_queue_full(running: Actors) -> None:
    node = running.node
    # eve holds both slots: one run stays, one is stopped by the time limit.
    stays = _workbook(running, "eve", "stays", ENDLESS, {"timeSeconds": 600})
    frees = _workbook(running, "eve", "frees", ENDLESS)
    waiting = [_workbook(running, "eve", f"more{i}", ENDLESS) for i in range(3)]
    mine = _workbook(running, "bob", "mine", "SELECT 1 AS one", ROOMY)
    for path in (stays, frees):
        wait_for(node, _trigger(running, "eve", path), {JobStatus.RUNNING})
    eve_queued = [_trigger(running, "eve", path) for path in waiting]
    bob_run = _trigger(running, "bob", mine)

    done = wait_terminal(node, bob_run)
    assert done.status is JobStatus.COMPLETED
    assert done.started_at is not None
    # Older than bob's, eve's queued runs still started after it, if at all.
    for run in eve_queued:
        started = execution(node, run).started_at
        assert started is None or started > done.started_at, run


def _users(node: Node, *names: str) -> dict[str, User]:
    users = {}
    with node.store.db.read() as conn:
        for name in names:
            user = node.store.users.get(conn, name)
            assert user is not None
            users[name] = user
    return users


_NUMBERS = itertools.count()


def _queue(node: Node, owner: User, count: int) -> list[int]:
    """Runs of `count` new jobs (one run each, so each may start at once)."""
    runs = []
    for _ in range(count):
        path = f"/Analytics/Workbooks/{owner.name}{next(_NUMBERS)}.wbk"
        definition = {"sheets": [{"kind": "sql", "name": "o", "keep": True, "sql": "SELECT 1"}]}
        node.jobs.define_job(path, JobKind.WORKBOOK, definition, owner.name)
        runs.append(node.jobs.trigger(path, owner).id)
    return runs


def _claim(node: Node) -> Execution:
    claimed = node.store.queue.claim_next_execution("w")
    assert claimed is not None
    return claimed


def test_a_free_slot_goes_to_the_waiting_user_holding_the_fewest(actors: Actors) -> None:
    node = actors.node
    users = _users(node, "eve", "bob", "admin")
    eve = _queue(node, users["eve"], 4)
    # Alone, eve gets every slot she asks for, oldest first.
    assert [_claim(node).id for _ in range(2)] == eve[:2]
    bob = _queue(node, users["bob"], 2)
    admin = _queue(node, users["admin"], 1)
    # eve holds 2, bob and admin none: they go first, oldest first.
    assert _claim(node).id == bob[0]
    assert _claim(node).id == admin[0]
    # eve 2, bob 1, admin 1 (nothing more queued): bob holds fewer than eve.
    assert _claim(node).id == bob[1]
    # Only eve waits now: work-conserving, she gets the rest.
    assert [_claim(node).id for _ in range(2)] == eve[2:]
    assert node.store.queue.claim_next_execution("w") is None


def test_without_fair_shares_the_oldest_run_goes_first(settings: Settings) -> None:
    node = open_node(Settings(**{**settings.model_dump(), "fair_slot_shares": False}))
    try:
        node.store.users.create("eve", password_hash("pw"))
        node.store.users.create("bob", password_hash("pw"))
        users = _users(node, "eve", "bob")
        eve = _queue(node, users["eve"], 3)
        assert _claim(node).id == eve[0]
        _queue(node, users["bob"], 1)
        assert _claim(node).id == eve[1]
    finally:
        node.store.close()


def test_housekeeping_removes_windows_of_ended_processes_only(tmp_path: Path) -> None:
    """A work horse killed mid-run leaves links to its inputs in its window."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = tmp_path / f"{window_prefix(dead.pid)}1" / "run"
    killed.mkdir(parents=True)
    (killed / "0.parquet").write_bytes(b"x")
    alive = tmp_path / f"{window_prefix(os.getpid())}1" / "run"
    alive.mkdir(parents=True)
    (alive / "0.parquet").write_bytes(b"x")
    # Another host's window: its process id means nothing here.
    elsewhere = tmp_path / f".window-0another-{dead.pid}-1" / "run"
    elsewhere.mkdir(parents=True)
    remove_stale_staging(tmp_path, set())
    assert not killed.exists()
    assert alive.exists() and elsewhere.exists()
