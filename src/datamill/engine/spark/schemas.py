"""The Spark schema of a Parquet file Datamill wrote, read from its footer on this machine.

Spark infers a Parquet file's schema with a Spark job that reads the footer,
on every read in a new session: a fixed cost per input per run. Every
dataset Datamill hands Spark is a single Parquet file in the data root or a
run's staging folder, which the worker's machine reads too, so the footer is
read here (pyarrow, a millisecond) and Spark is given the schema it would
have inferred (`read.schema(...)`, no job). Only types whose mapping is
exactly Spark's own (ParquetToSparkSchemaConverter, Spark 4 defaults) are
mapped; a file with any other type returns None and Spark infers as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pt

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType


def _spark_type(arrow: pa.DataType) -> DataType | None:
    from pyspark.sql import types as st

    simple: list[tuple[Any, DataType]] = [
        (pt.is_boolean, st.BooleanType()),
        (pt.is_int8, st.ByteType()),
        (pt.is_int16, st.ShortType()),
        (pt.is_int32, st.IntegerType()),
        (pt.is_int64, st.LongType()),
        # Parquet's unsigned integers: Spark widens them to the next signed type.
        (pt.is_uint8, st.ShortType()),
        (pt.is_uint16, st.IntegerType()),
        (pt.is_uint32, st.LongType()),
        (pt.is_uint64, st.DecimalType(20, 0)),
        (pt.is_float32, st.FloatType()),
        (pt.is_float64, st.DoubleType()),
        (pt.is_string, st.StringType()),
        (pt.is_large_string, st.StringType()),
        (pt.is_binary, st.BinaryType()),
        (pt.is_large_binary, st.BinaryType()),
        (pt.is_date32, st.DateType()),
    ]
    for test, spark in simple:
        if test(arrow):
            return spark
    if pt.is_decimal(arrow) and arrow.precision <= 38:
        return st.DecimalType(arrow.precision, arrow.scale)
    # INT64 micro/milliseconds: adjusted to UTC -> TIMESTAMP, local -> TIMESTAMP_NTZ.
    # Nanoseconds (and INT96, which pyarrow shows as nanoseconds) are left to Spark.
    if pt.is_timestamp(arrow) and arrow.unit in ("ms", "us"):
        return st.TimestampType() if arrow.tz is not None else st.TimestampNTZType()
    return None  # nested, time of day, intervals, fixed-size binary...: Spark infers


def footer_schema(path: str) -> StructType | None:
    """The schema Spark infers for the single Parquet file `path`; None: let Spark infer it."""
    from pyspark.sql import types as st

    try:
        arrow = pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return None  # not a local file (a cluster's own storage): Spark reads it
    names = [field.name.lower() for field in arrow]
    if len(set(names)) != len(names):
        return None  # Spark matches columns case-insensitively: leave clashes to it
    fields = []
    for field in arrow:
        spark = _spark_type(field.type)
        if spark is None:
            return None
        # File sources read every column as nullable, whatever the footer says.
        fields.append(st.StructField(field.name, spark, nullable=True))
    return st.StructType(fields)
