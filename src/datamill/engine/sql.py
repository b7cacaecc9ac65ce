"""The one place that reads user SQL: parse, check and bind the SQL of workbook sheets.

The contract of a SQL sheet is one read-only query that sqlglot can parse in
the DuckDB dialect and transpile. What runs is sqlglot's regenerated SQL,
never the text the user sent, so the query that was checked is the query that
executes, and a sheet stays portable to any engine sqlglot can target (Spark
SQL, say). SQL that sqlglot cannot represent is refused, not passed through.

Variables (`${name}`) become positional `?` parameters bound to typed values;
their values are never pasted into SQL text.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError

from datamill.domain.definitions import SqlSheet, Variable, WorkbookDefinition
from datamill.errors import InvalidInput, InvalidSql

DIALECT = "duckdb"
_MARKER = "__dmv_"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE_RE = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_CLASS_RE = re.compile(r"<class 'sqlglot\.(?:\w+\.)*(\w+)'>")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})

# Functions that reach outside the query's own data: files, settings, the
# environment, other databases, or SQL given as text. DuckDB's lock-down
# stops the file ones as well; this gives a clear message first. The last
# ones exist on Spark only (engine/spark): calling Java methods, naming files.
_DENIED_FUNCTION_NAMES = """
    getenv current_setting getvariable glob query query_table sniff_csv checkpoint
    force_checkpoint which_secret load_aws_credentials json_execute_serialized_sql
    json_serialize_sql json_deserialize_sql json_serialize_plan sql_auto_complete
    enable_logging disable_logging truncate_duckdb_logs
    reflect java_method try_reflect input_file_name input_file_block_start
    input_file_block_length
"""
_DENIED_FUNCTION_PREFIXES = """
    read_ parquet_ duckdb_ pragma_ sqlite_ postgres_ mysql_ iceberg_ delta_ ducklake_
    http s3_ azure_ arrow_scan
"""
_DENIED_FUNCTIONS = frozenset(_DENIED_FUNCTION_NAMES.split())
_DENIED_PREFIXES = tuple(_DENIED_FUNCTION_PREFIXES.split())
# The only table functions a sheet may call: they generate rows, read nothing.
_ALLOWED_TABLE_FUNCTIONS = (exp.GenerateSeries, exp.Unnest)


@dataclasses.dataclass(frozen=True, slots=True)
class BoundQuery:
    """A checked sheet query: DuckDB SQL with `?` parameters and their values."""

    sql: str
    params: tuple[Any, ...]
    reads: tuple[str, ...]


# ---------------------------------------------------------------- variables


def coerce_variable(name: str, type_: str, value: Any) -> Any:
    """The value as the Python type DuckDB binds to `type_`, else InvalidInput."""
    try:
        coerced = _coerce(type_, value)
    except (ValueError, TypeError, OverflowError):
        coerced = None
    if coerced is None:
        raise InvalidInput(f'variable "{name}": {value!r} is not a valid {type_}')
    return coerced


def _coerce(type_: str, value: Any) -> Any:
    text = value.strip() if isinstance(value, str) else None
    if type_ == "VARCHAR":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, int | float) else None
    if type_ == "BIGINT":
        if isinstance(value, bool):
            return None
        number = value if isinstance(value, int) else None
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        if text is not None and _INT_RE.match(text):
            number = int(text)
        return number if number is not None and _BIGINT_MIN <= number <= _BIGINT_MAX else None
    if type_ == "DOUBLE":
        if isinstance(value, bool):
            return None
        number_f = float(value) if isinstance(value, int | float) or text else None
        return number_f if number_f is not None and math.isfinite(number_f) else None
    if type_ == "BOOLEAN":
        if isinstance(value, bool):
            return value
        key = str(value).strip().lower() if isinstance(value, str | int) else ""
        return True if key in _TRUE else False if key in _FALSE else None
    if type_ == "DATE":
        if isinstance(value, dt.datetime):
            return None
        if isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(text) if text else None
    if type_ == "TIMESTAMP":
        stamp = value if isinstance(value, dt.datetime) else None
        if text:
            stamp = dt.datetime.fromisoformat(text)
        if stamp is not None and stamp.tzinfo is not None:
            # DuckDB TIMESTAMP has no zone: keep the instant, in UTC.
            stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
        return stamp
    raise ValueError(f"unknown variable type {type_}")


def resolve_variables(declared: Mapping[str, Variable], given: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values of the declared variables; given values override defaults.

    Variables without any value are left out; using one is an error. Values
    given for variables the workbook does not declare are ignored, since one
    set of variables may serve a whole plan of workbooks.
    """
    values: dict[str, Any] = {}
    for name, variable in declared.items():
        value = given.get(name)
        if value is None:
            value = variable.default
        if value is not None:
            values[name] = coerce_variable(name, variable.type, value)
    return values


