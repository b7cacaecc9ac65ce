"""Helpers shared by the engine tests: requests, runs, and a real PostgreSQL."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import sqlalchemy as sa

from datamill.domain.status import JobKind
from datamill.engine.base import PathRoots, RunRequest, RunResult
from datamill.engine.duckdb import DuckDBEngine

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"


@dataclasses.dataclass
class Area:
    """A test's folders: where sources live, where sinks may write, the staging area."""

    root: Path
    # Whether runs use the engine's long-lived shared database (isolation "worker").
    shared: bool = False

    @property
    def sources(self) -> Path:
        """The allowed source root."""
        return self.root / "sources"

    @property
    def sinks(self) -> Path:
        """The allowed sink root."""
        return self.root / "sinks"

    @property
    def staging(self) -> Path:
        """The run's staging folder (below the data root, as in production, when shared)."""
        return self.data / ".staging" / "1" if self.shared else self.root / "staging"

    @property
    def data(self) -> Path:
        """The data root (published results) of the shared database."""
        return self.root / "data"

    @property
    def outside(self) -> Path:
        """A folder outside every root."""
        return self.root / "outside"

    def request(
        self,
        kind: JobKind,
        definition: dict[str, Any],
        *,
        inputs: dict[str, str] | None = None,
        variables: dict[str, Any] | None = None,
        **extra: Any,
    ) -> RunRequest:
        """A RunRequest for this area."""
        return RunRequest(
            execution_id=1,
            kind=kind,
            definition=definition,
            inputs=inputs or {},
            variables=variables or {},
            staging_dir=str(self.staging),
            roots=PathRoots(source_roots=(str(self.sources),), sink_roots=(str(self.sinks),)),
            **({"shared_database": True, "data_root": str(self.data)} if self.shared else {})
            | extra,
        )


def make_area(tmp_path: Path, *, shared: bool = False) -> Area:
    """Fresh source, sink, data, staging and outside folders below tmp_path."""
    made = Area(tmp_path, shared)
    for folder in (made.sources, made.sinks, made.data, made.outside):
        folder.mkdir()
    return made


def run(request: RunRequest) -> tuple[RunResult, list[float]]:
    """Run a request on DuckDB; the result and every progress value reported."""
    seen: list[float] = []
    result = DuckDBEngine().run(request, seen.append)
    return result, seen


def rows(path: str | Path) -> list[dict[str, Any]]:
    """The records of a Parquet file."""
    return pq.read_table(str(path)).to_pylist()


def run_import(area: Area, source: dict[str, Any], **definition: Any) -> RunResult:
    """Run an import job of `source` and return its result."""
    result, _ = run(area.request(JobKind.IMPORT, {"source": source, **definition}))
    return result


def imported(area: Area) -> list[dict[str, Any]]:
    """The records an import staged."""
    return rows(area.staging / "data.parquet")


def pg_execute(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements on PostgreSQL in one transaction; the last one's rows."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    result: list[tuple[Any, ...]] = []
    try:
        with engine.begin() as conn:
            for statement in statements:
                cursor = conn.exec_driver_sql(statement)
                result = [tuple(r) for r in cursor] if cursor.returns_rows else []
    finally:
        engine.dispose()
    return result
