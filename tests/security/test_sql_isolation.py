"""F2, F14: workbook SQL reaches only its own inputs, twice over.

Wall 1 is the SQL check (engine/sql.py), tried through the HTTP API as eve
would. Wall 2 is the engine: SQL that got past the check (sent straight to
the engine here) still cannot open any file but the run's inputs in the
default isolation. A hypothesis test throws generated SQL at both.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamill.domain.status import JobKind
from datamill.engine.duckdb import DuckDBEngine
from datamill.engine.duckdb import workbooks as workbooks_module
from datamill.engine.sql import BoundQuery, bind_sheet_sql
from datamill.errors import InvalidSql, JobFailed
from tests.helpers import wait_terminal
from tests.integration.engine_fixtures import Area, make_area
from tests.security.conftest import Actors

SECRET = "SECRET-7f3a"
MINE = "mine"


def _workbook(path: str, sql: str) -> dict[str, Any]:
    return {
        "path": path,
        "sheets": [{"kind": "sql", "name": "out", "sql": sql, "keep": True}],
    }


# ---------------------------------------------------------------- wall 1 over HTTP


def _f2_attacks(data_root: Path) -> list[str]:
    victim = f"{data_root}/3/data.parquet"
    return [
        # The reproduction: the CTE counted as visible inside its own body.
        f'WITH "{victim}" AS (SELECT * FROM "{victim}") SELECT * FROM "{victim}"',
        # Forward reference: b read in a before b is defined.
        f'WITH a AS (SELECT * FROM "{victim}"), "{victim}" AS (SELECT 1) SELECT * FROM a',
        f"SELECT * FROM '{victim}'",
        "SELECT * FROM '../3/data.parquet'",
        "SELECT * FROM '../../data/*/data.parquet'",
        "SELECT filename FROM read_parquet('../**/*.parquet', filename = true)",
        "SELECT * FROM glob('**')",
        f"SELECT * FROM (SUMMARIZE '{victim}')",
        f"SELECT * FROM (PIVOT '{victim}' ON x USING count(*))",
        f"SELECT (SELECT count(*) FROM '{victim}') AS n",
        f"SELECT * FROM range(1), LATERAL read_parquet('{victim}')",
        f"SELECT read_blob('{victim}') AS b",
        f"SELECT * FROM query('SELECT * FROM ''{victim}''')",
        "SELECT getvariable('x') AS v",
        f'WITH RECURSIVE "{victim}" AS (SELECT 1 UNION ALL SELECT * FROM "{victim}") SELECT 1',
    ]


def test_f2_file_reads_are_refused_when_the_workbook_is_saved(actors: Actors) -> None:
    data_root = actors.node.settings.resolved_data_root
    for index, sql in enumerate(_f2_attacks(data_root)):
        response = actors.call(
            "eve", "POST", "/rest/workbook", _workbook(f"/Users/eve/w{index}.wbk", sql)
        )
        assert response.status_code == 400, (sql, response.text)
        assert "sheets[0].sql" in response.text, response.text


def test_f14_a_hand_written_variable_marker_is_a_4xx(actors: Actors) -> None:
    for sql in ("SELECT $__dmv_zzz", "SELECT $__dmv_x AS v"):
        document = _workbook("/Users/eve/m.wbk", sql)
        response = actors.call("eve", "POST", "/rest/workbook", document)
        assert response.status_code == 400, response.text
        assert "parameters like" in response.text
    declared = _workbook("/Users/eve/v.wbk", "SELECT $__dmv_x AS v")
    declared["variables"] = {"x": {"type": "VARCHAR", "default": "a"}}
    assert actors.call("eve", "POST", "/rest/workbook", declared).status_code == 400


def test_ordinary_ctes_still_work_end_to_end(running: Actors) -> None:
    sql = (
        "WITH a AS (SELECT 1 AS i), b AS (SELECT i + 1 AS i FROM a) "
        "SELECT * FROM b UNION ALL (WITH RECURSIVE r(i) AS (SELECT 3 UNION ALL "
        "SELECT i + 1 FROM r WHERE i < 4) SELECT * FROM r) ORDER BY i"
    )
    created = running.call("eve", "POST", "/rest/workbook", _workbook("/Users/eve/ok.wbk", sql))
    assert created.status_code == 200, created.text
    run = running.call("eve", "POST", "/api/job-execution/Users/eve/ok.wbk/trigger").json()
    done = wait_terminal(running.node, run["job-execution-id"])
    assert done.status.value == "COMPLETED", done
    job = created.json()["configuration-id"]
    csv = running.call("eve", "GET", f"/rest/data/workbook/{job}/out/download")
    assert csv.text.split()[1:] == ["2", "3", "4"]


# ---------------------------------------------------------------- wall 2: the engine


@pytest.fixture
def area(tmp_path: Path) -> Area:
    """Folders as the worker lays them out, with secrets planted around the run."""
    made = make_area(tmp_path, shared=True)
    table = pa.table({"s": [SECRET]})
    for folder in (made.data / "3", made.data / ".staging" / "2", made.sources, made.outside):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "data.parquet")
        (folder / "data.csv").write_text(f"s\n{SECRET}\n")
    pq.write_table(pa.table({"s": [MINE]}), made.data / "4.parquet")
    return made


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    """A warm engine as a work horse keeps it."""
    made = DuckDBEngine(keep_warm=True)
    yield made
    made.close()


def _unchecked(monkeypatch: pytest.MonkeyPatch, sql: str) -> None:
    """Wall 1 gone: the engine runs `sql` exactly as given."""

    def bind(_definition: Any, _given: Any) -> dict[str, BoundQuery]:
        return {"out": BoundQuery(sql=sql, params=(), reads=())}

    monkeypatch.setattr(workbooks_module, "bind_workbook", bind)


def _run(area: Area, engine: DuckDBEngine, **extra: Any) -> list[Any]:
    """Run the one-SQL-sheet workbook over data sheet `mine`; its output values."""
    definition = {
        "sheets": [
            {"kind": "data", "name": "mine", "source": {"importJob": "/x.imp"}},
            {"kind": "sql", "name": "out", "sql": "SELECT 1", "keep": True},
        ]
    }
    shutil.rmtree(area.staging, ignore_errors=True)
    request = area.request(
        JobKind.WORKBOOK, definition, inputs={"mine": str(area.data / "4.parquet")}, **extra
    )
    engine.run(request, lambda _: None)
    table = pq.read_table(area.staging / "out.parquet")
    return [v for column in table.columns for v in column.to_pylist()]


def _secret_paths(area: Area) -> list[str]:
    return [
        str(area.data / "3" / "data.parquet"),
        str(area.data / ".staging" / "2" / "data.csv"),
        str(area.sources / "data.csv"),
        str(area.outside / "data.parquet"),
        "../3/data.parquet",
        "data/3/data.parquet",
    ]


def test_the_engine_refuses_every_file_but_the_inputs_in_the_default_isolation(
    area: Area, engine: DuckDBEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own input, through the window: allowed.
    _unchecked(monkeypatch, "SELECT s FROM mine")
    assert _run(area, engine) == [MINE]
    for path in _secret_paths(area):
        for sql in (
            f"SELECT * FROM '{path}'",
            f"SELECT * FROM read_csv('{path}')",
            f"SELECT content FROM read_text('{path}')",
            f'WITH "{path}" AS (SELECT * FROM "{path}") SELECT * FROM "{path}"',
        ):
            _unchecked(monkeypatch, sql)
            with pytest.raises((InvalidSql, JobFailed)) as refused:
                _run(area, engine)
            assert SECRET not in refused.value.message
    for sql in (
        f"SELECT filename FROM read_parquet('{area.root}/**/*.parquet', filename = true)",
        f"SELECT file FROM glob('{area.root}/**')",
        f"SELECT * FROM (ATTACH '{area.outside}/x.db' AS x) ",
    ):
        _unchecked(monkeypatch, sql)
        with pytest.raises((InvalidSql, JobFailed)):
            _run(area, engine)
    # What the window shows is this run's own input and nothing else.
    _unchecked(monkeypatch, "SELECT count(*) FROM glob('../**')")
    with pytest.raises((InvalidSql, JobFailed)):
        _run(area, engine)
    database = engine.workbook_database
    assert database is not None and database.window is not None
    _unchecked(monkeypatch, f"SELECT s FROM read_parquet('{database.window.root}/**/*.parquet')")
    assert _run(area, engine) == [MINE]
    # Nothing was written outside the run's staging folder.
    assert not (area.outside / "x.db").exists()


# ---------------------------------------------------------------- property: generated SQL

_NAMES = st.sampled_from(["mine", "a", "b", "Mine", "r"])


def _path_names(area: Area) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            *_secret_paths(area),
            f"{area.data}/*/data.parquet",
            f"{area.root}/**/*.csv",
            "*.parquet",
            "../../**/data.parquet",
            "data.csv",
        ]
    )


def _relation(area: Area, depth: int) -> st.SearchStrategy[str]:
    path = _path_names(area)
    leaf = st.one_of(
        _NAMES,
        path.map(lambda p: f'"{p}"'),
        path.map(lambda p: f"'{p}'"),
        path.map(lambda p: f"read_parquet('{p}')"),
        path.map(lambda p: f"read_csv('{p}')"),
        path.map(lambda p: f"read_parquet('{p}', filename = true)"),
        path.map(lambda p: f"(SUMMARIZE '{p}')"),
        path.map(lambda p: f"(FROM '{p}')"),
        st.just("range(2)"),
        st.just("(VALUES (1), (2)) AS v(s)"),
    )
    if depth <= 0:
        return leaf
    return st.one_of(leaf, _query(area, depth - 1).map(lambda q: f"({q})"))


def _query(area: Area, depth: int) -> st.SearchStrategy[str]:
    relation = _relation(area, depth)
    names = st.one_of(_NAMES, _path_names(area).map(lambda p: f'"{p}"'))
    select = st.builds(lambda r: f"SELECT * FROM {r}", relation)
    joined = st.builds(lambda a, b: f"SELECT * FROM {a} AS x, {b} AS y", relation, relation)
    union = st.builds(
        lambda a, b: f"SELECT * FROM {a} UNION ALL SELECT * FROM {b}", relation, relation
    )
    scalar = st.builds(lambda r: f"SELECT (SELECT count(*) FROM {r}) AS n", relation)
    cte = st.builds(
        lambda n1, b1, n2, b2, r: (
            f"WITH {n1} AS (SELECT * FROM {b1}), {n2} AS (SELECT * FROM {b2}) SELECT * FROM {r}"
        ),
        names,
        relation,
        names,
        relation,
        relation,
    )
    recursive = st.builds(
        lambda n, r: (
            f"WITH RECURSIVE {n} AS (SELECT 1 AS s UNION SELECT * FROM {r}) SELECT * FROM {n}"
        ),
        names,
        relation,
    )
    return st.one_of(select, joined, union, scalar, cte, recursive)


def _values(table: pa.Table) -> str:
    return json.dumps(table.to_pylist(), default=str)


@pytest.fixture(scope="module")
def prop_area(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Area, DuckDBEngine]]:
    """One world for all examples: secrets planted, one warm engine."""
    root = tmp_path_factory.mktemp("prop")
    made = make_area(root, shared=True)
    table = pa.table({"s": [SECRET]})
    for folder in (made.data / "3", made.data / ".staging" / "2", made.sources, made.outside):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "data.parquet")
        (folder / "data.csv").write_text(f"s\n{SECRET}\n")
    pq.write_table(pa.table({"s": [MINE]}), made.data / "4.parquet")
    engine = DuckDBEngine(keep_warm=True)
    # Relative paths resolve against the working directory: the data root.
    here = os.getcwd()
    os.chdir(made.data)
    try:
        yield made, engine
    finally:
        os.chdir(here)
        engine.close()


def _generated(area: Area) -> st.SearchStrategy[str]:
    return _query(area, 2)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_sql_never_reads_a_file_that_is_not_an_input(
    prop_area: tuple[Area, DuckDBEngine], data: st.DataObject
) -> None:
    area, engine = prop_area
    sql = data.draw(_generated(area))
    try:
        bind_sheet_sql(
            sql, where="w", sheet="out", earlier=["mine"], later=[], declared=[], values={}
        )
    except InvalidSql:
        checked = False
    else:
        checked = True
    definition = {
        "sheets": [
            {"kind": "data", "name": "mine", "source": {"importJob": "/x.imp"}},
            {"kind": "sql", "name": "out", "sql": sql, "keep": True},
        ]
    }
    shutil.rmtree(area.staging, ignore_errors=True)
    request = area.request(
        JobKind.WORKBOOK, definition, inputs={"mine": str(area.data / "4.parquet")}
    )
    # Wall 1: what the check passes runs (or fails on its own terms) without a secret.
    _run_and_assert_no_secret(engine, request)
    if checked:
        return
    # Wall 2: what the check refused, sent straight to the engine, reads no secret either.
    with pytest.MonkeyPatch.context() as patch:
        _unchecked(patch, sql)
        shutil.rmtree(area.staging, ignore_errors=True)
        _run_and_assert_no_secret(engine, request)


def _run_and_assert_no_secret(engine: DuckDBEngine, request: Any) -> None:
    try:
        engine.run(request, lambda _: None)
    except (InvalidSql, JobFailed) as error:
        assert SECRET not in error.message
        return
    out = Path(request.staging_dir) / "out.parquet"
    assert SECRET not in _values(pq.read_table(out))


DEEP = {
    "brackets": "SELECT " + "(" * 3000 + "1" + ")" * 3000 + " AS x",
    "subqueries": "SELECT * FROM " + "(SELECT * FROM " * 500 + "(SELECT 1 AS x)" + ") t" * 501,
    "nots": "SELECT " + "NOT " * 5000 + "true AS x",
    "cases": "SELECT " + "CASE WHEN true THEN " * 2000 + "1" + " END" * 2000 + " AS x",
    "lists": "SELECT " + "[" * 3000 + "1" + "]" * 3000 + " AS x",
}


@pytest.mark.parametrize("shape", list(DEEP))
def test_deeply_nested_sql_is_a_clear_400(actors: Actors, shape: str) -> None:
    """Attack A5: nesting that exhausts the parser's recursion was an HTTP 500."""
    body = {
        "path": f"/Users/eve/deep_{shape}.wbk",
        "sheets": [{"kind": "sql", "name": "s", "sql": DEEP[shape], "keep": True}],
    }
    answer = actors.call("eve", "POST", "/rest/workbook", body)
    assert answer.status_code == 400, answer.text[:300]
    assert "nest" in answer.json()["reason"]


@pytest.mark.parametrize("sql", ["SELECT a ->", "SELECT x -> FROM t"])
def test_sql_that_crashes_the_parser_is_a_clear_400(actors: Actors, sql: str) -> None:
    # sqlglot raised TypeError on an arrow with nothing after it: the save was a 500.
    response = actors.call("eve", "POST", "/rest/workbook", _workbook("/Users/eve/p.wbk", sql))
    assert response.status_code == 400, response.text
    assert "sheets[0].sql: cannot parse the SQL" in response.text, response.text
