"""sql.py: variables become typed parameters, only read-only queries over earlier sheets pass."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from datamill.domain.definitions import Variable, WorkbookDefinition
from datamill.engine.sql import (
    BoundQuery,
    bind_sheet_sql,
    bind_workbook,
    check_workbook,
    coerce_variable,
    resolve_variables,
    substitute_variables,
)
from datamill.errors import InvalidInput, InvalidSql

DECLARED = ["region", "n", "day", "unset"]
VALUES: dict[str, Any] = {"region": "EU", "n": 3, "day": dt.date(2024, 1, 2)}


def bind(sql: str) -> BoundQuery:
    """Bind `sql` as sheet 2 ("me") after "orders" and "customers", before "summary"."""
    return bind_sheet_sql(
        sql,
        where="sheets[2].sql",
        sheet="me",
        earlier=["orders", "customers"],
        later=["summary"],
        declared=DECLARED,
        values=VALUES,
    )


def refused(sql: str) -> str:
    """The message of the InvalidSql that `sql` raises."""
    with pytest.raises(InvalidSql) as error:
        bind(sql)
    return error.value.message


def test_variables_become_positional_parameters_in_text_order() -> None:
    bound = bind("SELECT * FROM orders WHERE n > ${n} AND region = ${region} LIMIT ${n}")
    assert bound.sql == "SELECT * FROM orders WHERE n > ? AND region = ? LIMIT ?"
    assert bound.params == (3, "EU", 3)
    assert bound.reads == ("orders",)


def test_a_string_literal_that_is_exactly_a_variable_is_bound() -> None:
    bound = bind("SELECT * FROM orders WHERE day >= '${day}' AND note = 'x ${n}'")
    assert bound.sql == "SELECT * FROM orders WHERE day >= ? AND note = 'x ${n}'"
    assert bound.params == (dt.date(2024, 1, 2),)


def test_variables_inside_quotes_and_comments_stay_text() -> None:
    text, used = substitute_variables(
        "SELECT \"${n}\", $$ ${n} $$, E'\\' ${n}' -- ${n}\n/* ${n} */ FROM t", "w", DECLARED
    )
    assert used == []
    assert "${n}" in text


@pytest.mark.parametrize(
    ("sql", "used"),
    [
        # Quotes end where SQL says they end: doubled quotes and E-string escapes
        # stay inside, and a variable after the literal is still a variable.
        ("SELECT 'it''s ${n}' AS a, ${n} AS b", ["n"]),
        ("SELECT 'it''''s' || ${n}", ["n"]),
        ("SELECT '${n}''' AS a, ${n} AS b", ["n"]),
        ("SELECT E'a\\'' ${n}' AS a, ${n} AS b", ["n"]),
        ("SELECT e'\\\\' || ${n}", ["n"]),
        ('SELECT "a""${n}" AS x, ${n} AS b', ["n"]),
        ("SELECT 'x' || ${n} || 'y'", ["n"]),
        # `$tag$` right after a word is no dollar quote: what follows is SQL.
        ("SELECT a$b$ + ${n}", ["n"]),
        ("a$b$ + ${n}", ["n"]),  # the word before is the first character
        ("SELECT x_$b$ + ${n}", ["n"]),
        ("SELECT 1$b$ + ${n}", ["n"]),
        ("SELECT $b$ ${n} $b$ + ${n}", ["n"]),
        ("$b$ ${n} $b$", []),
        # An unterminated literal runs to the end.
        ("SELECT ${n}, 'open ${n}", ["n"]),
        ("SELECT ${n}, E'open \\", ["n"]),
    ],
)
def test_literals_end_where_sql_ends_them(sql: str, used: list[str]) -> None:
    text, found = substitute_variables(sql, "w", DECLARED)
    assert found == used
    # Outside the markers, the text is exactly what was written.
    assert re.sub(r" \$__dmv_n ", "${n}", text) == sql


def test_unknown_variable_is_named() -> None:
    assert refused("SELECT ${regoin} AS r") == (
        'sheets[2].sql: unknown variable "${regoin}" (declared: day, n, region, unset)'
    )


def test_variable_without_value_is_an_input_error() -> None:
    with pytest.raises(InvalidInput, match='variable "unset" has no value'):
        bind("SELECT ${unset} AS u")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM ordrs", 'sheets[2].sql: unknown sheet "ordrs"'),
        ("SELECT * FROM summary", 'sheet "summary" comes later'),
        ("SELECT * FROM me", 'sheet "me" cannot read itself'),
        ("SELECT * FROM read_csv('/etc/passwd')", "table function READ_CSV is not allowed"),
        ("SELECT * FROM read_parquet('x.parquet')", "table function READ_PARQUET"),
        ("SELECT * FROM glob('/*')", "table function GLOB"),
        ("SELECT * FROM query('SELECT 1')", "table function QUERY"),
        ("SELECT * FROM duckdb_settings()", "table function DUCKDB_SETTINGS"),
        ("SELECT * FROM '/etc/passwd'", '"/etc/passwd" is not a sheet; SQL sheets cannot read'),
        ("SELECT * FROM 'data.csv'", '"data.csv" is not a sheet'),
        ("ATTACH 'x.db' AS x", "not ATTACH"),
        ("COPY orders TO 'x.csv'", "not COPY"),
        ("INSTALL httpfs", "not INSTALL"),
        ("LOAD httpfs", "not LOAD"),
        ("SET threads = 1", "not SET"),
        ("PRAGMA database_list", "not PRAGMA"),
        ("CREATE TABLE t AS SELECT 1", "not CREATE"),
        ("DELETE FROM orders", "not DELETE"),
        ("SELECT * INTO t FROM orders", "INTO is not allowed"),
        ("SELECT getenv('HOME')", "function getenv is not allowed"),
        ("SELECT current_setting('threads')", "function current_setting"),
        ("SELECT read_text('/etc/passwd')", "function read_text"),
        ("SELECT read_blob('/etc/passwd')", "function read_blob"),
        ("SELECT * FROM main.orders", 'qualified table name "main.orders"'),
        ("SELECT * FROM db.main.orders", "qualified table name"),
        ("SELECT * FROM information_schema.tables", "qualified table name"),
        ("SELECT 1; SELECT 2", "exactly one query, found 2 statements"),
        ("SELECT * FROM orders WHERE id = ?", 'parameters like "?"'),
        ("SELECT * FROM orders WHERE id = $1", 'parameters like "?"'),
        ("SELECT * FROM orders WHERE", "cannot parse the SQL"),
        # F2: a CTE is not visible inside its own body, nor before its definition.
        (
            'WITH "/data/3/data.parquet" AS (SELECT * FROM "/data/3/data.parquet") '
            'SELECT * FROM "/data/3/data.parquet"',
            '"/data/3/data.parquet" is not a sheet; SQL sheets cannot read files',
        ),
        ('WITH "x.csv" AS (SELECT 1) SELECT 1', 'CTE name "x.csv" is not allowed'),
        ('WITH "a b" AS (SELECT 1) SELECT 1', 'CTE name "a b" is not allowed'),
        ("WITH a AS (SELECT * FROM a) SELECT * FROM a", 'CTE "a" is not visible here'),
        ("WITH RECURSIVE a AS (SELECT * FROM a) SELECT * FROM a", 'CTE "a" is not visible'),
        (
            "WITH RECURSIVE a AS (SELECT * FROM a UNION SELECT 1) SELECT * FROM a",
            'CTE "a" is not visible',
        ),
        ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", 'CTE "b" is not'),
        ("SELECT * FROM (WITH b AS (SELECT 1) SELECT 1), b", 'unknown sheet "b"'),
        ("SELECT * FROM '../../3/data.parquet'", '"../../3/data.parquet" is not a sheet'),
        ("SELECT * FROM '*/data.parquet'", '"*/data.parquet" is not a sheet'),
        ('SELECT * FROM "C:\\x"', "is not a sheet"),
        ('SELECT * FROM "orders?"', '"orders?" is not a sheet'),
        ('SELECT * FROM ""', '"" is not a sheet'),
        ("SELECT * FROM orders JOIN (FROM 'a.csv') USING (id)", '"a.csv" is not a sheet'),
        ("SELECT * FROM orders WHERE EXISTS (FROM 'a.csv')", '"a.csv" is not a sheet'),
        ("SELECT * FROM (PIVOT 'a.csv' ON a USING count(*))", '"a.csv" is not a sheet'),
        ("SELECT * FROM (SUMMARIZE 'a.csv')", "SUMMARIZE reads earlier sheets only"),
        ("SELECT * FROM (DESCRIBE 'a.csv')", '"a.csv" is not a sheet'),
        ("SELECT * FROM orders, LATERAL read_csv('x')", "table function READ_CSV"),
        ("SELECT * FROM orders, LATERAL json_each('x')", "table function JSON_EACH"),
        ("SELECT * FROM read_parquet('**', filename = true)", "table function READ_PARQUET"),
        ("SELECT getvariable('x')", "function getvariable"),
        # A file reader that sqlglot knows by type (not Anonymous), as a value.
        ("SELECT read_csv('/etc/passwd')", "function read_csv is not allowed"),
        ("SELECT n FROM orders WHERE n IN (SELECT read_parquet('x'))", "function read_parquet"),
        ("SELECT * FROM orders WHERE id = $__dmv_zzz", 'parameters like "?"'),
        ("SELECT $__dmv_n", 'parameters like "?"'),
        ("SELECT 1 /* open", "cannot parse the SQL"),
    ],
)
def test_refused_sql(sql: str, message: str) -> None:
    text = refused(sql)
    assert text.startswith("sheets[2].sql: ")
    assert message in text


@pytest.mark.parametrize(
    "sql",
    [
        "FROM orders",
        "SELECT * FROM orders UNION ALL SELECT * FROM customers",
        "WITH eu AS (SELECT * FROM orders) SELECT * FROM eu JOIN customers USING (id)",
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 3) "
        "SELECT * FROM r",
        "SELECT * FROM orders WHERE id IN (SELECT id FROM customers)",
        'SELECT * FROM "Orders"',
        "SELECT * FROM range(3)",
        "SELECT unnest([1, 2]) AS x",
        "SELECT list_transform([1, 2], x -> x + 1) AS l",
        "WITH a AS (SELECT 1 AS i), b AS (SELECT * FROM a) SELECT * FROM b, a",
        "WITH A AS (SELECT 1) SELECT * FROM a",
        "WITH orders AS (SELECT 2 AS id) SELECT * FROM orders",
        "WITH a AS (WITH b AS (SELECT 1) SELECT * FROM b) SELECT * FROM a",
        "WITH a AS (SELECT 1) SELECT * FROM (SELECT * FROM a) AS s WHERE EXISTS (FROM a)",
        "WITH a AS (SELECT 1) SELECT * FROM a UNION ALL SELECT * FROM a",
        "SELECT * FROM orders, LATERAL (SELECT 1)",
        "SELECT * FROM (SUMMARIZE orders)",
        "SELECT * FROM (PIVOT orders ON region USING count(*))",
        "SELECT * FROM (VALUES (1), (2)) AS v(a)",
        "TABLE customers",
    ],
)
def test_read_only_queries_over_earlier_sheets_pass(sql: str) -> None:
    assert bind(sql).sql


def test_cte_names_are_scoped() -> None:
    # A CTE of a subquery is not visible outside it.
    message = refused("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) AS s, x")
    assert 'unknown sheet "x"' in message


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("VARCHAR", "x' OR 1=1; --", "x' OR 1=1; --"),
        ("VARCHAR", 5, "5"),
        ("VARCHAR", True, "true"),
        ("BIGINT", "42", 42),
        ("BIGINT", " -7 ", -7),
        ("BIGINT", 3.0, 3),
        ("DOUBLE", "2.5", 2.5),
        ("DOUBLE", 2, 2.0),
        ("BOOLEAN", "yes", True),
        ("BOOLEAN", "0", False),
        ("DATE", "2024-02-29", dt.date(2024, 2, 29)),
        ("TIMESTAMP", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5)),
        ("TIMESTAMP", "2024-01-02T03:04:05+02:00", dt.datetime(2024, 1, 2, 1, 4, 5)),
        # The edges and the native JSON values (mutation testing found them unchecked).
        ("VARCHAR", False, "false"),
        ("BIGINT", 7, 7),
        ("BIGINT", -(2**63), -(2**63)),
        ("BIGINT", 2**63 - 1, 2**63 - 1),
        ("BOOLEAN", 1, True),
        ("BOOLEAN", " FALSE ", False),
        ("DATE", dt.date(2024, 3, 1), dt.date(2024, 3, 1)),
        ("TIMESTAMP", dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 1, 2, 3, 4, 5)),
        (
            "TIMESTAMP",
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            dt.datetime(2024, 1, 2, 8, 4, 5),
        ),
    ],
)
def test_values_are_coerced_to_the_declared_type(type_: str, value: Any, expected: Any) -> None:
    coerced = coerce_variable("v", type_, value)
    assert coerced == expected and type(coerced) is type(expected)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("BIGINT", "1; DROP"),
        ("BIGINT", "1.5"),
        ("BIGINT", True),
        ("BIGINT", 2**63),
        ("BIGINT", -(2**63) - 1),
        ("BOOLEAN", 2.5),
        ("DATE", ""),
        ("TIMESTAMP", 5),
        ("DOUBLE", "nan"),
        ("DOUBLE", "abc"),
        ("BOOLEAN", "maybe"),
        ("DATE", "2024-02-30"),
        ("DATE", "yesterday"),
        ("TIMESTAMP", "noon"),
        ("VARCHAR", [1]),
    ],
)
def test_values_that_do_not_fit_are_refused_by_name(type_: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=f'variable "v": .* is not a valid {type_}'):
        coerce_variable("v", type_, value)


def test_given_values_override_defaults_and_unknown_ones_are_ignored() -> None:
    declared = {
        "a": Variable(type="BIGINT", default=1),
        "b": Variable(type="VARCHAR", default="x"),
        "c": Variable(type="DATE"),
    }
    assert resolve_variables(declared, {"a": "2", "zzz": "ignored"}) == {"a": 2, "b": "x"}


def test_bind_workbook_checks_every_sql_sheet_with_its_index() -> None:
    definition = WorkbookDefinition.model_validate(
        {
            "variables": {"r": {"type": "VARCHAR", "default": "EU"}},
            "sheets": [
                {"kind": "data", "name": "orders", "source": {"importJob": "/o.imp"}},
                {"kind": "sql", "name": "eu", "sql": "SELECT * FROM orders WHERE r = ${r}"},
                {"kind": "sql", "name": "bad", "sql": "SELECT * FROM ordrs", "keep": True},
            ],
        }
    )
    with pytest.raises(InvalidSql, match=r'^sheets\[2\]\.sql: unknown sheet "ordrs"$'):
        bind_workbook(definition, {})


def test_check_workbook_accepts_variables_given_only_at_trigger_time() -> None:
    sheets = [
        {"kind": "data", "name": "orders", "source": {"importJob": "/o.imp"}},
        {"kind": "sql", "name": "eu", "sql": "SELECT * FROM orders WHERE d > ${d}", "keep": True},
    ]
    definition = WorkbookDefinition.model_validate(
        {"variables": {"d": {"type": "DATE"}}, "sheets": sheets}
    )
    check_workbook(definition)
    with pytest.raises(InvalidInput, match='variable "d" has no value'):
        bind_workbook(definition, {})
    broken = definition.model_copy(update={"variables": {"d": Variable(type="DATE", default="x")}})
    with pytest.raises(InvalidInput, match='variable "d"'):
        check_workbook(broken)


def test_repeated_binding_follows_the_variables_and_the_sql() -> None:
    # Bound workbooks are remembered per process: never a stale answer.
    def workbook(sql: str) -> WorkbookDefinition:
        return WorkbookDefinition.model_validate(
            {
                "variables": {"d": {"type": "DATE", "default": "2024-01-01"}},
                "sheets": [
                    {"kind": "data", "name": "orders", "source": {"importJob": "/o.imp"}},
                    {"kind": "sql", "name": "out", "sql": sql, "keep": True},
                ],
            }
        )

    first = workbook("SELECT * FROM orders WHERE day > ${d}")
    for _ in range(2):
        assert bind_workbook(first, {})["out"].params == (dt.date(2024, 1, 1),)
        assert bind_workbook(first, {"d": "2025-02-03"})["out"].params == (dt.date(2025, 2, 3),)
        assert bind_workbook(first, {"d": dt.date(2025, 2, 4)})["out"].params == (
            dt.date(2025, 2, 4),
        )
    second = workbook("SELECT * FROM orders WHERE day < ${d}")
    assert "<" in bind_workbook(second, {})["out"].sql
    assert ">" in bind_workbook(first, {})["out"].sql
    for _ in range(2):
        with pytest.raises(InvalidInput, match='variable "d"'):
            bind_workbook(first, {"d": "not a date"})