# ---------------------------------------------------------------- text substitution


def substitute_variables(sql: str, where: str, declared: Sequence[str]) -> tuple[str, list[str]]:
    """SQL with each `${name}` outside quotes (or as a whole string literal) made a marker.

    Returns the new text and the variable names used. Text inside strings,
    quoted identifiers, comments and dollar-quoted strings is left alone.
    """
    out: list[str] = []
    used: list[str] = []
    i, n = 0, len(sql)

    def marker(name: str) -> str:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InvalidSql(f'{where}: unknown variable "${{{name}}}" (declared: {known})')
        used.append(name)
        # Spaces keep the marker a token of its own whatever surrounds it.
        return f" ${_MARKER}{name} "

    while i < n:
        ch = sql[i]
        if ch == "'" or (ch in "eE" and sql[i + 1 : i + 2] == "'" and not _word_before(sql, i)):
            start = i + 1 if ch == "'" else i + 2
            end = _string_end(sql, start, backslash=ch != "'")
            literal = sql[start : end - 1]
            whole = _VARIABLE_RE.fullmatch(literal)
            out.append(marker(whole.group(1)) if whole and ch == "'" else sql[i:end])
            i = end
        elif ch == '"':
            end = _string_end(sql, i + 1, backslash=False, quote='"')
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif ch == "$":
            variable = _VARIABLE_RE.match(sql, i)
            tag = _DOLLAR_TAG_RE.match(sql, i)
            if variable:
                out.append(marker(variable.group(1)))
                i = variable.end()
            elif tag and not _word_before(sql, i):
                close = sql.find(tag.group(0), tag.end())
                end = n if close < 0 else close + len(tag.group(0))
                out.append(sql[i:end])
                i = end
            else:
                out.append(ch)
                i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), used


def _word_before(sql: str, i: int) -> bool:
    return i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")


def _string_end(sql: str, start: int, *, backslash: bool, quote: str = "'") -> int:
    """Index just past the quote closing a literal that starts at `start`."""
    i, n = start, len(sql)
    while i < n:
        if backslash and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if sql[i + 1 : i + 2] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


# ---------------------------------------------------------------- checking


def _statement_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return type(node).__name__.upper()


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _denied(name: str) -> bool:
    return name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES)


def _cte_name(cte: exp.CTE) -> str:
    return str(cte.alias).lower()


def _is_recursive_reference(cte: exp.CTE, table: exp.Table) -> bool:
    """Whether `table` is the recursive term's reference to `cte` of a WITH RECURSIVE.

    Only `anchor UNION [ALL] recursive-term`, with the reference inside the
    recursive term, is a recursive reference; anywhere else (a body that is
    not a UNION, or the anchor) DuckDB would not bind the name to the CTE.
    """
    body = cte.this
    if not isinstance(body, exp.Union):
        return False
    node: exp.Expr | None = table
    while node is not None and node is not body:
        if node is body.expression:
            return True
        node = node.parent
    return False


