"""The versioned JSON definitions of import jobs, workbooks and export jobs.

These are Datamill's own format (the Datameer contract leaves it open); what a
client sends is validated here, and what `model_dump(by_alias=True)` returns can
be sent back unchanged.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datamill.domain.retry import MAX_RETRIES, MAX_RETRY_DELAY_SECONDS
from datamill.domain.schedule import MAX_CRON_LENGTH, cron_problem
from datamill.domain.status import JobKind

DEFINITION_VERSION = 1

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
MARKS_TABLE = "datamill_sink_marks"
"""The table in a database sink that records each run's write (engine/duckdb/exports.py)."""
_NAME_RE = re.compile(NAME_PATTERN)

# Column and variable types a definition may declare. They are the portable
# subset that DuckDB and Spark SQL both understand.
ColumnType = Literal[
    "VARCHAR", "BIGINT", "INTEGER", "DOUBLE", "DECIMAL", "BOOLEAN", "DATE", "TIMESTAMP"
]
VariableType = Literal["VARCHAR", "BIGINT", "DOUBLE", "BOOLEAN", "DATE", "TIMESTAMP"]

# Bounds on everything a user writes into a definition (docs/jobs.md, "Limits
# of a definition"). Generous, but finite: a value past them could otherwise
# overflow the database (minKeepCount beyond 2**63 broke housekeeping for
# every job) or make one definition cost everyone time and memory.
MAX_KEEP_COUNT = 1_000_000
MAX_DESCRIPTION_LENGTH = 10_000
MAX_PATH_LENGTH = 4_096
MAX_URL_LENGTH = 4_096
MAX_REFERENCE_LENGTH = 4_096
MAX_SQL_LENGTH = 200_000
MAX_SHEETS = 500
MAX_COLUMNS = 5_000
MAX_VARIABLES = 500
MAX_VALUE_LENGTH = 10_000
MIN_BIGINT = -(2**63)
MAX_BIGINT = 2**63 - 1

Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)]
# A variable's default, and a value a trigger gives it.
# A job's retry policy (domain/retry.py): unset members take the operator's defaults.
# Strict whole numbers: true, 1.5 or "2" are refused, not read as a count.
Retries = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_RETRIES,
        strict=True,
        description="How often a run whose worker died, or that failed passingly, starts again.",
    ),
]
RetryDelay = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_RETRY_DELAY_SECONDS,
        strict=True,
        alias="retryDelay",
        description="Seconds a run waits, QUEUED, before it is started again.",
    ),
]
VariableValue = (
    Annotated[str, Field(max_length=MAX_VALUE_LENGTH)]
    | Annotated[int, Field(ge=MIN_BIGINT, le=MAX_BIGINT)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)


EngineName = Literal["duckdb", "spark"]
"""The engines a job may name; the same names as DATAMILL_ENGINE."""
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# ---------------------------------------------------------------- run limits


class RunLimits(_Model):
    """Bounds on each run of this job; unset members take the operator's defaults.

    Neither may exceed the operator's maximum (refused when the job is saved).
    """

    time_seconds: int | None = Field(
        default=None,
        ge=1,
        alias="timeSeconds",
        description="Seconds one run may take once started; past them it ends in ERROR.",
    )
    output_bytes: int | None = Field(
        default=None,
        ge=1,
        alias="outputBytes",
        description="Bytes one run may stage as output; over them it ends in ERROR, unpublished.",
    )

    def exceeding(self, maxima: RunLimits) -> list[str]:
        """What goes beyond `maxima`, one message per member."""
        problems = []
        for name, alias, unit in (
            ("time_seconds", "timeSeconds", "seconds"),
            ("output_bytes", "outputBytes", "bytes"),
        ):
            value, most = getattr(self, name), getattr(maxima, name)
            if value is not None and most is not None and value > most:
                problems.append(f"limits.{alias}: at most {most} {unit} (the operator's maximum)")
        return problems


# ---------------------------------------------------------------- sources


class CsvSource(_Model):
    """Delimited text files: one path or a glob."""

    kind: Literal["csv"] = "csv"
    location: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)
    header: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"


class JsonLinesSource(_Model):
    """Newline-delimited JSON objects: one path or a glob."""

    kind: Literal["jsonl"] = "jsonl"
    location: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)


class ParquetSource(_Model):
    """Parquet files: one path or a glob."""

    kind: Literal["parquet"] = "parquet"
    location: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)


class DatabaseSource(_Model):
    """A table or a query of a database: a connection entry, or a URL the operator allows."""

    kind: Literal["database"] = "database"
    connection: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    table: str | None = None
    query: str | None = Field(default=None, max_length=MAX_SQL_LENGTH)

    @model_validator(mode="after")
    def _table_or_query(self) -> DatabaseSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        _connection_or_url(self.connection, self.url)
        return self


