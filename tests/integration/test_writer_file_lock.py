"""SQLite writers of every process take turns on `<database>-writers` (store/filelock.py)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamill.store.db import Database, _writer_file_lock
from datamill.store.filelock import WriterFileLock

# Another process: one write transaction that inserts `x`, says "inside" and
# waits for a line (or its death) before it commits.
_WRITER = """
import sys
import sqlalchemy as sa
from datamill.store.db import Database, _writer_file_lock
db = Database(sys.argv[1])
with db.write() as conn:
    conn.execute(sa.text("INSERT INTO t (x) VALUES (:x)"), {"x": int(sys.argv[2])})
    print("inside", flush=True)
    sys.stdin.readline()
print("committed", flush=True)
"""


@pytest.fixture
def db_file(tmp_path: Path) -> Iterator[Path]:
    """A SQLite database file with one table `t (x)`."""
    path = tmp_path / "meta.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    db.dispose()
    yield path


def _held_elsewhere(lock_file: Path) -> bool:
    """Whether some open file (another process's, or another of ours) holds the lock."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing frees a lock this probe took
    return False


def _rows(db: Database) -> list[int]:
    with db.read() as conn:
        return [row.x for row in conn.execute(sa.text("SELECT x FROM t ORDER BY x"))]


def _write_here_and_read(db_file: Path, x: int) -> list[int]:
    """Insert `x` in a write transaction of this process; every row afterwards."""
    db = Database(f"sqlite:///{db_file}")
    try:
        with db.write() as conn:
            conn.execute(sa.text("INSERT INTO t (x) VALUES (:x)"), {"x": x})
        return _rows(db)
    finally:
        db.dispose()


def _start_writer(db_file: Path, x: int) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, f"sqlite:///{db_file}", str(x)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "inside\n"
    return writer


def test_a_write_transaction_holds_the_file_lock_until_it_ends(db_file: Path) -> None:
    db = Database(f"sqlite:///{db_file}")
    lock_file = Path(f"{db_file}-writers")
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO t (x) VALUES (1)"))
        assert _held_elsewhere(lock_file)
    assert not _held_elsewhere(lock_file)
    assert _rows(db) == [1]
    db.dispose()


def test_another_process_writing_holds_the_lock_and_its_row_is_there_after(
    db_file: Path,
) -> None:
    lock_file = Path(f"{db_file}-writers")
    writer = _start_writer(db_file, 7)
    try:
        assert _held_elsewhere(lock_file)
    finally:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    assert writer.wait(60) == 0
    assert not _held_elsewhere(lock_file)
    assert _write_here_and_read(db_file, 8) == [7, 8]  # this process's writer gets its turn


def test_a_writer_killed_inside_its_transaction_leaves_neither_lock_nor_row(
    db_file: Path,
) -> None:
    lock_file = Path(f"{db_file}-writers")
    writer = _start_writer(db_file, 5)
    writer.send_signal(signal.SIGKILL)
    writer.wait(60)
    assert not _held_elsewhere(lock_file)
    assert _write_here_and_read(db_file, 6) == [6]


def test_a_wait_that_outlasts_its_timeout_is_given_up_not_held(db_file: Path) -> None:
    lock_file = Path(f"{db_file}-writers")
    other = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)
    lock = WriterFileLock(str(db_file), timeout_seconds=0.05)
    try:
        assert lock.acquire() is False
    finally:
        os.close(other)
    assert lock.acquire() is True
    assert _held_elsewhere(lock_file)
    lock.release()
    assert not _held_elsewhere(lock_file)
    lock.close()


def test_writes_go_on_when_the_file_lock_is_held_by_a_stranger(
    db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lock held by something that never lets go (not a writer): after the
    # wait's timeout the writer goes to SQLite's lock, which is free.
    lock_file = Path(f"{db_file}-writers")
    other = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        db = Database(f"sqlite:///{db_file}")
        assert db._file_lock is not None
        monkeypatch.setattr(db._file_lock, "timeout_seconds", 0.05)
        with db.write() as conn:
            conn.execute(sa.text("INSERT INTO t (x) VALUES (3)"))
        assert _rows(db) == [3]
        db.dispose()
    finally:
        os.close(other)


def test_writes_go_on_when_the_lock_file_cannot_be_opened(db_file: Path) -> None:
    lock_file = Path(f"{db_file}-writers")
    lock_file.unlink()
    lock_file.mkdir()  # a folder in its place: it cannot be opened
    db = Database(f"sqlite:///{db_file}")
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO t (x) VALUES (4)"))
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO t (x) VALUES (5)"))
    assert _rows(db) == [4, 5]
    db.dispose()


def test_a_database_in_memory_has_no_lock_file() -> None:
    assert _writer_file_lock(sa.create_engine("sqlite://")) is None
    assert _writer_file_lock(sa.create_engine("sqlite:///:memory:")) is None