def _names_cte(table: exp.Table, key: str) -> bool:
    """Whether `key` at `table` names a CTE that DuckDB binds it to.

    Scope rules, the strict reading of what DuckDB does: a WITH's CTEs are
    visible in the query that holds it, each CTE's body sees only the CTEs
    defined before it in the same WITH (never itself, never a later one), and
    a CTE of a nested query is invisible outside it. The one exception is the
    recursive term of a WITH RECURSIVE, which sees its own CTE. Whatever this
    does not call a CTE must be an earlier sheet, else the query is refused,
    so being stricter than DuckDB only ever refuses a query.
    """
    child: exp.Expr = table
    parent = table.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            # Inside the body of one of this WITH's CTEs: only earlier ones.
            index = next((i for i, cte in enumerate(ctes) if cte is child), -1)
            if any(_cte_name(cte) == key for cte in ctes[: max(index, 0)]):
                return True
            own = ctes[index] if index >= 0 else None
            if (
                own is not None
                and parent.args.get("recursive")
                and _cte_name(own) == key
                and _is_recursive_reference(own, table)
            ):
                return True
        else:
            with_ = parent.args.get("with_") or parent.args.get("with")
            if (
                isinstance(with_, exp.With)
                and child is not with_
                and any(_cte_name(cte) == key for cte in with_.expressions)
            ):
                return True
        child, parent = parent, parent.parent
    return False


def _defined_around(table: exp.Table, key: str) -> bool:
    """Whether an enclosing WITH defines `key` at all (for a clearer message)."""
    return any(
        _cte_name(cte) == key for with_ in _ancestors(table, exp.With) for cte in with_.expressions
    )


def _ancestors(node: exp.Expr, kind: type[exp.With]) -> list[exp.With]:
    found = []
    parent = node.parent
    while parent is not None:
        if isinstance(parent, kind):
            found.append(parent)
        parent = parent.parent
    return found


def _check_cte(cte: exp.CTE, where: str) -> None:
    name = str(cte.alias)
    if not _NAME_RE.match(name):
        # A CTE named like a file would read that file wherever DuckDB does
        # not see the CTE (F2): names are plain identifiers only.
        raise InvalidSql(
            f'{where}: CTE name "{name}" is not allowed; use a plain name (letters, digits, _)'
        )


def _parse_one(sql: str, where: str) -> exp.Expr:
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as error:
        first = error.errors[0] if error.errors else {}
        detail = first.get("description") or str(error).splitlines()[0]
        # sqlglot names its node classes; a user knows the SQL keyword.
        detail = _CLASS_RE.sub(lambda m: m.group(1).upper(), str(detail))
        line, col = first.get("line"), first.get("col")
        at = f" (line {line}, column {col})" if line else ""
        raise InvalidSql(f"{where}: cannot parse the SQL: {detail}{at}") from None
    except TokenError as error:
        raise InvalidSql(f"{where}: cannot parse the SQL: {error}") from None
    except RecursionError:
        raise  # bind_sheet_sql answers it: nested too deeply
    except Exception:
        # sqlglot's parser itself fails on some malformed SQL (a TypeError for an
        # arrow with nothing after it, `SELECT a ->`): still the user's SQL, not a 500.
        raise InvalidSql(f"{where}: cannot parse the SQL") from None
    if len(statements) != 1:
        raise InvalidSql(f"{where}: give exactly one query, found {len(statements)} statements")
    return statements[0]


def _check_table(
    table: exp.Table, where: str, sheet: str, earlier: set[str], later: set[str]
) -> str:
    if not isinstance(table.this, exp.Identifier):
        if isinstance(table.this, _ALLOWED_TABLE_FUNCTIONS):
            return ""
        name = table.this.sql(DIALECT).split("(")[0] if table.this else "?"
        raise InvalidSql(f"{where}: table function {name} is not allowed; read earlier sheets")
    if table.args.get("db") or table.args.get("catalog"):
        raise InvalidSql(
            f'{where}: qualified table name "{table.sql(DIALECT)}" is not allowed; '
            "refer to sheets by name"
        )
    name = table.name
    key = name.lower()
    if not _NAME_RE.match(name):
        # Quoted names and string literals that are not plain identifiers are
        # what DuckDB reads as files (replacement scans): never a sheet.
        raise InvalidSql(f'{where}: "{name}" is not a sheet; SQL sheets cannot read files')
    if _names_cte(table, key):
        return ""
    if key in earlier:
        return key
    if _defined_around(table, key):
        raise InvalidSql(
            f'{where}: CTE "{name}" is not visible here; a CTE sees only the CTEs before it '
            "(and itself only in the recursive part of WITH RECURSIVE ... UNION)"
        )
    if key == sheet.lower():
        raise InvalidSql(f'{where}: sheet "{name}" cannot read itself')
    if key in later:
        raise InvalidSql(f'{where}: sheet "{name}" comes later; a sheet reads earlier sheets only')
    raise InvalidSql(f'{where}: unknown sheet "{name}"')