def _connection_or_url(connection: str | None, url: str | None) -> None:
    if (connection is None) == (url is None):
        raise ValueError("give exactly one of 'connection' or 'url'")


Source = Annotated[
    CsvSource | JsonLinesSource | ParquetSource | DatabaseSource, Field(discriminator="kind")
]


class Column(_Model):
    """One declared column of an import job's schema."""

    name: str = Field(pattern=NAME_PATTERN)
    type: ColumnType


class ImportJobDefinition(_Model):
    """An import job: read a source, optionally enforce a schema, store the records."""

    version: Literal[1] = 1
    kind: Literal["import"] = "import"
    description: Description = ""
    source: Source
    columns: list[Column] | None = Field(default=None, alias="schema", max_length=MAX_COLUMNS)
    error_mode: Literal["DROP_RECORD", "FAIL"] = Field(default="DROP_RECORD", alias="errorMode")
    min_keep_count: int = Field(default=1, ge=1, le=MAX_KEEP_COUNT, alias="minKeepCount")
    limits: RunLimits | None = None
    retries: Retries = None
    retry_delay: RetryDelay = None
    # Which engine runs it (docs/engines.md); absent: the worker's DATAMILL_ENGINE.
    engine: EngineName | None = None

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, value: list[Column] | None) -> list[Column] | None:
        if value is not None:
            _require_unique([c.name for c in value], "column")
            if not value:
                raise ValueError("a declared schema needs at least one column")
        return value


# ---------------------------------------------------------------- workbooks


class DataSheetSource(_Model):
    """Where a data sheet reads from: an import job, or a kept sheet of a workbook."""

    import_job: str | None = Field(default=None, alias="importJob", max_length=MAX_REFERENCE_LENGTH)
    workbook: str | None = Field(default=None, max_length=MAX_REFERENCE_LENGTH)
    sheet: str | None = Field(default=None, max_length=MAX_REFERENCE_LENGTH)

    @model_validator(mode="after")
    def _one_source(self) -> DataSheetSource:
        if (self.import_job is None) == (self.workbook is None):
            raise ValueError("give exactly one of 'importJob' or 'workbook'")
        if self.workbook is not None and self.sheet is None:
            raise ValueError("a workbook source needs the 'sheet' to read")
        if self.import_job is not None and self.sheet is not None:
            raise ValueError("an import job source has no 'sheet'")
        return self

    @property
    def reference(self) -> str:
        """The file reference (path, uuid or id) of the job read from."""
        return self.import_job if self.import_job is not None else str(self.workbook)


class DataSheet(_Model):
    """A sheet holding the newest data of another job."""

    kind: Literal["data"] = "data"
    name: str = Field(pattern=NAME_PATTERN)
    source: DataSheetSource
    keep: bool = False


class SqlSheet(_Model):
    """A sheet computed by a SQL query over earlier sheets."""

    kind: Literal["sql"] = "sql"
    name: str = Field(pattern=NAME_PATTERN)
    sql: str = Field(min_length=1, max_length=MAX_SQL_LENGTH)
    keep: bool = False


Sheet = Annotated[DataSheet | SqlSheet, Field(discriminator="kind")]


class Variable(_Model):
    """A workbook variable, referenced as ${name} in SQL sheets."""

    type: VariableType = "VARCHAR"
    default: VariableValue = None

    @field_validator("default", mode="before")
    @classmethod
    def _whole_numbers_fit(cls, value: Any) -> Any:
        return check_whole_number(value)


class Triggering(_Model):
    """When a workbook runs by itself."""

    mode: Literal["MANUAL", "DATA_DRIVEN", "SCHEDULED"] = "MANUAL"
    cron: str | None = Field(default=None, max_length=MAX_CRON_LENGTH)

    @model_validator(mode="after")
    def _cron_for_schedule(self) -> Triggering:
        if self.mode == "SCHEDULED" and not self.cron:
            raise ValueError("a SCHEDULED workbook needs a 'cron' expression")
        if self.mode != "SCHEDULED" and self.cron:
            raise ValueError("'cron' is only for mode SCHEDULED")
        problem = cron_problem(self.cron) if self.cron else None
        if problem is not None:
            raise ValueError(f"cron: {problem}")
        return self


