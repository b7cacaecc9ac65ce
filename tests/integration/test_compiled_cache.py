"""Engines share compiled statements only with alike dialects (store/compiled_cache.py)."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from pathlib import Path

import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.store import tables as t
from datamill.store.compiled_cache import SharedCompiledCache, signature
from datamill.store.db import Database
from datamill.store.store import Store

# A datetime passes through bind and result processors (a string on SQLite).
_ADD = sa.insert(t.users).values(
    name=sa.bindparam("name"),
    password_hash="x",
    created_at=sa.bindparam("at"),
)
_GET = sa.select(t.users.c.name, t.users.c.created_at, t.users.c.session_epoch).where(
    t.users.c.name == sa.bindparam("name")
)


def test_a_second_store_runs_the_first_stores_compiled_statements_with_the_same_results(
    node: Node, database_url: str, tmp_path: Path
) -> None:
    # Stores as a node builds them: their engines' event listeners included.
    first = node.store.db
    second = Store(database_url, str(tmp_path / "data"))
    at = dt.datetime(2026, 12, 2, 18, 30, 15, 123456)
    name = f"u{uuid.uuid4().hex[:8]}"
    try:
        with first.write() as conn:
            conn.execute(_ADD, {"name": name, "at": at})
        with first.read() as conn:
            assert conn.execute(_GET, {"name": name}).one() == (name, at, 0)
        assert first.engine.dialect is not second.db.engine.dialect
        with second.db.read() as conn:
            result = conn.execute(_GET, {"name": name})
            # Found in the first engine's compilation, not compiled again.
            assert result.context.cache_hit == second.db.engine.dialect.CACHE_HIT
            assert result.one() == (name, at, 0)
    finally:
        second.close()


def test_dialects_that_differ_in_any_setting_share_nothing(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.read() as conn:
            conn.execute(sa.select(1))
        dialect = db.engine.dialect
        alike = copy.copy(dialect)
        assert signature(alike) == signature(dialect)
        older = copy.copy(dialect)
        older.server_version_info = (1, 0)
        assert signature(older) != signature(dialect)
        unknown = copy.copy(dialect)
        vars(unknown)["some_new_setting"] = object()  # a kind of setting not understood
        assert signature(unknown) != signature(dialect)
        assert signature(unknown) != signature(copy.copy(unknown))
        cache = SharedCompiledCache()
        key = ("statement", (), False, False)
        cache[(dialect, *key)] = "compiled"
        assert cache.get((alike, *key)) == "compiled"
        assert cache.get((older, *key)) is None
        assert cache.get((unknown, *key)) is None
    finally:
        db.dispose()
