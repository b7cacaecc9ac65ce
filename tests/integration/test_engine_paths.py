"""Import sources must stay inside the source roots, whatever the path tries."""

from __future__ import annotations

import sqlite3

import pytest

from datamill.domain.status import JobKind
from datamill.engine.base import RunRequest
from datamill.engine.duckdb import DuckDBEngine
from datamill.errors import InvalidDefinition, InvalidInput, PathNotAllowed
from tests.integration.engine_fixtures import Area, imported, run_import

CSV = "a,b\n1,2\n"


@pytest.fixture
def secret(area: Area) -> str:
    """A CSV file outside every root."""
    path = area.outside / "secret.csv"
    path.write_text(CSV)
    return str(path)


def test_path_outside_the_roots_is_refused(area: Area, secret: str) -> None:
    with pytest.raises(PathNotAllowed, match="outside the allowed folders"):
        run_import(area, {"kind": "csv", "path": secret})


def test_dotdot_escape_is_refused(area: Area, secret: str) -> None:
    with pytest.raises(PathNotAllowed):
        run_import(area, {"kind": "csv", "path": f"{area.sources}/../outside/secret.csv"})


def test_symlink_escape_is_refused(area: Area, secret: str) -> None:
    (area.sources / "innocent.csv").symlink_to(secret)
    with pytest.raises(PathNotAllowed):
        run_import(area, {"kind": "csv", "path": str(area.sources / "innocent.csv")})


def test_glob_escape_is_refused(area: Area, secret: str) -> None:
    (area.sources / "ok.csv").write_text(CSV)
    (area.sources / "linked.csv").symlink_to(secret)
    with pytest.raises(PathNotAllowed, match=r"linked\.csv"):
        run_import(area, {"kind": "csv", "path": str(area.sources / "*.csv")})
    with pytest.raises(PathNotAllowed):
        run_import(area, {"kind": "csv", "path": f"{area.sources}/../outside/*.csv"})
    (area.sources / "dir").mkdir()
    with pytest.raises(PathNotAllowed):
        run_import(area, {"kind": "csv", "path": f"{area.sources}/*/../../outside/*.csv"})


def test_symlink_inside_the_root_is_fine(area: Area) -> None:
    (area.sources / "real.csv").write_text(CSV)
    (area.sources / "alias.csv").symlink_to(area.sources / "real.csv")
    run_import(area, {"kind": "csv", "path": str(area.sources / "alias.csv")})
    assert imported(area) == [{"a": 1, "b": 2}]


def test_missing_file_is_a_clear_input_error(area: Area) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        run_import(area, {"kind": "csv", "path": str(area.sources / "nope.csv")})
    with pytest.raises(InvalidInput, match="matches no file"):
        run_import(area, {"kind": "csv", "path": str(area.sources / "nope-*.csv")})


def test_sqlite_source_outside_the_roots_is_refused(area: Area) -> None:
    db = area.outside / "x.db"
    sqlite3.connect(db).close()
    source = {"kind": "database", "url": f"sqlite:///{db}", "table": "t"}
    with pytest.raises(PathNotAllowed):
        run_import(area, source)


def test_store_database_as_source_is_refused(area: Area) -> None:
    db = area.sources / "store.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (password_hash TEXT)")
    definition = {"source": {"kind": "database", "url": f"sqlite:///{db}", "table": "users"}}
    request = area.request(JobKind.IMPORT, definition, forbidden_database_urls=(f"sqlite:///{db}",))
    with pytest.raises(PathNotAllowed, match="Datamill's own database"):
        DuckDBEngine().run(request, lambda _: None)


def test_unsupported_database_is_refused(area: Area) -> None:
    with pytest.raises(InvalidDefinition, match="only sqlite and postgresql"):
        run_import(area, {"kind": "database", "url": "mysql://u:p@h/db", "table": "t"})


def test_invalid_definition_is_refused(area: Area) -> None:
    request: RunRequest = area.request(JobKind.IMPORT, {"source": {"kind": "xml", "path": "/x"}})
    with pytest.raises(InvalidDefinition):
        DuckDBEngine().run(request, lambda _: None)