def check_query(
    sql: str,
    where: str,
    sheet: str,
    earlier: Sequence[str],
    later: Sequence[str],
    variables: Collection[str] = (),
) -> tuple[exp.Expr, tuple[str, ...]]:
    """The parsed query if it is one read-only query over earlier sheets, else InvalidSql.

    `variables` are the names whose markers substitute_variables put in `sql`;
    any other marker is refused.
    """
    tree = _parse_one(sql, where)
    if not isinstance(tree, exp.Query):
        raise InvalidSql(
            f"{where}: only a read-only query (SELECT, WITH, UNION ...) is allowed, "
            f"not {_statement_name(tree)}"
        )
    earlier_keys = {s.lower() for s in earlier}
    later_keys = {s.lower() for s in later}
    reads: list[str] = []
    # Every node is visited, so no table hides from the check in an odd corner
    # of the tree (PIVOT, LATERAL, a subquery in a function argument ...).
    for node in tree.walk():
        if isinstance(node, exp.Table):
            key = _check_table(node, where, sheet, earlier_keys, later_keys)
            if key and key not in reads:
                reads.append(key)
        elif isinstance(node, exp.CTE):
            _check_cte(node, where)
        elif isinstance(node, exp.Lateral) and not isinstance(
            node.this, (exp.Query, exp.Subquery, *_ALLOWED_TABLE_FUNCTIONS)
        ):
            # LATERAL read_csv(...): a table function outside any exp.Table.
            name = node.this.sql(DIALECT).split("(")[0] if node.this else "?"
            raise InvalidSql(f"{where}: table function {name} is not allowed; read earlier sheets")
        elif isinstance(node, exp.Summarize | exp.Describe) and not isinstance(
            node.this, exp.Table | exp.Query
        ):
            # SUMMARIZE 'file.csv' reads the file with no exp.Table in sight.
            raise InvalidSql(f"{where}: {_statement_name(node)} reads earlier sheets only")
        elif isinstance(node, exp.Func) and _denied(_function_name(node)):
            raise InvalidSql(f"{where}: function {_function_name(node)} is not allowed")
        elif isinstance(node, exp.Placeholder):
            _check_placeholder(node, where, variables)
        elif isinstance(node, exp.Parameter | exp.SessionParameter):
            raise InvalidSql(f"{where}: parameters like {node.sql(DIALECT)} are not allowed")
        elif isinstance(node, exp.Into | exp.Command | exp.DDL | exp.DML):
            raise InvalidSql(f"{where}: {_statement_name(node)} is not allowed inside a query")
    return tree, tuple(reads)


def _check_placeholder(node: exp.Placeholder, where: str, variables: Collection[str]) -> None:
    text = str(node.this or "")
    # A marker the user typed himself ("$__dmv_x") names no substituted variable.
    if not text.startswith(_MARKER) or text[len(_MARKER) :] not in variables:
        raise InvalidSql(
            f'{where}: parameters like "?" or "$1" are not allowed; use ${{name}} variables'
        )


