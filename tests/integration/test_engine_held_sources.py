"""Source files are read as checked: held open from the check to the run's end (engine/held.py).

A folder of a checked source path swapped for a symbolic link before the
engine reads must not lead the read elsewhere: to another user's data (the
data root, which the worker's shared database may read) or outside every
root. The files are closed when the run ends, and thousands of them fit.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from datamill.domain.status import JobKind
from datamill.engine.duckdb import DuckDBEngine
from datamill.engine.held import HeldFiles, fd_path
from datamill.engine.spark.inputs import on_this_machine
from datamill.errors import InvalidInput, JobFailed, PathNotAllowed
from tests.integration.engine_fixtures import Area, make_area, rows
from tests.integration.swaps import SwapOnFirstProgress, held_below


@pytest.fixture(params=[False, True], ids=["own-database", "shared-database"])
def area(tmp_path: Path, request: pytest.FixtureRequest) -> Area:
    """Fresh folders; runs on a database of their own or the worker's shared one."""
    return make_area(tmp_path, shared=request.param)


def _import(
    area: Area, engine: DuckDBEngine, source: dict[str, Any], progress: Any, **extra: Any
) -> Any:
    definition = {"kind": "import", "source": source}
    return engine.run(area.request(JobKind.IMPORT, definition, **extra), progress)


@pytest.mark.parametrize("target", ["outside", "data"])
def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_read_by_duckdb(
    area: Area, target: str
) -> None:
    # The first progress report comes after the check and the read of the
    # keys; the reads that store the data come after the swap. The shared
    # database may read the data root (other users' datasets): the swap
    # reached them there before the files were held.
    folder = area.sources / "d"
    folder.mkdir()
    (folder / "x.jsonl").write_text(json.dumps({"v": "mine"}) + "\n")
    checked = os.path.realpath(folder / "x.jsonl")
    secret = area.outside if target == "outside" else area.data / "someone"
    secret.mkdir(exist_ok=True)
    (secret / "x.jsonl").write_text(json.dumps({"v": "secret"}) + "\n")
    progress = SwapOnFirstProgress(folder, secret)
    engine = DuckDBEngine(keep_warm=True)
    source = {"kind": "jsonl", "path": str(folder / "x.jsonl")}
    try:
        if area.shared:
            _import(area, engine, source, progress)
            assert rows(area.staging / "data.parquet") == [{"v": "mine"}]
        else:
            # A database of its own is locked to the file's name at the check,
            # which DuckDB resolves again: the moved file is refused outright.
            with pytest.raises(JobFailed) as refused:
                _import(area, engine, source, progress)
            assert refused.value.message.startswith(
                f'checking the records: Permission Error: Cannot access file "{checked}"'
            )
        assert progress.swapped
        assert progress.held == [checked]
        assert folder.is_symlink()
        # A long-lived engine keeps no source open after the run.
        assert held_below(area.sources) == []
    finally:
        engine.close()


def test_every_file_of_a_glob_is_held_during_the_run_and_none_after(area: Area) -> None:
    for index in range(30):
        (area.sources / f"p{index:02d}.csv").write_text(f"v\n{index}\n")
    seen: list[list[str]] = []
    # A spill folder of the operator's: a warm engine closes the run's own
    # database only between runs, and must let go of the files before.
    spill = area.root / "spill"
    spill.mkdir()
    engine = DuckDBEngine(keep_warm=True)
    try:
        for _ in range(3):  # runs after runs in one process: nothing piles up
            progress = SwapOnFirstProgress(area.sources / "unused", None)
            result = _import(
                area,
                engine,
                {"kind": "csv", "path": str(area.sources / "p*.csv")},
                progress,
                temp_dir=str(spill),
            )
            seen.append(progress.held)
            assert result.success_count == 30
            assert held_below(area.sources) == []
            engine.between_runs()
    finally:
        engine.close()
    expected = sorted(os.path.realpath(area.sources / f"p{i:02d}.csv") for i in range(30))
    assert seen == [expected] * 3


def test_the_files_of_a_failed_run_are_let_go(area: Area) -> None:
    (area.sources / "a.csv").write_text("v\n1\nx\n")
    definition = {
        "kind": "import",
        "source": {"kind": "csv", "path": str(area.sources / "a.csv")},
        "schema": [{"name": "v", "type": "BIGINT"}],
        "errorMode": "FAIL",
    }
    engine = DuckDBEngine(keep_warm=True)
    try:
        with pytest.raises(Exception, match="errorMode FAIL stops the import"):
            engine.run(area.request(JobKind.IMPORT, definition), lambda _: None)
        assert held_below(area.sources) == []
    finally:
        engine.close()


def test_unreadable_csv_lines_name_the_file_not_its_descriptor(area: Area) -> None:
    (area.sources / "broken.csv").write_text("a,b\n1,x\n2,y,extra\n")
    result = _import(
        area, DuckDBEngine(), {"kind": "csv", "path": str(area.sources / "broken.csv")}, print
    )
    assert result.warnings[0].startswith(
        "dropped 1 CSV line(s) that could not be read (first: line 3 of broken.csv:"
    )