class WorkbookDefinition(_Model):
    """A workbook: variables and sheets; kept sheets become the run's data."""

    version: Literal[1] = 1
    kind: Literal["workbook"] = "workbook"
    description: Description = ""
    triggering: Triggering = Triggering()
    variables: dict[str, Variable] = Field(default={}, max_length=MAX_VARIABLES)
    sheets: list[Sheet] = Field(min_length=1, max_length=MAX_SHEETS)
    min_keep_count: int = Field(default=1, ge=1, le=MAX_KEEP_COUNT, alias="minKeepCount")
    limits: RunLimits | None = None
    retries: Retries = None
    retry_delay: RetryDelay = None
    # Which engine runs it (docs/engines.md); absent: the worker's DATAMILL_ENGINE.
    engine: EngineName | None = None

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, value: dict[str, Variable]) -> dict[str, Variable]:
        for name in value:
            if not _NAME_RE.match(name):
                raise ValueError(f"variable name {name!r} is not a plain identifier")
        return value

    @model_validator(mode="after")
    def _sheets_make_sense(self) -> WorkbookDefinition:
        _require_unique([s.name.lower() for s in self.sheets], "sheet")
        if not any(s.keep for s in self.sheets):
            raise ValueError("at least one sheet needs 'keep': true")
        return self

    def kept_sheets(self) -> list[str]:
        """Names of the sheets stored as the run's data, in definition order."""
        return [s.name for s in self.sheets if s.keep]


# ---------------------------------------------------------------- exports


class FileSink(_Model):
    """A file written whole: CSV, Parquet or JSON lines."""

    kind: Literal["csv", "parquet", "jsonl"]
    location: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)
    header: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class DatabaseSink(_Model):
    """A database table: a connection entry, or a URL the operator allows."""

    kind: Literal["database"] = "database"
    connection: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_LENGTH)
    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    table: str = Field(pattern=NAME_PATTERN)
    mode: Literal["replace", "append"] = "replace"
    # Whether the write also records a row in the target's marker table, in its
    # own transaction: what lets a run whose worker died be retried without
    # writing twice (docs/decisions.md, "Crashed runs finish anyway").
    # Unset means true (left out of stored documents that never set it).
    marker: bool | None = Field(
        default=None,
        description=(
            "Record each write in the table datamill_sink_marks of the target database,"
            " in the write's transaction (default); false: a run lost mid-export is not retried."
        ),
    )

    @property
    def marks_writes(self) -> bool:
        """Whether writes record a marker row (the default)."""
        return self.marker is not False

    @field_validator("table")
    @classmethod
    def _not_the_marker_table(cls, table: str) -> str:
        # Writing Datamill's marker table (attack review): rows appended there
        # with another run's key (installation:execution id, both guessable)
        # make that run's export find "already written" and write nothing;
        # replacing it drops the markers that keep retries from writing twice.
        if table.lower() == MARKS_TABLE:
            raise ValueError(f"{MARKS_TABLE!r} is Datamill's own table; choose another name")
        return table

    @model_validator(mode="after")
    def _connection(self) -> DatabaseSink:
        _connection_or_url(self.connection, self.url)
        return self


Sink = Annotated[FileSink | DatabaseSink, Field(discriminator="kind")]


class ExportJobDefinition(_Model):
    """An export job: write one kept sheet (or an import job's data) to a sink."""

    version: Literal[1] = 1
    kind: Literal["export"] = "export"
    description: Description = ""
    source: DataSheetSource
    sink: Sink
    limits: RunLimits | None = None
    retries: Retries = None
    retry_delay: RetryDelay = None
    # Which engine runs it (docs/engines.md); absent: the worker's DATAMILL_ENGINE.
    engine: EngineName | None = None


JobDefinition = ImportJobDefinition | WorkbookDefinition | ExportJobDefinition

_MODELS: dict[JobKind, type[ImportJobDefinition | WorkbookDefinition | ExportJobDefinition]] = {
    JobKind.IMPORT: ImportJobDefinition,
    JobKind.WORKBOOK: WorkbookDefinition,
    JobKind.EXPORT: ExportJobDefinition,
}


def definition_model(kind: JobKind) -> type[JobDefinition]:
    """The pydantic model for one job kind."""
    return _MODELS[kind]


def dump_definition(definition: JobDefinition) -> dict[str, Any]:
    """The JSON form of a definition, as stored and as returned to clients."""
    return definition.model_dump(mode="json", by_alias=True, exclude_none=True)


def upstream_references(definition: JobDefinition) -> list[str]:
    """File references of the jobs whose data this definition reads."""
    if isinstance(definition, WorkbookDefinition):
        return [s.source.reference for s in definition.sheets if isinstance(s, DataSheet)]
    if isinstance(definition, ExportJobDefinition):
        return [definition.source.reference]
    return []


def check_whole_number(value: Any) -> Any:
    """Refuse a whole number past 64 bits, before pydantic turns it into a float."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not MIN_BIGINT <= value <= MAX_BIGINT
    ):
        raise ValueError("a whole number must lie within -2**63 .. 2**63-1")
    return value


def _require_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ValueError(f"duplicate {what} name {name!r}")
        seen.add(name.lower())