def _positional(sql: str, values: Mapping[str, Any], where: str) -> tuple[str, tuple[Any, ...]]:
    """Markers in generated SQL replaced by `?`, with the values in textual order."""
    pieces: list[str] = []
    params: list[Any] = []
    last = 0
    tokens = DuckDB().tokenize(sql)
    for before, token in itertools.pairwise(tokens):
        if (
            before.token_type == TokenType.PARAMETER
            and token.token_type == TokenType.VAR
            and token.text.startswith(_MARKER)
            and token.start == before.end + 1
        ):
            name = token.text[len(_MARKER) :]
            if name not in values:  # check_query refuses these first; never a KeyError
                raise InvalidSql(f"{where}: parameters like ${name} are not allowed")
            pieces.append(sql[last : before.start])
            pieces.append("?")
            params.append(values[name])
            last = token.end + 1
    pieces.append(sql[last:])
    return "".join(pieces), tuple(params)


def bind_sheet_sql(
    sql: str,
    *,
    where: str,
    sheet: str,
    earlier: Sequence[str],
    later: Sequence[str],
    declared: Sequence[str],
    values: Mapping[str, Any],
) -> BoundQuery:
    """Check one sheet's SQL and bind its variables; errors name `where`."""
    text, used = substitute_variables(sql, where, declared)
    for name in used:
        if name not in values:
            raise InvalidInput(
                f'{where}: variable "{name}" has no value; give one when triggering '
                "or set a default"
            )
    _require_shallow(text, where)
    try:
        tree, reads = check_query(text, where, sheet, earlier, later, used)
        generated = tree.sql(dialect=DIALECT, comments=False)
    except RecursionError:
        # sqlglot parses and generates recursively; what the bracket count above
        # cannot see (thousands of NOTs, say) still ends here, as the user's error.
        raise InvalidSql(f"{where}: the SQL is nested too deeply") from None
    final, params = _positional(generated, values, where)
    return BoundQuery(sql=final, params=params, reads=reads)


MAX_NESTING = 200
"""How deeply brackets may nest in a sheet's SQL; far beyond any written query."""


def _require_shallow(sql: str, where: str) -> None:
    """Refuse SQL whose brackets nest deeper than MAX_NESTING, before parsing it."""
    depth = deepest = 0
    for ch in sql:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_NESTING:
        raise InvalidSql(
            f"{where}: brackets nest {deepest} deep; at most {MAX_NESTING} levels are allowed"
        )


_BOUND_LIMIT = 256
# Canonical (definition, variables) -> bound sheets. Checking is a pure function
# of the two and costs milliseconds of sqlglot per sheet, so a job run again and
# again (by cron, say) is checked once per process. Failures are not kept.
_bound: collections.OrderedDict[str, dict[str, BoundQuery]] = collections.OrderedDict()


def bind_workbook(
    definition: WorkbookDefinition, given: Mapping[str, Any]
) -> dict[str, BoundQuery]:
    """Every SQL sheet of a workbook checked and bound, by sheet name."""
    key = definition.model_dump_json() + "\x00" + json.dumps(given, sort_keys=True, default=repr)
    found = _bound.get(key)
    if found is None:
        found = _bind_all(definition, resolve_variables(definition.variables, given))
        _bound[key] = found
        if len(_bound) > _BOUND_LIMIT:
            _bound.popitem(last=False)
    else:
        _bound.move_to_end(key)
    return dict(found)


def check_workbook(definition: WorkbookDefinition) -> None:
    """Check every SQL sheet and default value without running anything (when saving).

    Variables without a default pass: their value may come with the trigger.
    """
    values: dict[str, Any] = dict.fromkeys(definition.variables)
    values.update(resolve_variables(definition.variables, {}))
    _bind_all(definition, values)


def _bind_all(definition: WorkbookDefinition, values: Mapping[str, Any]) -> dict[str, BoundQuery]:
    names = [s.name for s in definition.sheets]
    bound: dict[str, BoundQuery] = {}
    for index, sheet in enumerate(definition.sheets):
        if isinstance(sheet, SqlSheet):
            bound[sheet.name] = bind_sheet_sql(
                sheet.sql,
                where=f"sheets[{index}].sql",
                sheet=sheet.name,
                earlier=names[:index],
                later=names[index + 1 :],
                declared=list(definition.variables),
                values=values,
            )
    return bound