def test_more_files_than_the_soft_open_file_limit_are_held_up_to_the_hard_one(
    area: Area,
) -> None:
    count = 400
    for index in range(count):
        (area.sources / f"m{index:03d}.csv").write_text(f"v\n{index}\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < len(os.listdir("/proc/self/fd")) + count + 300:
        pytest.skip("the hard open-file limit is too low for this test")
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + count // 2, hard))
    try:
        result = _import(
            area, DuckDBEngine(), {"kind": "csv", "path": str(area.sources / "m*.csv")}, print
        )
        assert result.success_count == count
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > used + count
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert held_below(area.sources) == []


def test_more_files_than_the_hard_limit_are_refused_naming_the_limit(tmp_path: Path) -> None:
    # The hard limit cannot be raised again once lowered: a process of its own.
    for index in range(50):
        (tmp_path / f"f{index}").write_text("x")
    code = (
        "import resource, sys\n"
        "from datamill.engine.held import HeldFiles\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))\n"
        "try:\n"
        "    HeldFiles(sys.argv[1:])\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    files = [str(tmp_path / f"f{i}") for i in range(50)] * 2
    done = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        "InvalidInput the source has 100 files, more than this worker may hold open at once "
        "(open-file limit 300); read fewer files per import, or raise the worker's limit "
        "(ulimit -n, systemd LimitNOFILE)"
    )


def test_a_file_that_cannot_be_opened_for_lack_of_descriptors_says_so(tmp_path: Path) -> None:
    # Only another thread's files (or the system's table) can fill the limit
    # after make_room counted them: the open itself must then name the limit,
    # not call an existing file missing. A process of its own, all but full.
    (tmp_path / "f").write_text("x")
    code = (
        "import os, resource, sys\n"
        "from datamill.engine.held import _open_checked\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "kept = []\n"
        "try:\n"
        "    while True:\n"
        "        kept.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError:\n"
        "    pass\n"
        "try:\n"
        "    _open_checked(sys.argv[1])\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    real = str(tmp_path / "f")
    done = subprocess.run(
        [sys.executable, "-c", code, real], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        f"InvalidInput source file {real!r} could not be opened: the worker has too many "
        "files open; read fewer files per import, or raise the worker's open-file limit"
    )


# ---------------------------------------------------------------- HeldFiles itself


def test_a_checked_path_that_leads_elsewhere_when_opened_is_refused(tmp_path: Path) -> None:
    folder, outside = tmp_path / "d", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "x").write_text("mine")
    (outside / "x").write_text("secret")
    checked = os.path.realpath(folder / "x")
    folder.rename(tmp_path / "old")
    folder.symlink_to(outside)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PathNotAllowed) as refused:
        HeldFiles([checked])
    assert refused.value.message == (
        f"source file {checked!r} changed between its check and its opening "
        "(a folder on its path was replaced); it was not read"
    )
    assert set(os.listdir("/proc/self/fd")) <= before  # nothing left open


def test_a_fifo_swapped_in_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "x.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def hold() -> None:
        try:
            HeldFiles([str(fifo)])
        except InvalidInput as error:
            outcome.append(error)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    thread.join(30)
    assert [str(e) for e in outcome] == [
        f"source file {str(fifo)!r} does not exist or is not a file"
    ]


def test_held_files_are_read_through_proc_and_named_by_their_paths(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("first")
    held = HeldFiles([str(tmp_path / "a.csv")])
    try:
        path = held.paths()[0]
        (tmp_path / "a.csv").unlink()
        (tmp_path / "a.csv").write_text("second")
        with open(path, encoding="utf-8") as handle:
            assert handle.read() == "first"
        assert held.paths(4242) == [fd_path(held.fds[0], 4242)]
        assert held.named(f"cannot read {path} or /proc/4242/fd/{held.fds[0]}") == (
            f"cannot read {tmp_path / 'a.csv'} or {tmp_path / 'a.csv'}"
        )
        # The path now leads to another file: a reader by path would read that.
        assert held.moved() == [str(tmp_path / "a.csv")]
    finally:
        held.close()
    with pytest.raises(OSError):
        os.stat(path)


def test_a_path_still_leading_to_the_held_file_has_not_moved(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("first")
    held = HeldFiles([str(tmp_path / "a.csv")])
    try:
        assert held.moved() == []
    finally:
        held.close()


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("sc://localhost:15002/;token=x", True),
        ("sc://127.0.0.1:15002", True),
        ("sc://[::1]:15002", True),
        ("sc://192.0.2.7:15002/;token=x", False),
        ("sc://", False),
    ],
)
def test_only_a_spark_server_on_this_machine_reads_the_held_files(remote: str, local: bool) -> None:
    assert on_this_machine(remote) is local
