"""sql.py: the exact answer a user gets for SQL the sandbox refuses, and what a query reads."""

from __future__ import annotations

import re

import pytest

from datamill.domain.definitions import WorkbookDefinition
from datamill.engine.sql import check_workbook, substitute_variables
from datamill.errors import InvalidInput, InvalidSql
from tests.unit.test_sql import bind, refused

_CTE_SCOPE = (
    "a CTE sees only the CTEs before it"
    " (and itself only in the recursive part of WITH RECURSIVE ... UNION)"
)


@pytest.mark.parametrize(
    ("sql", "answer"),
    [
        # sqlglot's node class is named by the SQL keyword, with where it stopped.
        (
            "SELECT * FROM orders WHERE",
            "cannot parse the SQL: Required keyword: 'this' missing for WHERE (line 1, column 26)",
        ),
        (
            "SELECT ) FROM",
            "cannot parse the SQL: Invalid expression / Unexpected token (line 1, column 8)",
        ),
        # Table functions by the name the user wrote in DuckDB, not sqlglot's generic one.
        (
            "SELECT * FROM epoch_ms(1)",
            "table function EPOCH_MS is not allowed; read earlier sheets",
        ),
        (
            "SELECT * FROM orders, LATERAL strptime('x', 'y')",
            "table function STRPTIME is not allowed; read earlier sheets",
        ),
        (
            "SELECT * FROM orders, LATERAL read_csv('x')",
            "table function READ_CSV is not allowed; read earlier sheets",
        ),
        (
            "SELECT * FROM main.orders",
            'qualified table name "main.orders" is not allowed; refer to sheets by name',
        ),
        # Another catalog's default schema: the catalog without a schema (DuckDB's a..b).
        (
            "SELECT * FROM system..duckdb_settings",
            'qualified table name "system..duckdb_settings" is not allowed;'
            " refer to sheets by name",
        ),
        (
            "WITH a AS (SELECT * FROM a) SELECT * FROM a",
            f'CTE "a" is not visible here; {_CTE_SCOPE}',
        ),
    ],
)
def test_refusals_say_exactly_what_is_wrong(sql: str, answer: str) -> None:
    assert refused(sql) == f"sheets[2].sql: {answer}"


def test_sql_that_crashes_the_parser_cannot_be_parsed() -> None:
    # sqlglot raises TypeError here, not ParseError: still the user's SQL (a 400).
    assert refused("SELECT a ->") == "sheets[2].sql: cannot parse the SQL"


def test_a_query_reads_each_earlier_sheet_once_and_nothing_else() -> None:
    # The reads are the sheets a run must load first: no CTE, no table function,
    # no sheet twice.
    joined = bind("SELECT * FROM orders o JOIN orders p ON true JOIN customers c ON true")
    assert joined.reads == ("orders", "customers")
    assert bind("WITH a AS (SELECT 1) SELECT * FROM a, range(3), orders").reads == ("orders",)
    assert bind("WITH a AS (SELECT 1) SELECT * FROM a").reads == ()


def test_the_next_sheet_comes_later_and_is_named_so() -> None:
    definition = WorkbookDefinition.model_validate(
        {
            "sheets": [
                {"kind": "data", "name": "orders", "source": {"importJob": "/o.imp"}},
                {"kind": "sql", "name": "first", "sql": "SELECT * FROM second", "keep": True},
                {"kind": "sql", "name": "second", "sql": "SELECT * FROM orders", "keep": True},
            ],
        }
    )
    with pytest.raises(InvalidSql) as error:
        check_workbook(definition)
    assert error.value.message == (
        'sheets[1].sql: sheet "second" comes later; a sheet reads earlier sheets only'
    )


def _nest(depth: int) -> str:
    return "(" * depth + "1" + ")" * depth


def test_brackets_may_nest_200_deep_wherever_the_nest_stands() -> None:
    # Counted across the whole text: brackets closed before the nest, and
    # letters (an X) around it, change nothing.
    deepest = bind(f"SELECT 'X' AS x, (1) AS a, {_nest(200)} AS b")
    assert deepest.sql == f"SELECT 'X' AS x, (1) AS a, {_nest(200)} AS b"
    assert refused(f"SELECT 'XX' AS x, (1) AS a, {_nest(201)} AS b") == (
        "sheets[2].sql: brackets nest 201 deep; at most 200 levels are allowed"
    )


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        # Line comments end at their own line's end, block comments at the first */
        # after their /*; the last comment may run to the end.
        ("SELECT ${n} -- a ${n}\n, ${n} -- b ${n}\n, 1\n", 2),
        ("SELECT ${n} -- a ${n}", 1),
        ("SELECT /*/ ${n} */ ${n}", 1),
        ("SELECT /* a ${n} */ ${n} /* b ${n} */ ${n}", 2),
        ("SELECT /**/ ${n} /* ${n} */ ${n}", 2),
        ("SELECT 2 /* a */* ${n}", 1),
        ("SELECT 1 + /* a */${n}", 1),
        # A dollar-quoted string ends at its own tag's next use, or runs to the end.
        ("SELECT $b$ x $b$ || ${n} || $b$ y $b$", 1),
        ("SELECT ${n}, $b$ open ${n}", 1),
        # Quoted identifiers: doubled quotes inside, and a backslash is a character.
        ('SELECT """a" AS x, ${n}', 1),
        ('SELECT "a\\" AS x, ${n}', 1),
        # A plain string takes no backslash escape; X'..' is no E-string; e'..' is one.
        ("SELECT 'a\\' AS x, ${n}", 1),
        ("SELECT X'\\' || ${n}", 1),
        ("SELECT e'a\\'' ${n}' AS a, ${n} AS b", 1),
        ("SELECT e'\\'' || ${n}", 1),
    ],
)
def test_comments_and_quotes_end_where_sql_ends_them(sql: str, count: int) -> None:
    text, used = substitute_variables(sql, "w", ["n"])
    assert used == ["n"] * count
    # Outside the markers, the text is exactly what was written.
    assert re.sub(r" \$__dmv_n ", "${n}", text) == sql


def test_an_unknown_variable_where_none_is_declared() -> None:
    with pytest.raises(InvalidSql) as error:
        substitute_variables("SELECT ${x}", "w", [])
    assert error.value.message == 'w: unknown variable "${x}" (declared: none)'


def test_a_variable_without_value_says_how_to_give_one() -> None:
    with pytest.raises(InvalidInput) as error:
        bind("SELECT ${unset} AS u")
    assert error.value.message == (
        'sheets[2].sql: variable "unset" has no value; give one when triggering or set a default'
    )


def test_comments_do_not_reach_the_engine() -> None:
    assert bind("SELECT 1 AS x /* note */ -- end").sql == "SELECT 1 AS x"
