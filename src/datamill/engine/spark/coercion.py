"""Type coercion of imports on Spark: the DuckDB import's rules as Spark columns.

The output columns and their types are planned by the worker's DuckDB
(engine/duckdb/sources.py), so both engines store the same types. Here each
planned `Output` becomes a Spark column and a "fits" test. A text value is
accepted only in the forms both engines read alike (docs/engines.md,
"Imports on Spark"): each type's pattern gates Spark's `try_cast`, whose own
accepted forms are wider than DuckDB's in places (`1.5d`, `2024`, ...) and
narrower in others (`1_000`, `epoch`, ...). The patterns are Java regular
expressions, anchored with `\\z` (Java's `$` also matches before a final
newline).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from datamill.engine.duckdb.sources import Output
from datamill.errors import JobFailed

if TYPE_CHECKING:
    from pyspark.sql import Column

# Datamill column type -> Spark type. TIMESTAMP is Spark's TIMESTAMP_NTZ:
# written to Parquet without a time zone (isAdjustedToUTC=false), as DuckDB's
# TIMESTAMP is, so every engine reads it back as the same naive timestamp.
SPARK_TYPES = {
    "VARCHAR": "string",
    "BIGINT": "bigint",
    "INTEGER": "int",
    "DOUBLE": "double",
    "DECIMAL": "decimal(18,3)",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp_ntz",
}
# Types of Parquet source columns (as DuckDB describes them) Spark reads as
# the same values; other types are refused rather than stored differently.
_SOURCE_TYPES = SPARK_TYPES | {
    "SMALLINT": "smallint",
    "TINYINT": "tinyint",
    "FLOAT": "float",
    "BLOB": "binary",
}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
_INTEGERS = ("BIGINT", "INTEGER", "SMALLINT", "TINYINT")
# Typed source -> declared type pairs whose casts agree on both engines.
_TYPED_CASTS = {
    "BIGINT": _INTEGERS,
    "INTEGER": _INTEGERS,
    "DOUBLE": (*_INTEGERS, "DOUBLE", "FLOAT"),
    "DECIMAL": (*_INTEGERS, "DECIMAL"),
    "BOOLEAN": ("BOOLEAN",),
    "DATE": ("DATE", "TIMESTAMP"),
    "TIMESTAMP": ("TIMESTAMP", "DATE"),
    "VARCHAR": (*_INTEGERS, "VARCHAR", "BOOLEAN", "DATE", "TIMESTAMP"),
}

_INT = r"[+-]?[0-9]+"
_NUMBER = r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"
_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_LOOSE_DAY = r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
_TIME = r"[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?"
# Detected types: exactly DuckDB's patterns (engine/duckdb/sources.py, _PATTERNS).
_STRICT = {
    "BIGINT": _INT,
    "INTEGER": _INT,
    "DOUBLE": _NUMBER,
    "DATE": _DAY,
    "TIMESTAMP": _DAY + r"[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?",
    "BOOLEAN": "(?i)(true|false)",
}
# Declared types: the forms DuckDB's TRY_CAST and Spark's try_cast read alike.
_DECLARED = {
    "BIGINT": _INT,
    "INTEGER": _INT,
    "DOUBLE": f"{_NUMBER}|(?i)[+-]?(inf|infinity)|(?i)nan",
    "DECIMAL": _NUMBER,
    "DATE": _LOOSE_DAY,
    "TIMESTAMP": f"{_LOOSE_DAY}({_TIME})?",
    "BOOLEAN": "(?i)(true|false|t|f|1|0|yes|no|y|n)",
}


def _anchored(pattern: str) -> str:
    return f"^({pattern})\\z"


def source_type(duck_type: str, column: str) -> str:
    """The Spark type of a Parquet source column DuckDB describes as `duck_type`."""
    decimal = _DECIMAL.fullmatch(duck_type)
    if decimal:
        return f"decimal({decimal[1]},{decimal[2]})"
    found = _SOURCE_TYPES.get(duck_type)
    if found is None:
        raise JobFailed(
            f"column {column!r} has the type {duck_type}, which the Spark engine does not "
            'import the way DuckDB does; run this import with "engine": "duckdb"'
        )
    return found


def _family(duck_type: str) -> str:
    return "DECIMAL" if _DECIMAL.fullmatch(duck_type) else duck_type


def check_casts(outputs: list[Output]) -> None:
    """Refuse a declared type whose cast from a typed Parquet column differs between engines."""
    for output in outputs:
        if output.target is None or output.source.type == "VARCHAR":
            continue
        if _family(output.source.type) not in _TYPED_CASTS.get(output.target, ()):
            raise JobFailed(
                f"column {output.name!r}: the Spark engine does not turn "
                f"{output.source.type} into {output.target} the way DuckDB does; "
                'run this import with "engine": "duckdb" or declare another type'
            )


class Coercion:
    """The Spark columns of one output: its value, whether it fits, the stored column."""

    def __init__(self, output: Output, source: Column) -> None:
        self.output = output
        self.source = source

    def _value(self) -> Column:
        from pyspark.sql.connect import functions as F

        if self.output.source.type == "VARCHAR" and self.output.target not in (None, "VARCHAR"):
            return F.nullif(F.trim(self.source), F.lit(""))
        return self.source

    def _cast(self) -> Column:
        target = self.output.target
        assert target is not None
        return self._value().try_cast(SPARK_TYPES[target])

    def fits(self) -> Column | None:
        """True when the record's value can be stored (NULL counts), or None if always."""
        target = self.output.target
        if target in (None, "VARCHAR"):
            return None
        value = self._value()
        check = self._cast().isNotNull()
        if self.output.source.type == "VARCHAR":
            patterns = _STRICT if self.output.strict else _DECLARED
            check = value.rlike(_anchored(patterns[target])) & check
        return value.isNull() | check

    def select(self) -> Column:
        """The stored column, named and typed as DuckDB stores it."""
        name = self.output.name
        if self.output.target is None:
            return self.source.cast(source_type(self.output.source.type, name)).alias(name)
        return self._cast().alias(name)
