"""Several nodes starting at once on a fresh database: one migrates, the others wait."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from datamill.store import tables as t
from datamill.store.db import Database
from datamill.store.health import head_revision, schema_revision
from tests.conftest import PG_URL, _admin_conninfo, require_postgres

NODES = 4
# Each process imports everything first, then waits for the go file, so the
# starts really overlap instead of being spread over the import time.
_START = """
import os, sys, time
from datamill.cli.main import main
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.002)
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty metadata database: no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    require_postgres()
    name = f"datamill_fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_nodes_starting_together_on_a_fresh_database_all_start(
    fresh_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    processes = []
    for n in range(NODES):
        home = tmp_path / f"node{n}"
        args = ["--home", str(home), "--database-url", fresh_url, "init"]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", _START, str(go), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    time.sleep(3)  # lets every process finish importing; correctness does not depend on it
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    codes = [p.returncode for p in processes]
    assert codes == [0] * NODES, outputs
    # Exactly one node created the first admin and showed its password.
    assert sum("Created the first admin" in out for out in outputs) == 1, outputs
    db = Database(fresh_url)
    try:
        assert schema_revision(db) == head_revision()
        with db.read() as conn:
            users = conn.execute(sa.select(t.users.c.name)).scalars().all()
            roles = conn.execute(sa.select(t.roles.c.name)).scalars().all()
            paths = conn.execute(sa.select(t.files.c.path)).scalars().all()
    finally:
        db.dispose()
    assert users == ["admin"]
    assert sorted(roles) == ["ADMIN", "ANALYST"]
    assert len(paths) == len(set(paths)), paths
